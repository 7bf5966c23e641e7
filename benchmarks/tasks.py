"""Infilling tasks in the HumanEval-Infilling format (openai/human-eval-infilling), one JSON object per line.

    {"task_id": "...", "prompt": <text before the gap>, "suffix": <text after it>,
     "canonical_solution": <the true middle>, "test": <defines check(candidate)>, "entry_point": <name>}

`test` and `entry_point` are optional (together). The program that runs is prompt + middle + suffix + test +
`check(entry_point)`; an entry_point `module:NAME` (our task sets) instead runs the standard library's module
NAME with the middle in place of the gap under its own tests (benchmarks/execution.py), so prompt and suffix
need only be the editor's context. Our own files add "language" (default "python") and "source" (where the
task was cut from); other extra fields are kept and ignored. Files may be gzipped (`.jsonl.gz`, as openai
ships them).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

from benchmarks.execution import MODULE_ENTRY
from verify import LANGUAGES

REQUIRED = ("task_id", "prompt", "suffix", "canonical_solution")


@dataclass(frozen=True)
class Task:
    task_id: str
    prompt: str
    suffix: str
    canonical_solution: str
    test: str | None = None
    entry_point: str | None = None
    language: str = "python"
    file: str = ""  # the task file it came from

    @property
    def executable(self) -> bool:
        return self.test is not None


def load_tasks(paths: list[str | Path], limit: int | None = None) -> list[Task]:
    """Tasks of every file in order (the first `limit` of each file; None = all). ValueError (with file:line)
    for malformed lines or duplicate ids."""
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1; got {limit}")
    tasks: list[Task] = []
    seen: dict[str, str] = {}
    for path in map(Path, paths):
        mine = []
        for line_no, record in _records(path):
            task = _task(record, f"{path}:{line_no}", str(path))
            if task.task_id in seen:
                raise ValueError(f"{path}:{line_no}: task_id {task.task_id!r} already used in {seen[task.task_id]}")
            seen[task.task_id] = f"{path}:{line_no}"
            mine.append(task)
        tasks += mine[:limit]
    if not tasks:
        raise ValueError(f"no tasks in {', '.join(map(str, paths))}")
    return tasks


def _records(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield line_no, json.loads(line)
                    except json.JSONDecodeError as err:
                        raise ValueError(f"{path}:{line_no}: not JSON ({err})") from None
    except OSError as err:
        raise ValueError(f"cannot read task file {path}: {err}") from None


def _task(record: object, where: str, file: str) -> Task:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [key for key in REQUIRED if key not in record]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(missing)} (HumanEval-Infilling fields: "
                         f"{', '.join(REQUIRED)}, optional test + entry_point)")
    for key in (*REQUIRED, "test", "entry_point", "language"):
        if record.get(key) is not None and not isinstance(record[key], str):
            raise ValueError(f"{where}: {key} must be a string")
    test, entry_point = record.get("test") or None, record.get("entry_point") or None
    if (test is None) != (entry_point is None):
        raise ValueError(f"{where}: test and entry_point go together (one is missing)")
    language = record.get("language", "python")
    if language not in LANGUAGES:
        raise ValueError(f"{where}: language {language!r} is not one of {', '.join(LANGUAGES)}")
    if test is not None and language != "python":
        raise ValueError(f"{where}: tests can only be run for python tasks")
    if entry_point is not None and not _is_entry_point(entry_point):
        raise ValueError(f"{where}: entry_point {entry_point!r} is neither a Python name nor "
                         f"{MODULE_ENTRY}MODULE.NAME")
    return Task(record["task_id"], record["prompt"], record["suffix"], record["canonical_solution"], test,
                entry_point, language, file)


def _is_entry_point(text: str) -> bool:
    if text.startswith(MODULE_ENTRY):
        return all(part.isidentifier() for part in text.removeprefix(MODULE_ENTRY).split("."))
    return text.isidentifier()
