"""Decoder specs: short strings naming one decoding configuration on the command line.

    SPEC    := METHOD [":" SETTING ("," SETTING)*]
    METHOD  := "dlm" | "codila" | "codila-top1"
    SETTING := KEY "=" VALUE

Short keys: k = tokens_per_step, conf = confidence, b = block_size, budget_ms = deadline_ms, kv = kv_cache;
any DecodeConfig field is also accepted under its own name (scope=10, eos_penalty=2, temperature=0.2, ...).
Booleans read true/false, optional numbers read none. Defaults that differ from DecodeConfig's:
"codila"/"codila-top1" are static (one block of B tokens per iteration) unless tau= or mode= is given:
`codila:b=4` is static, `codila:b=4,tau=0.3` dynamic. max_new_tokens comes from the harness's --length and
cannot be set in a spec.

    dlm:k=1                 the DLM alone, 1 token per step (Dream's quality setting)
    dlm:k=4                 the DLM alone, 4 tokens per step
    dlm:conf=0.9            the DLM alone, every position with top probability >= 0.9 per step
    codila:b=4              CoDiLA, static, B = 4
    codila:b=4,tau=0.3      CoDiLA, dynamic, B = 4, entropy threshold 0.3 nats
    codila-top1:b=4         ablation: the AR sees the argmax tokens only
    codila:b=4,budget_ms=300,kv=dual
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from decoding.config import METHODS, DecodeConfig

ALIASES = {"k": "tokens_per_step", "conf": "confidence", "b": "block_size", "budget_ms": "deadline_ms",
           "kv": "kv_cache"}
FIELDS = {f.name: str(f.type) for f in dataclasses.fields(DecodeConfig)}
HARNESS_OWNED = ("max_new_tokens",)  # set per task by --length


@dataclass(frozen=True)
class DecoderSpec:
    """One decoder to benchmark: the string the user wrote and the config it stands for (max_new_tokens
    still to be set per task)."""

    spec: str
    config: DecodeConfig


def valid_keys() -> list[str]:
    return [*ALIASES, *(name for name in FIELDS if name not in ("method", *HARNESS_OWNED))]


def parse_spec(spec: str, base: DecodeConfig | None = None) -> DecoderSpec:
    """DecoderSpec for `spec`, settings applied on top of `base` (DecodeConfig() by default).

    Raises ValueError naming the spec, the bad part and the valid keys.
    """
    base = base or DecodeConfig()
    method, _, settings = spec.strip().partition(":")
    if method not in METHODS:
        raise ValueError(f"decoder spec {spec!r}: method must be one of {', '.join(METHODS)}; got {method!r}")
    changes: dict[str, object] = {"method": method}
    for item in filter(None, (part.strip() for part in settings.split(","))) if settings else ():
        key, eq, text = item.partition("=")
        key = key.strip()
        name = ALIASES.get(key, key)
        if not eq or not text.strip():
            raise ValueError(f"decoder spec {spec!r}: {item!r} is not KEY=VALUE")
        if name not in FIELDS or name == "method":
            raise ValueError(f"decoder spec {spec!r}: unknown key {key!r}; valid keys: {', '.join(valid_keys())}")
        if name in HARNESS_OWNED:
            raise ValueError(f"decoder spec {spec!r}: {key} is set for every task by --length, not in a spec")
        if name in changes:
            raise ValueError(f"decoder spec {spec!r}: {key!r} given twice")
        changes[name] = _convert(spec, key, FIELDS[name], text.strip())
    if method != "dlm" and "mode" not in changes:
        changes["mode"] = "dynamic" if "tau" in changes else "static"
    try:
        config = base.replace(**changes)
    except ValueError as err:
        raise ValueError(f"decoder spec {spec!r}: {err}") from None
    return DecoderSpec(spec.strip(), config)


def _convert(spec: str, key: str, type_name: str, text: str) -> object:
    """VALUE text -> the field's type (type_name is the dataclass annotation, e.g. 'float | None')."""
    if "None" in type_name and text.lower() == "none":
        return None
    try:
        if type_name.startswith("bool"):
            truth = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
            return truth[text.lower()]
        if type_name.startswith("int"):
            return int(text)
        if type_name.startswith("float"):
            return float(text)
    except (KeyError, ValueError):
        kind = type_name.split(" ")[0]
        raise ValueError(f"decoder spec {spec!r}: {key}={text!r} is not a valid {kind}") from None
    return text
