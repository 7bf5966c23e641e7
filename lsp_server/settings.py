"""Server settings: the editor's "codila" section, validated into one frozen dataclass.

Settings arrive three ways, all carrying the same object: `initializationOptions`,
`workspace/didChangeConfiguration` ({"settings": {"codila": {...}}}) and a pull of the "codila" section through
`workspace/configuration`. `merge` applies them one key at a time onto the current settings: a bad value is
reported (the caller shows it to the user) and the previous valid value of that key stays, as in
jedi-language-server's `initialization_options.py`.

SETTINGS is the server's view of the one settings table (decoding/config.py): the model rows, the decoding
knobs (those a preset sets become "null = the preset's value"), and the rows only an editor has. Names,
validation and defaults come from it; tests/test_settings_table.py checks the editors' schemas
(package.json, the Neovim plugin) and README's table against it. `ServerSettings.decode_config` is the
DecodeConfig every completion uses.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from decoding.config import DECODE_SETTINGS, MODEL_SETTINGS, PRESET_SETTING, DecodeConfig, Setting, preset
from verify.insertion import MODES as SYNTAX_CHECKS

LOG_LEVELS = ("debug", "info", "warning", "error")
PRESET_KNOBS = ("method", "block_size", "mode", "tau", "scope", "kv_cache")  # null = the preset's value
_DECODE = {setting.name: setting for setting in DECODE_SETTINGS}


def _preset_knob(name: str) -> Setting:
    row = _DECODE[name]
    return row.but(default=None, nullable=True, help=f"{row.help}; null = the preset's value")


# The editor-facing settings, in the order the editors list them.
SETTINGS: tuple[Setting, ...] = (
    PRESET_SETTING.but(default="balanced", nullable=False,
                       help="fills the decoding knobs left null: " + PRESET_SETTING.help.split("(", 1)[1][:-1]),
    *MODEL_SETTINGS,
    *(_preset_knob(name) for name in ("method", "block_size", "mode")),
    _DECODE["tau"],  # no preset sets it: null is the AR's own threshold
    _preset_knob("scope"),
    _DECODE["temperature"],
    _DECODE["top_p"],
    _DECODE["max_new_tokens"].but(high=1024),
    Setting("context_tokens", int, 512, "tokens of text around the cursor the model reads (3/4 before, 1/4 "
            "after; shrunk to fit the DLM's positions)", low=16, high=1_000_000),
    Setting("latency_budget_ms", int, 0, "the decoder's deadline_ms: it commits more per step to finish in "
            "time; 0 = off", low=0, high=3_600_000),
    Setting("debounce_ms", int, 150, "automatic inline requests wait this long; a newer one replaces them "
            "without a decode (invoked requests do not wait)", low=0, high=10_000),
    Setting("syntax_check", str, "trim", "what verify.check_insertion does with a completion that adds a syntax "
            "error: off, trim it to its longest clean prefix, reject it", choices=SYNTAX_CHECKS),
    _preset_knob("kv_cache"),
    Setting("log_level", str, "info", "the server's log level (stderr or --log-file)", choices=LOG_LEVELS),
)
SETTING_OF = {setting.editor_name: setting for setting in SETTINGS}  # editor key (camelCase) -> row
MODEL_FIELDS = tuple(setting.name for setting in MODEL_SETTINGS)  # a change reloads the models


@dataclass(frozen=True)
class ServerSettings:
    """Everything the editor can set; each field is a row of SETTINGS (type, default, range, help).

    preset fills the decoding knobs left None (method, block_size, mode, tau, scope, kv_cache);
    dlm_path / ar_path None = the shipped default model; latency_budget_ms 0 = no deadline.
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
    latency_budget_ms: int = 0
    debounce_ms: int = 150
    syntax_check: str = "trim"
    kv_cache: str | None = None
    log_level: str = "info"

    def __post_init__(self) -> None:
        for setting in SETTINGS:
            setting.check(getattr(self, setting.name))
        self.decode_config()  # validates the decoding knobs together (DecodeConfig.__post_init__)

    def decode_config(self) -> DecodeConfig:
        """The preset with every explicitly set knob on top, and the latency budget as deadline_ms."""
        explicit = {name: getattr(self, name) for name in PRESET_KNOBS if getattr(self, name) is not None}
        return preset(self.preset, **explicit, temperature=self.temperature, top_p=self.top_p,
                      max_new_tokens=self.max_new_tokens,
                      deadline_ms=float(self.latency_budget_ms) if self.latency_budget_ms else None)

    @property
    def model_key(self) -> tuple:
        """What identifies the loaded models: a change here means loading them again."""
        return tuple(getattr(self, name) for name in MODEL_FIELDS)

    def to_lsp(self) -> dict[str, Any]:
        """The settings under their editor names (debugStats, logs)."""
        return {setting.editor_name: getattr(self, setting.name) for setting in SETTINGS}


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
        setting = SETTING_OF.get(name)
        if setting is None:
            problems.append(f"{name}: unknown setting (known: {', '.join(SETTING_OF)})")
            continue
        try:
            current = dataclasses.replace(current, **{setting.name: value})
        except (ValueError, TypeError) as err:
            kept = getattr(current, setting.name)
            problems.append(f"{name} = {value!r} ignored: {_in_editor_words(err)}; keeping "
                            f"{'the preset value' if kept is None and setting.name in PRESET_KNOBS else repr(kept)}")
    return current, problems


def _in_editor_words(err: Exception) -> str:
    """The table names settings in snake_case; say it in the editor's words."""
    text = str(err)
    for setting in SETTINGS:
        text = re.sub(rf"\b{setting.name}\b", setting.editor_name, text)
    return text


assert [(f.name, f.default) for f in dataclasses.fields(ServerSettings)] == [(s.name, s.default) for s in SETTINGS], \
    "ServerSettings' fields and defaults must be the rows of SETTINGS, in order"
