"""CoDiLA decoding: a diffusion LM drafts, a small AR model decodes blocks coherently, entropy commits.

    from decoding import load_models, infill, preset
    models = load_models()                      # the shipped default model (decoding/default_model)
    result = infill(models, prefix, suffix, preset("balanced"))
    result.text, result.stats.as_dict()

The names below are imported on first use (PEP 562): `import decoding.config` (settings, presets, the
settings table) does not import torch, so the language server and the CLIs validate settings at once;
`decoding.infill` or `decoding.load_models` imports the decoder, and torch with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "DecodeConfig": "decoding.config", "PRESETS": "decoding.config", "preset": "decoding.config",
    "load_models": "decoding.models", "ModelPair": "decoding.models", "default_model_dir": "decoding.models",
    "decode": "decoding.loop", "infill": "decoding.loop", "DecodeResult": "decoding.result",
    "DecodeStats": "decoding.result", "StepInfo": "decoding.result", "Cancelled": "decoding.result",
}
__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from decoding.config import PRESETS, DecodeConfig, preset
    from decoding.loop import decode, infill
    from decoding.result import Cancelled, DecodeResult, DecodeStats, StepInfo
    from decoding.models import ModelPair, default_model_dir, load_models


def __getattr__(name: str) -> Any:
    """Import the module that defines `name` on first access, and keep the name here."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'decoding' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
