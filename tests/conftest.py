"""Shared fixtures. Tests run on CPU with tiny models built here; the torch thread count is kept low so the
suite behaves the same on CI's two cores."""

from pathlib import Path

import pytest
import torch

from training.tiny_models import build_tiny_models

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """(dlm_dir, ar_dir): a tiny Dream-layout DLM and Qwen3-layout AR sharing one byte-level tokenizer."""
    return build_tiny_models(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_models(tiny_model_dirs):
    """The tiny pair loaded on CPU in float32."""
    from decoding.models import load_models

    dlm_dir, ar_dir = tiny_model_dirs
    return load_models(dlm_dir, ar_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def published_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """(dream_dir, qwen3_dir): tiny checkpoints laid out exactly like the published Dream-Coder-v0-Instruct-7B and
    Qwen3-0.6B folders, real vocabulary sizes and special-token ids (tests/published_models.py)."""
    from tests.published_models import write_dream_coder, write_qwen3

    root = tmp_path_factory.mktemp("published")
    return write_dream_coder(root / "Dream-Coder-v0-Instruct-7B"), write_qwen3(root / "Qwen3-0.6B")
