"""The files the trainers read: the Python standard library every machine has, and folders of source code.

Stdlib files are split once, by a hash of their path relative to the stdlib root, into training files and
held-out files. The benchmark's public task set is cut from held-out files only, and the trainers never
read them (not even inside a folder of source code a user passes), so the default model is never
evaluated on code it was trained on. Training files are split again into training and validation files
(`split_validation`). What is made of a file's text is training.data's.
"""

from __future__ import annotations

import hashlib
import sysconfig
from pathlib import Path

# Folders of the stdlib that are tests, vendored copies or tool GUIs rather than library code.
EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "idlelib", "lib2to3", "ensurepip", "site-packages",
                           "__pycache__", "turtledemo", "tkinter", "pydoc_data"})
HELDOUT_MODULUS = 20  # one file in 20 is held out for the benchmark
VALIDATION_MODULUS = 50  # one training file in 50 validates (never a held-out benchmark file)
SOURCE_SUFFIXES = (".py", ".pyi", ".js", ".jsx", ".ts", ".tsx", ".go", ".rs", ".c", ".h", ".cc", ".cpp", ".hpp",
                   ".java", ".kt", ".rb", ".php", ".cs", ".swift", ".scala", ".lua", ".sh", ".md")
SKIPPED_DIRS = frozenset({".git", ".hg", ".svn", "node_modules", ".venv", "venv", "__pycache__", "build", "dist",
                          "target", ".mypy_cache", ".pytest_cache", ".tox"})
MAX_FILE_BYTES = 1_000_000  # larger files are generated or data, not code to learn from


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

    "dev" is the part of "train" that pretraining keeps for validation (`split_validation`)
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


def split_validation(files: list[Path], modulus: int = VALIDATION_MODULUS) -> tuple[list[Path], list[Path]]:
    """(train, validation): a stable split of `files` by a hash of each file name."""
    def is_val(p: Path) -> bool:
        return int.from_bytes(hashlib.sha1(p.as_posix().encode()).digest()[:8], "big") % modulus == 1

    return [p for p in files if not is_val(p)], [p for p in files if is_val(p)]


def source_files(folder: Path) -> list[Path]:
    """Source files under `folder` (by suffix), skipping VCS, dependency and build folders, and the benchmark's
    held-out stdlib files wherever they turn up (a folder that is or holds the stdlib); sorted."""
    folder = Path(folder)
    files = [f for f in sorted(folder.rglob("*")) if f.is_file() and f.suffix in SOURCE_SUFFIXES
             and not SKIPPED_DIRS.intersection(f.relative_to(folder).parts[:-1]) and f.stat().st_size < MAX_FILE_BYTES
             and not is_heldout_path(f)]
    if not files:
        raise ValueError(f"{folder}: no source files ({', '.join(SOURCE_SUFFIXES)})")
    return files


def read_text(path: Path) -> str:
    return Path(path).read_text(encoding="utf-8", errors="replace")
