"""Running a task's tests against a generated middle, for real, in a separate restricted process.

The program is the HumanEval-Infilling one: prompt + middle + suffix + "\\n" + test + "\\n" + check(entry_point).
Each runs in a fresh `python -I` in its own temporary directory (also its HOME), with:
  - no network: a new network namespace (`unshare -n`, or `unshare -rn` for a non-root user) where the
    kernel allows it, and in every case an audit hook that refuses internet sockets, DNS look-ups and
    starting other programs;
  - limits: CPU seconds, a wall-clock timeout (the whole process group is killed), address space, file size;
  - stdout discarded, stderr kept (its last line explains a failure).
This keeps honest mistakes of generated code (endless loops, huge allocations, stray network calls) from
hurting the machine or the numbers. It is not a security boundary against hostile code: run benchmarks of
untrusted models in a container or VM.
"""

from __future__ import annotations

import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

# Runs inside the child before the program: installs the audit hook, then executes the program file.
_BOOTSTRAP = r'''
import socket, sys
_BLOCKED = {"socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr", "socket.gethostbyname_ex",
            "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
            "os.startfile", "pty.spawn"}
def _guard(event, args):
    if event == "socket.__new__" and args[1] != getattr(socket, "AF_UNIX", None):
        raise PermissionError("network access is disabled while running benchmark tests")
    if event in _BLOCKED:
        raise PermissionError(f"{event} is disabled while running benchmark tests")
sys.addaudithook(_guard)
del _guard
_path = sys.argv[1]
sys.argv = sys.argv[1:]
with open(_path, encoding="utf-8") as _f:
    _code = compile(_f.read(), _path, "exec")
exec(_code, {"__name__": "__main__", "__file__": _path, "__builtins__": __builtins__})
'''

STDERR_LIMIT = 16 * 1024 * 1024  # bytes a program may write to stderr (and any file) before SIGXFSZ


@dataclass(frozen=True)
class ExecResult:
    """passed: exit status 0 within the time limit. status: "passed", "failed" or "timed out".
    detail: the last line of stderr for a failure ("" when passed). seconds: wall time."""

    passed: bool
    status: str
    detail: str
    seconds: float


def check_program(prompt: str, middle: str, suffix: str, test: str, entry_point: str) -> str:
    """The HumanEval-Infilling check program (openai/human-eval-infilling execution.py)."""
    return prompt + middle + suffix + "\n" + test + "\n" + f"check({entry_point})"


def run_program(source: str, timeout_s: float = 5.0, memory_mb: int = 1024,
                wall_timeout_s: float | None = None) -> ExecResult:
    """Execute `source` as a Python program under the restrictions above.

    timeout_s: CPU seconds the program may use. wall_timeout_s: wall-clock limit, by default 4 * timeout_s + 5
    so that a busy machine does not fail honest programs while a sleeping one is still stopped.
    """
    if timeout_s <= 0 or memory_mb <= 0 or (wall_timeout_s is not None and wall_timeout_s <= 0):
        raise ValueError(f"limits must be positive; got timeout_s={timeout_s}, memory_mb={memory_mb}, "
                         f"wall_timeout_s={wall_timeout_s}")
    wall = 4 * timeout_s + 5 if wall_timeout_s is None else wall_timeout_s
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="codila-exec-") as tmp:
        program = Path(tmp) / "program.py"
        program.write_text(source, encoding="utf-8")
        stderr_path = Path(tmp) / "stderr.txt"
        env = {"PATH": os.defpath, "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
        command = [*network_isolation(), sys.executable, "-I", "-c", _BOOTSTRAP, str(program)]
        with open(stderr_path, "wb") as stderr:
            proc = subprocess.Popen(command, cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
                                    preexec_fn=_limits(timeout_s, memory_mb))
            try:
                code = proc.wait(timeout=wall)
            except subprocess.TimeoutExpired:
                return ExecResult(False, "timed out", f"no exit within {wall:g}s", time.perf_counter() - started)
            finally:
                _kill_group(proc)  # on time-out, and any children it left behind
        seconds = time.perf_counter() - started
        if code == 0:
            return ExecResult(True, "passed", "", seconds)
        if code in (-signal.SIGXCPU, -signal.SIGKILL):
            return ExecResult(False, "timed out", f"over {timeout_s:g} CPU seconds", seconds)
        return ExecResult(False, "failed", _last_line(stderr_path) or f"exit status {code}", seconds)


@cache
def network_isolation() -> tuple[str, ...]:
    """The command prefix that runs a program in an empty network namespace here, or () if none works."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    for prefix in ((unshare, "-n"), (unshare, "-rn")):
        try:
            probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return prefix
    return ()


def _limits(timeout_s: float, memory_mb: int):
    def apply() -> None:
        cpu = math.ceil(timeout_s)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU at the soft limit, SIGKILL after
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
        resource.setrlimit(resource.RLIMIT_FSIZE, (STDERR_LIMIT, STDERR_LIMIT))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _last_line(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 4096))
        lines = f.read().decode("utf-8", "replace").strip().splitlines()
    return lines[-1][:300] if lines else ""
