"""The command-line options that choose and load the model pair, shared by every CLI that decodes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from decoding.models import ModelPair


def add_model_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add --dlm, --ar, --device, --dtype, --trust-remote-code and --ar-backend; returns their group."""
    mod = parser.add_argument_group("models (local Hugging Face folders, safetensors only)")
    mod.add_argument("--dlm", type=Path, default=None, help="DLM folder (default: the shipped default model)")
    mod.add_argument("--ar", type=Path, default=None, help="AR executor folder (default: the shipped default model)")
    mod.add_argument("--device", default="auto", help="auto (default) = cuda when available, else cpu; or cpu, cuda, cuda:1")
    mod.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                     help="auto (default) = bfloat16 on cuda, float32 on cpu")
    mod.add_argument("--trust-remote-code", action="store_true",
                     help="allow the checkpoints' own Python code (off: Dream loads as Qwen2 without it)")
    mod.add_argument("--ar-backend", default="torch", choices=["torch", "vllm"],
                     help="run the AR executor with transformers (default) or vLLM (GPU, vLLM >= 0.11)")
    return mod


def load_models_from_args(args: argparse.Namespace) -> ModelPair:
    """The pair named by the options add_model_arguments added."""
    from decoding.models import load_models

    return load_models(args.dlm, args.ar, device=args.device, dtype=args.dtype,
                       trust_remote_code=args.trust_remote_code, ar_backend=args.ar_backend)
