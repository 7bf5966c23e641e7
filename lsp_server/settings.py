"""Server settings: the editor's "codila" section, validated into one frozen dataclass.

Settings arrive three ways, all carrying the same object: `initializationOptions`,
`workspace/didChangeConfiguration` ({"settings": {"codila": {...}}}) and a pull of the "codila" section through
`workspace/configuration`. `merge` applies them one key at a time onto the current settings: a bad value is
reported (the caller shows it to the user) and the previous valid value of that key stays, as in
jedi-language-server's `initialization_options.py`.

Decoding knobs left unset (None) take the value of the chosen preset (decoding.config.PRESETS); set ones
override it. `ServerSettings.decode_config` is the DecodeConfig every completion uses.

`decoding` (and with it torch) is imported on first validation, not with this module: the server answers
`initialize` at once and validates on its model thread while torch loads.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from decoding.config import DecodeConfig

PRESET_NAMES = ("fast", "balanced", "accurate")  # decoding.config.PRESETS, checked there too
DTYPES = ("auto", "float32", "bfloat16", "float16")
AR_BACKENDS = ("torch", "vllm")
SYNTAX_CHECKS = ("off", "trim", "reject")
LOG_LEVELS = ("debug", "info", "warning", "error")
_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")

# Editor name (camelCase, the contract with the clients) -> field name.
FIELD_OF = {
    "preset": "preset",
    "dlmPath": "dlm_path",
    "arPath": "ar_path",
    "device": "device",
    "dtype": "dtype",
    "arBackend": "ar_backend",
    "trustRemoteCode": "trust_remote_code",
    "method": "method",
    "blockSize": "block_size",
    "mode": "mode",
    "tau": "tau",
    "scope": "scope",
    "temperature": "temperature",
    "topP": "top_p",
    "maxNewTokens": "max_new_tokens",
    "contextTokens": "context_tokens",
    "latencyBudgetMs": "latency_budget_ms",
    "debounceMs": "debounce_ms",
    "syntaxCheck": "syntax_check",
    "kvCache": "kv_cache",
    "logLevel": "log_level",
}
NAME_OF = {field: name for name, field in FIELD_OF.items()}

# Fields whose change needs the models loaded again (in the background, without a restart).
MODEL_FIELDS = ("dlm_path", "ar_path", "device", "dtype", "ar_backend", "trust_remote_code")


@dataclass(frozen=True)
class ServerSettings:
    """Everything the editor can set. Field docs give type, default and range; the README lists them too.

    preset:            "fast" | "balanced" | "accurate": the decoding knobs below that are left None.
    dlm_path, ar_path: local model folders; None = the shipped default model (decoding/default_model).
    device:            "auto" (cuda when available) | "cpu" | "cuda" | "cuda:N".
    dtype:             "auto" (bfloat16 on CUDA, float32 on CPU) | "float32" | "bfloat16" | "float16".
    ar_backend:        "torch" | "vllm" (GPU only) for the AR executor.
    trust_remote_code: run Python code shipped with a model folder; off unless the user sets it.
    method, block_size, mode, tau, scope, kv_cache: DecodeConfig knobs; None = the preset's value.
    temperature, top_p: DecodeConfig knobs (not part of the presets).
    max_new_tokens:    length of the masked middle, 1..1024 tokens (a budget: unused positions become EOS).
    context_tokens:    tokens of text around the cursor the model sees: 3/4 before, 1/4 after the cursor.
    latency_budget_ms: DecodeConfig.deadline_ms; 0 = no budget.
    debounce_ms:       automatic inline requests wait this long; a newer request for the document in the
                       meantime replaces them without decoding. Invoked requests do not wait.
    syntax_check:      "off" | "trim" | "reject": what verify.check_insertion does with a completion that
                       adds a syntax error.
    log_level:         "debug" | "info" | "warning" | "error" for the server's log (stderr or --log-file).
    """

    preset: str = "balanced"
    dlm_path: str | None = None
    ar_path: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    ar_backend: str = "torch"
    trust_remote_code: bool = False
    method: str | None = None
    block_size: int | None = None
    mode: str | None = None
    tau: float | None = None
    scope: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    context_tokens: int = 512
    latency_budget_ms: float = 0.0
    debounce_ms: int = 150
    syntax_check: str = "trim"
    kv_cache: str | None = None
    log_level: str = "info"

    def __post_init__(self) -> None:
        _one_of("preset", self.preset, PRESET_NAMES)
        for name in ("dlm_path", "ar_path"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"must be a folder path or null (the default model); got {value!r}")
        if not isinstance(self.device, str) or not _DEVICE.match(self.device):
            raise ValueError(f"must be auto, cpu, cuda or cuda:N; got {self.device!r}")
        _one_of("dtype", self.dtype, DTYPES)
        _one_of("ar_backend", self.ar_backend, AR_BACKENDS)
        if not isinstance(self.trust_remote_code, bool):
            raise ValueError(f"must be true or false; got {self.trust_remote_code!r}")
        _integer("max_new_tokens", self.max_new_tokens, 1, 1024)
        _integer("context_tokens", self.context_tokens, 16, 1_000_000)
        _integer("debounce_ms", self.debounce_ms, 0, 10_000)
        _number("latency_budget_ms", self.latency_budget_ms, 0, 3_600_000)
        _one_of("syntax_check", self.syntax_check, SYNTAX_CHECKS)
        _one_of("log_level", self.log_level, LOG_LEVELS)
        self.decode_config()  # validates the decoding knobs together (DecodeConfig.__post_init__)

    def decode_config(self) -> "DecodeConfig":
        """The preset with every explicitly set knob on top, and the latency budget as deadline_ms."""
        from decoding.config import preset

        knobs = dict(method=self.method, block_size=self.block_size, mode=self.mode, tau=self.tau,
                     scope=self.scope, kv_cache=self.kv_cache)
        explicit = {name: value for name, value in knobs.items() if value is not None}
        return preset(self.preset, **explicit, temperature=self.temperature, top_p=self.top_p,
                      max_new_tokens=self.max_new_tokens,
                      deadline_ms=float(self.latency_budget_ms) if self.latency_budget_ms else None)

    @property
    def model_key(self) -> tuple:
        """What identifies the loaded models: a change here means loading them again."""
        return tuple(getattr(self, name) for name in MODEL_FIELDS)

    def to_lsp(self) -> dict[str, Any]:
        """The settings under their editor names (debugStats, logs)."""
        return {NAME_OF[f.name]: getattr(self, f.name) for f in dataclasses.fields(self)}


def merge(current: ServerSettings, section: Any) -> tuple[ServerSettings, list[str]]:
    """Apply the editor's "codila" section onto `current`, one key at a time.

    Returns the new settings and one problem per rejected key ("blockSize: ..."). A rejected key keeps its
    current value; keys the section leaves out keep theirs too; unknown keys are reported and ignored.
    """
    if section is None:
        return current, []
    if not isinstance(section, dict):
        return current, [f"the settings must be an object; got {type(section).__name__}"]
    problems = []
    for name, value in section.items():
        field = FIELD_OF.get(name)
        if field is None:
            problems.append(f"{name}: unknown setting (known: {', '.join(FIELD_OF)})")
            continue
        try:
            current = dataclasses.replace(current, **{field: value})
        except (ValueError, TypeError) as err:
            kept = getattr(current, field)
            problems.append(f"{name} = {value!r} ignored: {_plain(err, field)}; keeping "
                            f"{'the preset value' if kept is None and field in _PRESET_KNOBS else repr(kept)}")
    return current, problems


_PRESET_KNOBS = ("method", "block_size", "mode", "tau", "scope", "kv_cache")


def _plain(err: Exception, field: str) -> str:
    """DecodeConfig names fields in snake_case; say it in the editor's words."""
    text = str(err)
    for snake, camel in NAME_OF.items():
        text = re.sub(rf"\b{snake}\b", camel, text)
    return text


def _one_of(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"must be one of {', '.join(allowed)}; got {value!r}")


def _integer(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be a whole number; got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"must be between {low} and {high}; got {value}")


def _number(name: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a number; got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"must be between {low:g} and {high:g}; got {value}")
