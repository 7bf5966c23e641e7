"""The training corpus every machine has: the Python standard library of the running interpreter.

Files are split once, by a hash of their path relative to the stdlib root, into training files and
held-out files. The benchmark's public task set is cut from held-out files only, and the trainer never
reads them, so the default model is never evaluated on code it was trained on.
"""

from __future__ import annotations

import hashlib
import sysconfig
from pathlib import Path

from training.data import split_validation

# Folders of the stdlib that are tests, vendored copies or tool GUIs rather than library code.
EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "idlelib", "lib2to3", "ensurepip", "site-packages",
                           "__pycache__", "turtledemo", "tkinter", "pydoc_data"})
HELDOUT_MODULUS = 20  # one file in 20 is held out for the benchmark


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def is_heldout(relpath: str) -> bool:
    """True for files reserved for evaluation. relpath: POSIX path relative to the stdlib root."""
    digest = hashlib.sha1(relpath.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % HELDOUT_MODULUS == 0


def is_heldout_path(path: Path, root: Path | None = None) -> bool:
    """True for a file that is one of the stdlib's held-out files, wherever it was found (say, in a folder a
    user passed as more training data that happens to be the stdlib)."""
    root = (root or stdlib_root()).resolve()
    try:
        rel = Path(path).resolve().relative_to(root)
    except ValueError:
        return False
    return is_heldout(rel.as_posix())


def stdlib_files(split: str = "train", root: Path | None = None) -> list[Path]:
    """Library .py files of the stdlib, sorted. split: "train", "heldout", "all" or "dev".

    "dev" is the part of "train" that pretraining keeps for validation (`training.data.split_validation`)
    and the fine-tune does not read either: tuning tasks are cut from it, so settings are chosen on code
    no stage of the recipe trains on and reported on the held-out set.
    """
    if split == "dev":
        return split_validation(stdlib_files("train", root))[1]
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"split must be train, heldout, all or dev; got {split!r}")
    root = root or stdlib_root()
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if EXCLUDED_DIRS.intersection(rel.parts[:-1]):
            continue
        held = is_heldout(rel.as_posix())
        if split == "all" or held == (split == "heldout"):
            out.append(path)
    return out
