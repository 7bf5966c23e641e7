"""Decoder specs: short strings naming one decoder on the command line, and what each runs on a task.

    SPEC    := METHOD [":" ARGUMENTS]
    METHOD  := "dlm" | "codila" | "codila-top1"      the decoder alone, on the harness's protocol
             | "preset"                             the editor's whole pipeline: ARGUMENTS = NAME [",", SETTING...]
             | "ar"                                 the base alone: ARGUMENTS = ["prefix"] [, model=PATH] [, SETTING...]
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
    ar                      the DLM's base alone as a plain FIM completer (method ar), in the editor's pipeline
    ar:prefix               the same from the prefix alone (the suffix only says where to stop)
    ar:model=base:qwen2.5-coder-0.5b,max_new_tokens=32
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
    """The row a user would pick instead: the base alone as a plain completer, greedy, with token healing,
    through the editor's own pipeline (window, where a completion ends, tidy, verify), so it compares with
    preset: rows on equal terms (the editor's budget and context, never the reference's length).

    prefix_only: False reads the suffix through the base's FIM tokens (`ar`); True completes the prefix alone
    (`ar:prefix`), the suffix only saying where to stop. model: a plain causal LM (a folder, base:NAME or
    .gguf); None = the loaded causal-context DLM's own base (the default model), or for a bidirectional pair
    the executor's base (the model the executor was fine-tuned from)."""

    spec: str
    model: str | None = None
    prefix_only: bool = False
    settings: ServerSettings = ServerSettings()
    uses_length = False

    def describe(self) -> dict[str, Any]:
        return {"method": "ar", "model": self.model or "the DLM's base (else the executor's)", "decoding": "greedy",
                "reads_suffix": not self.prefix_only, "token_healing": True,
                "pipeline": "lsp_server.pipeline.complete", "max_new_tokens": self.settings.max_new_tokens,
                "context_tokens": self.settings.context_tokens}

    def infill(self, models: Any, task: Task, max_new_tokens: int, max_context: int) -> Middle:
        """The editor's completion at the task's gap with method ar (the harness's length does not apply)."""
        from decoding.models import load_fim_base

        model = self.model or (None if models.dlm.fim is not None else str(models.ar.model.name_or_path))
        pair = models if model is None else _plain(model, load_fim_base, models)
        config = self.settings.decode_config().replace(method="ar", read_suffix=not self.prefix_only)
        started = time.perf_counter()
        completion = pipeline.complete(pair, task_context(task), self.settings, config=config)
        return Middle(completion.text, completion.stats, self.settings.max_new_tokens,
                      (time.perf_counter() - started) * 1000)


_PLAIN: dict[str, Any] = {}


def _plain(path: str, load: Callable, models: Any) -> Any:
    """A plain causal LM as a model pair, loaded once per process on the models' device."""
    if path not in _PLAIN:
        _PLAIN[path] = load(path, device=str(models.dlm.device), dtype="auto")
    return _PLAIN[path]


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
    """ar[:prefix][,model=PATH][,EDITOR SETTING=VALUE...]"""
    parts = [part.strip() for part in arguments.split(",") if part.strip()]
    prefix_only = bool(parts) and parts[0] == "prefix"
    model = None
    settings = []
    for item in parts[1 if prefix_only else 0:]:
        key, eq, value = (part.strip() for part in item.partition("="))
        if key == "model" and eq and value and model is None:
            model = value
        elif key in ("prefix", "model"):
            raise ValueError(f"ar takes [prefix], then model=PATH once and editor settings; got {item!r}")
        else:
            settings.append(item)
    values = _settings(",".join(settings), PRESET_ROWS, PRESET_ALIASES)
    return ArSpec(spec, model, prefix_only, ServerSettings(**values))


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
