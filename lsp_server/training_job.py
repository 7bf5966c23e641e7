"""The trainer command: fine-tune the AR executor on the workspace's own source files, in a subprocess.

    python -m training.finetune --dlm DLM --ar AR --data FOLDER [--data FOLDER...] --block-size 4 \\
        --output OUT --json-progress --max-steps N --val-every N --save-every N --device DEVICE

`training.finetune` prints one JSON object per step on stdout ({"step", "total_steps", "loss", "lr",
"tokens_per_s", "eta_s"}) and a final {"done": true, "output": ...}; its stderr is kept for error messages.
The run can be cancelled (SIGTERM, then SIGKILL); the server keeps serving completions meanwhile.
Output folders go to $XDG_CACHE_HOME/codila-lsp/trained/ (~/.cache when unset) unless one is given.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlparse

from training.config import BLOCK_SIZE, LR, MAX_STEPS

log = logging.getLogger("lsp_server.training")

DEFAULT_MAX_STEPS = 200
# The command's options are rows of the trainer's settings table, in the editors' camelCase words; the
# server asks for fewer steps than a training run from the terminal may take.
OPTION_ROWS = {"blockSize": BLOCK_SIZE.but(name="blockSize"),
               "maxSteps": MAX_STEPS.but(name="maxSteps", default=DEFAULT_MAX_STEPS, high=1_000_000),
               "learningRate": LR.but(name="learningRate", default=None, nullable=True)}
PROJECT_ROOT = Path(__file__).resolve().parent.parent  # makes `training` importable in the subprocess


class TrainingFailed(RuntimeError):
    """training.finetune exited with an error; the message holds the end of its stderr."""


class TrainingCancelled(RuntimeError):
    """The user cancelled the run."""


@dataclass(frozen=True)
class TrainOptions:
    """One trainer command. folders: source folders (the workspace's); output: the new AR folder."""

    folders: tuple[Path, ...]
    output: Path
    block_size: int = BLOCK_SIZE.default
    max_steps: int = DEFAULT_MAX_STEPS
    learning_rate: float | None = None  # None: the rate the AR was last fine-tuned with, else the trainer's

    def __post_init__(self) -> None:
        if not self.folders:
            raise ValueError("no workspace folder to train on: open a folder first")
        for folder in self.folders:
            if not folder.is_dir():
                raise ValueError(f"{folder} is not a folder")
        OPTION_ROWS["blockSize"].check(self.block_size)
        OPTION_ROWS["maxSteps"].check(self.max_steps)
        OPTION_ROWS["learningRate"].check(self.learning_rate)


def parse_arguments(arguments: list[Any], workspace_folders: list[str]) -> TrainOptions:
    """Command arguments -> TrainOptions.

    Accepted: [] (every workspace folder, defaults), [{"blockSize": 4, "maxSteps": N, "learningRate": X,
    "output": DIR}], and
    folder URIs or paths as strings (what the VS Code client sends), in any mix.
    """
    folders = [a for a in arguments if isinstance(a, str)]
    options = [a for a in arguments if isinstance(a, dict)]
    if len(folders) + len(options) != len(arguments) or len(options) > 1:
        raise ValueError("arguments: folder URIs and at most one object {blockSize, maxSteps, learningRate, output}")
    given = options[0] if options else {}
    known = (*OPTION_ROWS, "output")
    unknown = set(given) - set(known)
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(known)}")
    paths = tuple(_folder(f) for f in (folders or workspace_folders))
    block_size = given.get("blockSize", BLOCK_SIZE.default)
    output = Path(given["output"]).expanduser() if given.get("output") else _default_output(paths, block_size)
    return TrainOptions(paths, output, block_size, given.get("maxSteps", DEFAULT_MAX_STEPS), given.get("learningRate"))


def finetune_command(options: TrainOptions, dlm: str, ar: str, device: str) -> list[str]:
    """The training.finetune command line for `options`."""
    steps = str(options.max_steps)
    data = [arg for folder in options.folders for arg in ("--data", str(folder))]
    lr = options.learning_rate if options.learning_rate is not None else previous_learning_rate(ar)
    return [sys.executable, "-m", "training.finetune", "--dlm", dlm, "--ar", ar, *data,
            "--block-size", str(options.block_size), "--output", str(options.output), "--json-progress",
            "--max-steps", steps, "--val-every", steps, "--save-every", steps, "--device", device,
            *(["--lr", repr(float(lr))] if lr is not None else [])]


def previous_learning_rate(ar: str) -> float | None:
    """The rate `training.finetune` recorded in the AR folder's config.json, if any.

    The trainer's default (the paper's 1e-5, for a 0.6B AR) barely moves a small AR such as the default
    model's; the rate it was fine-tuned with is the better starting point for fine-tuning it further.
    """
    try:
        value = json.loads((Path(ar) / "config.json").read_text()).get("codila_finetune_lr")
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1 else None


class TrainingRun:
    """One training.finetune subprocess: `run` reports every progress line and returns the output folder."""

    def __init__(self, options: TrainOptions, *, dlm: str, ar: str, device: str) -> None:
        self.options = options
        self.command = finetune_command(options, dlm, ar, device)
        self._process: asyncio.subprocess.Process | None = None
        self._cancelled = False

    async def run(self, on_progress: Callable[[dict[str, Any]], None]) -> str:
        log.info("training: %s", " ".join(self.command))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
        self._process = await asyncio.create_subprocess_exec(
            *self.command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env)
        if self._cancelled:  # cancelled while starting
            self.cancel()
        errors: deque[str] = deque(maxlen=20)
        stderr_task = asyncio.create_task(_drain(self._process.stderr, errors))
        done: dict[str, Any] | None = None
        started = time.perf_counter()
        async for row in _json_lines(self._process.stdout):
            if row.get("done"):
                done = row
            elif "step" in row and "total_steps" in row:
                on_progress(row)
        code = await self._process.wait()
        await stderr_task
        log.info("training finished with exit code %s after %.0f s", code, time.perf_counter() - started)
        if self._cancelled:
            raise TrainingCancelled("training cancelled")
        if code != 0 or done is None:
            tail = " | ".join(errors) or "no output"
            raise TrainingFailed(f"training.finetune exited with code {code}: {tail}")
        return str(done.get("output") or self.options.output)

    def cancel(self) -> None:
        """Stop the subprocess: SIGTERM now, SIGKILL if it is still there after 5 s."""
        self._cancelled = True
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        asyncio.get_running_loop().call_later(5.0, _kill_if_running, process)


def describe_progress(row: dict[str, Any]) -> str:
    """One progress line of training.finetune in words (the status bar, the progress notification)."""
    eta = row.get("eta_s") or 0
    return (f"step {row['step']}/{row['total_steps']}, loss {row['loss']:.3f}, "
            f"ETA {int(eta // 60)}m{int(eta % 60):02d}s")


def _kill_if_running(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()


async def _json_lines(stream: asyncio.StreamReader):
    while line := await stream.readline():
        try:
            row = json.loads(line)
        except ValueError:
            log.debug("training stdout: %s", line.decode(errors="replace").rstrip())
            continue
        if isinstance(row, dict):
            yield row


async def _drain(stream: asyncio.StreamReader, tail: deque[str]) -> None:
    while line := await stream.readline():
        text = line.decode(errors="replace").rstrip()
        if text and "it/s]" not in text:  # tqdm bars are noise in an error message
            tail.append(text)
        log.debug("training: %s", text)


def _folder(uri_or_path: str) -> Path:
    if uri_or_path.startswith("file:"):
        return Path(unquote(urlparse(uri_or_path).path))
    if re.match(r"^[a-z][a-z0-9+.-]*://", uri_or_path):
        raise ValueError(f"{uri_or_path}: only local folders (file:// URIs) can be trained on")
    return Path(uri_or_path).expanduser()


def _default_output(folders: tuple[Path, ...], block_size: int) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", folders[0].name if folders else "workspace") or "workspace"
    return cache / "codila-lsp" / "trained" / f"{name}-b{block_size}-{time.strftime('%Y%m%d-%H%M%S')}"
