"""Decoder specs: short strings naming one decoder on the command line, and what each runs on a task.

    SPEC    := METHOD [":" ARGUMENTS]
    METHOD  := "dlm" | "codila" | "codila-top1"      the decoder alone, on the harness's protocol
             | "preset"                             the editor's whole pipeline: ARGUMENTS = NAME [",", SETTING...]
             | "ar"                                 a plain causal LM from the prefix: ARGUMENTS = [model=PATH]
    SETTING := KEY "=" VALUE

Two kinds, because they answer two questions:
- "codila:b=4" measures the DECODER: it fills exactly the masked positions the harness's --length gives
  (the reference middle's length with "oracle"), from the context the harness keeps under --max-context
  (decoding.context.split_context, the one context policy). KEY is any DecodeConfig field by name
  (scope=10, eos_penalty=2, ...) or a short key: k = tokens_per_step, conf = confidence, b = block_size,
  budget_ms = deadline_ms, kv = kv_cache. "codila"/"codila-top1" are static (one block of B tokens per
  iteration) unless tau= or mode= is given. max_new_tokens comes from --length.
- "preset:balanced" measures the PRODUCT: lsp_server.pipeline.complete, the function the language server
  runs for an inline completion, with the editor's settings (ServerSettings(preset=NAME) and the SETTINGs on
  top: any editor setting that shapes the middle, by its snake_case name, e.g. max_new_tokens=32,
  context_tokens=1024, syntax_check=off, block_size=8). Its middle is what the editor would show for the
  task's document (prompt + suffix) with the cursor at the gap: windowed, tidied and syntax-checked as
  there. --length, --max-context and --seed do not apply: the settings decide (maxNewTokens 64,
  contextTokens 512 unless set).

Values are read by the settings table's rows (decoding/config.py: Setting.parse); booleans read true/false,
optional numbers none. To add a method, write a class with `spec`, `describe()` and `infill()` like the two
below and add its parser to PARSERS.

    dlm:k=1                 the DLM alone, 1 token per step (Dream's quality setting)
    dlm:conf=0.9            the DLM alone, every position with top probability >= 0.9 per step
    codila:b=4              CoDiLA, static, B = 4
    codila:b=4,tau=0.3      CoDiLA, dynamic, B = 4, entropy threshold 0.3 nats
    codila-top1:b=4         ablation: the AR sees the argmax tokens only
    codila:b=4,budget_ms=300,kv=dual
    preset:balanced         what the editor runs at its default settings
    preset:fast,max_new_tokens=32,syntax_check=off
    ar                      the executor's base as a plain left-to-right completer (decoding.complete)
    ar:model=base:smollm2-135m
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol
from urllib.parse import quote

from lsprotocol import types
from pygls.workspace import TextDocument

import decoding
from decoding.config import DECODE_SETTINGS, METHODS, DecodeConfig, Setting
from decoding.context import split_context
from lsp_server import pipeline
from lsp_server.settings import MODEL_FIELDS, SETTINGS, ServerSettings
from lsp_server.text import Context, context_at

from benchmarks.tasks import Task

ALIASES = {"k": "tokens_per_step", "conf": "confidence", "b": "block_size", "budget_ms": "deadline_ms",
           "kv": "kv_cache"}
DECODE_ROWS = {row.name: row for row in DECODE_SETTINGS if row.name not in ("method", "max_new_tokens")}
# editor settings that do not shape the middle (models come from --dlm/--ar; debounce, logs)
PRESET_ROWS = {row.name: row for row in SETTINGS
               if row.name not in (*MODEL_FIELDS, "preset", "debounce_ms", "log_level")}
PRESET_ALIASES = {"b": "block_size", "kv": "kv_cache", "budget_ms": "latency_budget_ms"}


@dataclass(frozen=True)
class Middle:
    """What a decoder wrote for one task: the text, the decoder's stats (DecodeStats.as_dict(); None when
    nothing was decoded), the masked positions it had, and the wall time of the call."""

    text: str
    stats: dict[str, Any] | None
    max_new_tokens: int
    latency_ms: float


class Decoder(Protocol):
    """One decoder of the benchmark: `spec` as the user wrote it, `describe()` for the report, `infill()`."""

    spec: str
    uses_length: bool  # the harness's --length decides max_new_tokens

    def describe(self) -> dict[str, Any]: ...

    def infill(self, models: Any, task: Task, max_new_tokens: int, max_context: int) -> Middle: ...


@dataclass(frozen=True)
class DecoderSpec:
    """The decoder alone: `config` (max_new_tokens set per task), the harness's context policy."""

    spec: str
    config: DecodeConfig
    uses_length = True

    def describe(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def infill(self, models: Any, task: Task, max_new_tokens: int, max_context: int) -> Middle:
        """decoding.infill on the task's prompt and suffix: max_new_tokens masks, the context that fits
        max_context (prefix + middle + suffix tokens) by decoding.context.split_context."""
        if max_new_tokens >= max_context:
            raise ValueError(f"{max_new_tokens} new tokens leave no room in a {max_context}-token context; "
                             "use a smaller --length or a larger --max-context")
        encode = models.dlm.tokenizer.encode
        keep_prefix, keep_suffix = split_context(len(encode(task.prompt, add_special_tokens=False)),
                                                 len(encode(task.suffix, add_special_tokens=False)),
                                                 max_context - max_new_tokens)
        started = time.perf_counter()
        result = decoding.infill(models, task.prompt, task.suffix, self.config.replace(max_new_tokens=max_new_tokens),
                                 max_prefix_tokens=keep_prefix, max_suffix_tokens=keep_suffix)
        return Middle(result.text, result.stats.as_dict(), max_new_tokens, (time.perf_counter() - started) * 1000)


@dataclass(frozen=True)
class PresetSpec:
    """The editor's pipeline (lsp_server.pipeline.complete) with `settings`, on the task as a document."""

    spec: str
    settings: ServerSettings
    uses_length = False

    def describe(self) -> dict[str, Any]:
        return {"pipeline": "lsp_server.pipeline.complete", "settings": self.settings.to_lsp(),
                **dataclasses.asdict(self.settings.decode_config())}

    def infill(self, models: Any, task: Task, max_new_tokens: int, max_context: int) -> Middle:
        """The inline completion the server gives at the gap of the task's document (the arguments the
        harness passes for the decoder alone do not apply)."""
        started = time.perf_counter()
        completion = pipeline.complete(models, task_context(task), self.settings)
        return Middle(completion.text, completion.stats, self.settings.max_new_tokens,
                      (time.perf_counter() - started) * 1000)


@dataclass(frozen=True)
class ArSpec:
    """The plain left-to-right baseline (decoding.complete): a causal LM completing from the prefix alone, with
    token healing, stopping as an editor tool does. `model`: a folder, base:NAME or .gguf; None = the executor's
    base (the model the AR executor was fine-tuned from, before its adapter), so each table shows what the
    executor's own base gives a user without the DLM. Like the editor (and unlike the decoder specs) it does not
    get the reference's length: up to `max_new_tokens` tokens from `context_tokens` of prefix, the server's
    defaults, so it compares with preset: rows on equal terms."""

    spec: str
    model: str | None = None
    max_new_tokens: int = ServerSettings.max_new_tokens
    context_tokens: int = ServerSettings.context_tokens
    token_healing: bool = True
    uses_length = False

    def describe(self) -> dict[str, Any]:
        return {"method": "ar", "model": self.model or "the executor's base", "decoding": "greedy",
                "token_healing": self.token_healing, "max_new_tokens": self.max_new_tokens,
                "context_tokens": self.context_tokens}

    def infill(self, models: Any, task: Task, max_new_tokens: int, max_context: int) -> Middle:
        """Up to self.max_new_tokens, from the last context_tokens prefix tokens (the suffix only says where to
        stop: the model cannot read it); the harness's length and context do not apply, as for preset: rows."""
        from decoding.complete import complete, load_plain_ar

        ar = models.ar
        model, tokenizer = load_plain_ar(self.model or ar.model.name_or_path, ar.device, ar.model.dtype)
        started = time.perf_counter()
        result = complete(model, tokenizer, task.prompt, task.suffix, self.max_new_tokens,
                          max_prefix_tokens=self.context_tokens, token_healing=self.token_healing)
        return Middle(result.text, result.stats.as_dict(), self.max_new_tokens,
                      (time.perf_counter() - started) * 1000)


def task_context(task: Task) -> Context:
    """The task as the editor sees it: a document prompt + suffix, the cursor at the gap (UTF-16), split
    by the server's own lsp_server.text.context_at."""
    document = TextDocument(f"file:///benchmark/{quote(task.task_id, safe='')}", task.prompt + task.suffix,
                            version=1, language_id=task.language)
    lines = task.prompt.split("\n")
    cursor = types.Position(line=len(lines) - 1, character=len(lines[-1].encode("utf-16-le")) // 2)
    return context_at(document, cursor)


def parse_spec(spec: str, base: DecodeConfig | None = None) -> Decoder:
    """The decoder `spec` names; DecodeConfig settings go on top of `base` (DecodeConfig() by default).

    Raises ValueError naming the spec, the bad part and the valid keys.
    """
    method, _, arguments = spec.strip().partition(":")
    if method not in PARSERS:
        raise ValueError(f"decoder spec {spec!r}: method must be one of {', '.join(PARSERS)}; got {method!r}")
    try:
        return PARSERS[method](spec.strip(), method, arguments, base or DecodeConfig())
    except ValueError as err:
        raise ValueError(f"decoder spec {spec!r}: {err}") from None


def _decoder_spec(spec: str, method: str, arguments: str, base: DecodeConfig) -> DecoderSpec:
    changes: dict[str, Any] = {"method": method, **_settings(arguments, DECODE_ROWS, ALIASES)}
    if method != "dlm" and "mode" not in changes:
        changes["mode"] = "dynamic" if "tau" in changes else "static"
    return DecoderSpec(spec, base.replace(**changes))


def _preset_spec(spec: str, method: str, arguments: str, base: DecodeConfig) -> PresetSpec:
    name, _, rest = arguments.partition(",")
    if not name.strip() or "=" in name:
        raise ValueError("preset: needs a preset name first: preset:NAME[,KEY=VALUE...]")
    return PresetSpec(spec, ServerSettings(preset=name.strip(), **_settings(rest, PRESET_ROWS, PRESET_ALIASES)))


def _ar_spec(spec: str, method: str, arguments: str, base: DecodeConfig) -> ArSpec:
    values: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in arguments.split(","))):
        key, eq, value = (part.strip() for part in item.partition("="))
        if key not in AR_KEYS or not eq or not value or key in values:
            raise ValueError(f"ar takes model=PATH (default: the executor's base), max_new_tokens=N, "
                             f"context_tokens=N (default: the editor's) and token_healing=BOOL, each once; "
                             f"got {item!r}")
        if key == "model":
            values[key] = value
        else:
            values[key] = _bool(key, value) if key == "token_healing" else _positive_int(key, value)
    return ArSpec(spec, **values)


AR_KEYS = ("model", "max_new_tokens", "context_tokens", "token_healing")


def _bool(key: str, value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise ValueError(f"ar: {key} must be true or false; got {value!r}")
    return value.lower() == "true"


def _positive_int(key: str, value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"ar: {key} must be a positive integer; got {value!r}")
    return int(value)


PARSERS: dict[str, Callable[[str, str, str, DecodeConfig], Decoder]] = {
    **{method: _decoder_spec for method in METHODS},
    "preset": _preset_spec,
    "ar": _ar_spec,
}


def _settings(text: str, rows: dict[str, Setting], aliases: dict[str, str]) -> dict[str, Any]:
    """"KEY=VALUE,..." -> {field name: value}, each value read and checked by its row."""
    values: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, eq, value = (part.strip() for part in item.partition("="))
        if not eq or not value:
            raise ValueError(f"{item!r} is not KEY=VALUE")
        name = aliases.get(key, key)
        if name == "max_new_tokens" and name not in rows:
            raise ValueError(f"{key} is set for every task by --length, not in a spec")
        if name not in rows:
            raise ValueError(f"unknown key {key!r}; valid keys: {', '.join([*aliases, *rows])}")
        if name in values:
            raise ValueError(f"{key!r} given twice")
        values[name] = rows[name].parse(value)
    return values
