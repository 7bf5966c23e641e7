"""Pretrained bases and GGUF input: converted once into the per-user cache, refused clearly when broken."""

import importlib.metadata
import re
from pathlib import Path

import pytest
import torch

from decoding import base as base_mod
from decoding.base import BASES, BaseModelError, resolve_model_path
from tests.tiny_models import build_tiny_gguf

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CODILA_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return build_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def test_a_gguf_file_loads_through_the_model_loaders_with_its_own_weights(tiny_gguf, cache):
    from decoding.models import load_ar, load_models

    path, original = tiny_gguf
    ar = load_ar(path, device="cpu", dtype="float32", boundary_tokens=("<think>", "</think>"))
    ids = ar.tokenizer.encode("def add(a, b):\n    return a + b\n", add_special_tokens=False)
    assert ar.tokenizer.decode(ids) == "def add(a, b):\n    return a + b\n" and len(ids) > 5
    with torch.no_grad():
        got, want = ar.model(torch.tensor([ids])).logits, original(torch.tensor([ids])).logits
    # the cached copy is bfloat16: equal to that precision, and the same ranking
    assert torch.allclose(got, want, atol=0.02) and torch.equal(got.argmax(-1), want.argmax(-1))
    pair = load_models(path, path, device="cpu", dtype="float32", boundary_tokens=("<think>", "</think>"))
    assert pair.dlm.logit_shift is False and pair.dlm.mask_id == pair.dlm.tokenizer.convert_tokens_to_ids("<|mask|>")


def test_conversion_happens_once_and_lands_in_the_cache(tiny_gguf, cache, monkeypatch):
    path, _ = tiny_gguf
    folder = resolve_model_path(path)
    assert folder.is_relative_to(cache) and (folder / "model.safetensors").exists()
    assert "quantization_config" not in (folder / "config.json").read_text()

    def no_second_conversion(*a, **k):
        raise AssertionError("converted twice")

    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", no_second_conversion)
    assert resolve_model_path(str(path)) == folder
    assert not list(folder.parent.glob("*.tmp*"))  # nothing half-written left beside it


def test_an_unreadable_gguf_is_one_clear_error(tmp_path, cache):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(BaseModelError, match="cannot read GGUF"):
        resolve_model_path(bad)
    with pytest.raises(BaseModelError, match="does not exist"):
        resolve_model_path(tmp_path / "missing.gguf")
    assert not (cache / "bases").exists() or not any((cache / "bases").iterdir())


def test_a_missing_base_names_the_command_that_installs_it(cache, monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(BaseModelError, match=re.escape(base_mod.INSTALL_COMMAND)):
        resolve_model_path("base:qwen2.5-coder-0.5b")
    with pytest.raises(BaseModelError, match="unknown base"):
        resolve_model_path("base:nope")


def _split_base(path: Path, pieces: int, digest: str, monkeypatch) -> base_mod.Base:
    """A registered base whose GGUF arrives in `pieces` files (as the default base's six wheels carry it)."""
    data = path.read_bytes()
    size = -(-len(data) // pieces)
    files = {}
    for i in range(pieces):
        piece = path.parent / f"{path.name}.part{i}"
        piece.write_bytes(data[i * size:(i + 1) * size])
        files[f"m{i}"] = piece
    base = base_mod.Base(parts=tuple(base_mod.Part(f"x{i}", "1", "0" * 64, f"m{i}") for i in range(pieces)),
                         file_sha256=digest, licence="test")
    monkeypatch.setitem(BASES, "fake", base)
    monkeypatch.setattr(base_mod, "installed_file", lambda part: files[part.member])
    return base


def test_a_base_in_pieces_is_joined_in_order_and_checked_whole(tiny_gguf, cache, monkeypatch):
    path, original = tiny_gguf
    _split_base(path, 3, base_mod._file_sha256(path), monkeypatch)
    folder = resolve_model_path("base:fake")
    assert (folder / "model.safetensors").exists()
    assert not list(folder.parent.glob("join.tmp*"))  # the joined file is not kept
    from decoding.models import load_ar

    ar = load_ar(folder, device="cpu", dtype="float32", boundary_tokens=("<think>", "</think>"))
    ids = torch.tensor([ar.tokenizer.encode("def f(x):\n    return x\n")])
    with torch.no_grad():
        assert torch.equal(ar.model(ids).logits.argmax(-1), original(ids).logits.argmax(-1))


def test_a_corrupt_base_file_is_refused_before_conversion(tiny_gguf, cache, monkeypatch):
    path, _ = tiny_gguf
    _split_base(path, 2, "f" * 64, monkeypatch)
    with pytest.raises(BaseModelError, match="corrupt.*--force-reinstall"):
        resolve_model_path("base:fake")
    assert not (cache / "bases").exists() or not [p for p in (cache / "bases").iterdir() if p.is_dir()]


def test_the_install_pin_and_the_registry_agree():
    text = (ROOT / "requirements" / "base-model.txt").read_text()
    pins = [line.split()[0] + " " + line.split()[1] for line in text.splitlines() if line and not line.startswith("#")]
    base = BASES["qwen2.5-coder-0.5b"]
    assert pins == [f"{p.package}=={p.version} --hash=sha256:{p.wheel_sha256}" for p in base.parts]
    readme = (ROOT / "README.md").read_text().split("\n## ", 1)[0]
    assert "requirements/base-model.txt" in readme  # README's first command installs it
