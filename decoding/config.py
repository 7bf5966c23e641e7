"""Decoding settings: one frozen, validated dataclass, the named presets users pick from, and the table of
settings that every interface is generated from.

    Setting                        one knob: name, type, default, range or choices, help
    DECODE_SETTINGS                a row per DecodeConfig field (validation, `python -m decoding` flags,
                                   decoder-spec keys, the language server's decoding settings)
    MODEL_SETTINGS, PRESET_SETTING what loads the models, which preset (the CLIs and the server)

The language server builds its settings (lsp_server/settings.py) from these rows; tests check the editors'
schemas (editors/vscode/package.json, the Neovim plugin) and README against them.

Nothing here imports torch: `import decoding.config` is cheap (the server validates settings at once).
The decode loop reads a DecodeConfig once to choose its strategy; nothing here is tested inside the loop.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

METHODS = ("auto", "verified", "ar", "codila", "codila-top1", "dlm")
MODES = ("static", "dynamic")
KV_CACHES = ("none", "prefix", "dual")
DTYPES = ("auto", "float32", "bfloat16", "float16", "int8")
AR_BACKENDS = ("torch",)  # the vLLM backend was removed: docs/real-pair.md, "Why there is no vLLM backend"
DEFAULT_TAU = 0.5  # dynamic threshold for an AR that does not name its own (`codila_tau`)
_KINDS = {bool: "boolean", int: "integer", float: "number", str: "string"}
_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


@dataclass(frozen=True)
class Setting:
    """One row of the settings table: everything an interface needs to know about one knob.

    name:     snake_case; the dataclass field, the flag --name-with-dashes (unless `flag` says otherwise),
              the editor's key nameInCamelCase.
    kind:     bool | int | float | str (a float setting accepts whole numbers too).
    default:  the value when nobody sets it.
    help:     one line: what it does and what special values (none, 0) mean.
    choices:  the allowed strings; low / high: the inclusive range of a number;
    nullable: None is a value (its meaning is in `help`); pattern: a regular expression a string must
              contain (searched, as JSON schema's "pattern" is), pattern_message what it means in words.
    flag:     the command-line flag when it is not --name-with-dashes.
    """

    name: str
    kind: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    nullable: bool = False
    pattern: str | None = None
    pattern_message: str = ""
    flag: str | None = None

    @property
    def option(self) -> str:
        """The command-line flag."""
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def editor_name(self) -> str:
        """The key in the editors' "codila" settings section (camelCase)."""
        head, *rest = self.name.split("_")
        return head + "".join(part.title() for part in rest)

    def but(self, **changes: Any) -> "Setting":
        """This row with some attributes changed (the server's view of a decoding knob, say)."""
        return dataclasses.replace(self, **changes)

    def check(self, value: Any) -> None:
        """Raise ValueError("<name> must ...; got <value>") unless `value` is valid for this setting."""
        if value is None and self.nullable:
            return
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{self.name} must be true or false; got {value!r}")
            return
        if self.kind is str:
            if not isinstance(value, str):
                raise ValueError(f"{self.name} must be a string; got {value!r}")
            if self.choices and value not in self.choices:
                raise ValueError(f"{self.name} must be one of {', '.join(self.choices)}; got {value!r}")
            if self.pattern is not None and not re.search(self.pattern, value):
                raise ValueError(f"{self.name} must be {self.pattern_message or 'like ' + self.pattern}; got {value!r}")
            return
        numbers = int if self.kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, numbers):
            noun = "a whole number" if self.kind is int else "a number"
            raise ValueError(f"{self.name} must be {noun}; got {value!r}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ValueError(f"{self.name} must be between {self.low:g} and {self.high:g}; got {value!r}")

    def parse(self, text: str) -> Any:
        """Command-line text -> a valid value ("none" for None where allowed). Raises ValueError."""
        text = text.strip()
        if self.nullable and text.lower() == "none" and "none" not in self.choices:
            return None
        try:
            if self.kind is bool:
                value: Any = _BOOLEANS[text.lower()]
            else:
                value = self.kind(text)
        except (KeyError, ValueError):
            raise ValueError(f"{self.name}={text!r} is not a valid {self.json_type}") from None
        self.check(value)
        return value

    @property
    def json_type(self) -> str:
        """"boolean", "integer", "number" or "string"."""
        return _KINDS[self.kind]

    def json_schema(self) -> dict[str, Any]:
        """The JSON-schema subset editors describe settings with (VS Code's package.json)."""
        kind = self.json_type
        schema: dict[str, Any] = {"type": [kind, "null"] if self.nullable else kind, "default": self.default}
        if self.choices:
            schema["enum"] = [*self.choices, *([None] if self.nullable else [])]
        if self.low is not None:
            schema["minimum"] = self.low
        if self.high is not None:
            schema["maximum"] = self.high
        if self.pattern is not None:
            schema["pattern"] = self.pattern
        return schema


DECODE_SETTINGS: tuple[Setting, ...] = (
    Setting("method", str, "auto", "codila (the AR decodes blocks from soft DLM marginals), codila-top1 "
            "(ablation: the AR sees argmax tokens only), dlm (baseline: the DLM alone); for a causal-context DLM "
            "(the default model): verified (the base's greedy output, block_size tokens drafted per pass and "
            "checked in the same pass), ar (the base alone, one token per pass), and codila / codila-top1 (with "
            "its executor) and dlm unverified behind the base's frontier token; auto = verified for a "
            "causal-context DLM, else codila", choices=METHODS),
    Setting("block_size", int, 4, "B, tokens per AR block (2, 4 or 8 in the paper); method verified: tokens "
            "drafted per pass", low=1, high=16),
    Setting("mode", str, "dynamic", "static: one whole block per iteration; dynamic: the longest block prefix "
            "with mean AR entropy below tau (a single token falls back to the DLM)", choices=MODES),
    Setting("tau", float, None, "dynamic threshold on mean AR entropy per token, in nats (higher = more tokens "
            f"per step); none = the AR's own codila_tau, else {DEFAULT_TAU}", low=0, high=100, nullable=True),
    Setting("scope", int, 10, "candidate blocks per iteration, nearest the frontier (paper: 10; 1 = left to "
            "right, block by block)", low=1, high=10_000),
    Setting("tokens_per_step", int, 1, "method dlm: commit the k lowest-entropy masked positions per step "
            "(1 = Dream's own)", low=1, high=10_000),
    Setting("confidence", float, None, "method dlm: commit every position whose top probability is at least "
            "this; none = use tokens_per_step", low=0, high=1, nullable=True),
    Setting("max_new_tokens", int, 64, "N, masked positions between prefix and suffix (a budget: unused ones "
            "become EOS)", low=1, high=8192),
    Setting("temperature", float, 0.0, "DLM sampling temperature (0 = argmax)", low=0, high=100),
    Setting("top_p", float, 1.0, "DLM nucleus sampling mass (1 = off)", low=1e-6, high=1),
    Setting("ar_temperature", float, 0.1, "AR executor sampling temperature (paper 0.1; 0 = argmax)", low=0,
            high=100),
    Setting("ar_top_p", float, 0.8, "AR executor nucleus mass (paper 0.8)", low=1e-6, high=1),
    Setting("eos_penalty", float, 0.0, "subtracted from the DLM's EOS logit (0 = off); counters EOS collapse",
            low=0, high=1e4),
    Setting("eos_casting", bool, True, "after the first committed EOS every later position becomes EOS"),
    Setting("eos_min_prob", float, 0.5, "a position becomes EOS only when EOS has at least this probability "
            "there (0 = EOS competes as an ordinary token)", low=0, high=1),
    Setting("eos_frontier", bool, True, "EOS may be committed only at the first masked position (off: anywhere)"),
    Setting("deadline_ms", float, None, "latency budget in ms: parallelism rises so the decode ends in time; "
            "none = no budget", low=1, high=3_600_000, nullable=True),
    Setting("kv_cache", str, "none", "none: a full DLM pass every iteration; prefix / dual: approximate cache "
            "of the prefix (and suffix) keys and values", choices=KV_CACHES),
    Setting("cache_refresh", int, 4, "iterations between full DLM passes with a kv cache (1 = exact)", low=1,
            high=10_000),
    Setting("token_healing", bool, True, "take the prefix's last token off the canvas; the middle must start "
            "with its text"),
    Setting("read_suffix", bool, True, "methods ar / verified: the model reads the suffix through its FIM "
            "tokens (false: it completes the prefix alone; the suffix still says where to stop)"),
    Setting("seed", int, 0, "seed of every sampler in one decode (same seed, same output)", low=0, high=2**63 - 1),
)

MODEL_SETTINGS: tuple[Setting, ...] = (
    Setting("dlm_path", str, None, "DLM folder (none = the shipped default model)", nullable=True, pattern=r"\S",
            pattern_message="a folder path or null (the default model)", flag="--dlm"),
    Setting("ar_path", str, None, "AR executor folder (none = the shipped default model)", nullable=True,
            pattern=r"\S", pattern_message="a folder path or null (the default model)", flag="--ar"),
    Setting("device", str, "auto", "auto = cuda when available, else cpu; or cpu, cuda, cuda:N",
            pattern=r"^(auto|cpu|cuda|cuda:[0-9]+)$", pattern_message="auto, cpu, cuda or cuda:N"),
    Setting("dtype", str, "auto", "auto = bfloat16 on cuda; on cpu int8 where the model's config.json asks for it "
            "(the default model, without an executor), else the checkpoint's own, float32 when it names none; int8: "
            "the Linear weights in int8, a causal-context DLM on cpu only (3x faster passes, half the memory)",
            choices=DTYPES),
    Setting("ar_backend", str, "torch", "the AR executor's runtime: torch (transformers); the vLLM backend was "
            "removed (docs/real-pair.md)", choices=AR_BACKENDS),
    Setting("trust_remote_code", bool, False, "allow the checkpoints' own Python code (off: Dream loads as "
            "Qwen2 without it)"),
)


@dataclass(frozen=True)
class DecodeConfig:
    """How one infill/completion is decoded.

    method:
        "codila"       - AR executor decodes blocks jointly from soft DLM marginals (the method).
        "codila-top1"  - ablation: the AR sees the embedding of each position's argmax token only.
        "dlm"          - baseline: the DLM alone commits tokens by its own confidence.
        "verified"     - a causal-context DLM (decoding.fim): the base's greedy middle, `block_size` tokens
                         drafted by the DLM adapter per pass and verified by the base in the same pass.
        "ar"           - a causal-context DLM's base alone, greedy, one token per pass (the plain FIM
                         completer a user would run instead; the output verified decoding reproduces).
        "auto"         - verified for a causal-context DLM, codila for a bidirectional one (the presets).
    On a causal-context DLM codila, codila-top1 and dlm decode the block at the frontier from the base's row and
    the drafts, unverified (decoding.fim_codila; codila needs the executor slice of the same base).
    block_size:      B, tokens per AR block (codila methods). 2, 4 or 8 in the paper; any 1..16 accepted.
    mode:            "static" commits exactly one block (B tokens) per iteration;
                     "dynamic" commits the longest block prefix whose mean AR entropy is below `tau`.
    tau:             dynamic threshold on mean per-token entropy, in nats. None = the AR's own (entropy
                     scales differ between models: `codila_tau` in its config.json, chosen by whoever
                     trained it; DEFAULT_TAU when it has none).
    scope:           candidate blocks considered per iteration, nearest the decoding frontier (paper: 10).
    tokens_per_step: k for method "dlm": the k lowest-entropy masked positions are committed per step
                     (k = 1 is Dream's own quality setting). Ignored when `confidence` is set.
    confidence:      method "dlm" threshold mode: commit every masked position whose top probability is
                     at least this (and at least the single most confident one). None = use tokens_per_step.
    max_new_tokens:  N, the number of masked positions between prefix and suffix (a budget: unused
                     positions become EOS and are dropped from the text).
    temperature, top_p:        sampling of the tokens the DLM commits itself (method "dlm", the dynamic
                               k = 1 fallback, the deadline flush); temperature 0 = argmax. The AR always
                               reads the DLM's temperature-1 marginals, as it was trained to.
    ar_temperature, ar_top_p:  sampling inside the AR executor (paper: 0.1 and 0.8).
    eos_penalty:     subtracted from the DLM's EOS logit before the softmax (0 = off). Counters EOS collapse.
    eos_casting:     once an EOS is committed, every later masked position becomes EOS (Dream-Coder).
    eos_min_prob:    a position becomes EOS only when the model (DLM or AR, whichever picks its token)
                     gives EOS at least this probability; below it EOS is banned from the choice
                     (decoding.sampling.eos_rule). 0 = EOS competes as an ordinary token.
    eos_frontier:    EOS may be committed only at the first masked position (for CoDiLA: inside the first
                     block with a masked position), where everything to its left is decided; elsewhere
                     positions get tokens and EOS casting clears them if the middle ends before. Off: EOS
                     anywhere, which lets a chain of EOS grow from the end of the budget into the middle.
    deadline_ms:     latency budget; the loop raises parallelism so the decode ends within it. None = off.
    kv_cache:        "none" recomputes the whole canvas every iteration; "prefix" caches the prefix's keys
                     and values, "dual" also the suffix's (approximate: refreshed every `cache_refresh`
                     iterations). Large speedups on CPU, where the prefix dominates each forward pass.
    cache_refresh:   iterations between full DLM forward passes when kv_cache is not "none".
    token_healing:   `infill` takes the prefix's last token off the canvas and makes the middle start
                     with its text (decoding.healing): a prefix cut mid-token, or at a newline the BPE
                     would have merged with the next line's indentation, is written as the model knows it.
    read_suffix:     methods ar / verified: the suffix goes into the FIM prompt (False: prefix completion).
    seed:            seeds every sampler used by one decode; the same seed gives the same output.
    """

    method: str = "auto"
    block_size: int = 4
    mode: str = "dynamic"
    tau: float | None = None
    scope: int = 10
    tokens_per_step: int = 1
    confidence: float | None = None
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    ar_temperature: float = 0.1
    ar_top_p: float = 0.8
    eos_penalty: float = 0.0
    eos_casting: bool = True
    eos_min_prob: float = 0.5
    eos_frontier: bool = True
    deadline_ms: float | None = None
    kv_cache: str = "none"
    cache_refresh: int = 4
    token_healing: bool = True
    read_suffix: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for setting in DECODE_SETTINGS:
            setting.check(getattr(self, setting.name))

    def replace(self, **changes: Any) -> "DecodeConfig":
        """A copy with `changes` applied and validated (raises ValueError, leaving self untouched)."""
        return dataclasses.replace(self, **changes)


# Named presets for editor users: each sets several knobs at once. Values are starting points measured
# with `python -m benchmarks.infill` on the default model (see MODEL_CARD.md). None of them sets tau: an
# entropy threshold only means something for one model (the shipped AR's per-token entropy is ~6 nats where
# a fine-tuned Qwen3-0.6B's is well under 1), so dynamic modes use the AR's own `codila_tau`.
# scope 1 (only the frontier block is a candidate) in the editor presets: an editor's middle usually ends
# well before its token budget, and with a wider scope the lowest-entropy blocks are often far to the right,
# decoded and then thrown away when the middle ends. Measured with the default model over the server
# (`python -m benchmarks.server_latency --requests 30 --scope N`): p50 123 ms at scope 1, 513 ms at 2, 795 ms
# at 10, with syntax_ok within one task of each other on the public set at a 64-token budget (MODEL_CARD.md).
# accurate keeps the paper's scope 10: blocks in any order by entropy.
# method auto: the default model (a causal-context DLM) decodes verified, drafting block_size tokens per pass
# (its output is the base's greedy middle at every preset; the presets differ in speed only); a bidirectional
# DLM (the real pair) decodes with CoDiLA and the other knobs. read_suffix False: the default model's base
# completes the prefix (the suffix still says where the completion ends): on the public set's first 40
# single-line tasks it passed 15 where reading the suffix through its FIM tokens passed 6 (MODEL_CARD.md).
PRESETS: dict[str, dict[str, Any]] = {
    "fast": dict(method="auto", block_size=8, mode="dynamic", scope=1, kv_cache="dual", read_suffix=False),
    # static: fewer iterations than dynamic at the same B (0.25 vs ~0.36 DLM passes per token on the
    # version 7 model); dynamic is the quality knob
    "balanced": dict(method="auto", block_size=4, mode="static", scope=1, kv_cache="dual", read_suffix=False),
    "accurate": dict(method="auto", block_size=2, mode="dynamic", scope=10, kv_cache="none", read_suffix=False),
}


def preset(name: str, **overrides: Any) -> DecodeConfig:
    """DecodeConfig for preset `name` ("fast", "balanced", "accurate") with `overrides` on top."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return DecodeConfig(**{**PRESETS[name], **overrides})


PRESET_SETTING = Setting("preset", str, None, "named starting point, applied before any other setting ("
                         + "; ".join(f"{name}: " + ", ".join(f"{k}={v}" for k, v in knobs.items())
                                     for name, knobs in PRESETS.items()) + ")",
                         choices=tuple(PRESETS), nullable=True)
