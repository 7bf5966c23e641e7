"""CoDiLA decoding: a diffusion LM drafts, a small AR model decodes blocks coherently, entropy commits.

    from decoding import load_models, infill, preset
    models = load_models()                      # the shipped default model (decoding/default_model)
    result = infill(models, prefix, suffix, preset("balanced"))
    result.text, result.stats.as_dict()
"""

from decoding.config import PRESETS, DecodeConfig, preset
from decoding.loop import Cancelled, DecodeResult, DecodeStats, StepInfo, decode, infill
from decoding.models import ModelPair, default_model_dir, load_models

__all__ = [
    "DecodeConfig", "PRESETS", "preset", "load_models", "ModelPair", "default_model_dir",
    "decode", "infill", "DecodeResult", "DecodeStats", "StepInfo", "Cancelled",
]
