"""Running a task's tests against a generated middle, for real, in a separate restricted process.

The program is the HumanEval-Infilling one: prompt + middle + suffix + "\\n" + test + "\\n" + check(entry_point).
A task whose entry_point is `module:NAME` tests a whole standard-library module instead (our own task sets:
prompt and suffix are only the editor's context around the gap, the module is too long to carry). Its
program is MODULE_RUNTIME, then `MIDDLE = <the middle>`, then the test, then `check(sys.modules[NAME])`; the
test calls the runtime's three functions:
  - install_module(NAME, FILE, SHA256, FIRST, LAST): the interpreter's own FILE (checked against the sha256
    the task was cut from) with lines FIRST..LAST replaced by MIDDLE at their indentation, imported as NAME:
    every later import of NAME, a fresh one included, gets this source;
  - import_tests(TEST_NAME, TEST_FILE, SHA256): the standard library's own test module (Lib/test, checked);
  - run_tests(TESTS, ["Class.test_method", ...]): those unittest tests; an AssertionError unless all pass
    (a skipped test fails: it checked nothing).
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
# the program is the __main__ module, as with `python program.py` (pickle and unittest look classes up there)
_main = type(sys)("__main__")
_main.__file__, _main.__builtins__ = _path, __builtins__
sys.modules["__main__"] = _main
exec(_code, _main.__dict__)
'''

# The runtime of `module:NAME` tasks (see the module docstring); nothing in it runs until the test calls it.
MODULE_RUNTIME = r"""
import sys
import importlib as _importlib
import importlib.abc as _importlib_abc
import importlib.util as _importlib_util


def _stdlib_file(file, sha256, what):
    import hashlib, os, sysconfig
    path = os.path.join(sysconfig.get_paths()["stdlib"], file)
    if not os.path.isfile(path):
        raise RuntimeError(f"{what} {path} is missing: this task needs the Python it was made with, with "
                           "its test package (Debian, Ubuntu: the libpython3.X-testsuite package)")
    with open(path, "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise RuntimeError(f"{path} is not the file this task was cut from (its sha256 differs): "
                           "run the task set made for this Python version")
    return path, data.decode("utf-8")


class _Source(_importlib_abc.MetaPathFinder, _importlib_abc.Loader):
    # serves one module from a source text, ahead of the standard import system
    def __init__(self, name, path, source):
        self.name, self.path, self.source = name, path, source

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        package = self.path.endswith("__init__.py")
        spec = _importlib_util.spec_from_loader(fullname, self, origin=self.path, is_package=package)
        if package:
            spec.submodule_search_locations = [self.path.rpartition("/")[0]]
        spec.has_location = True
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.__file__ = self.path
        exec(compile(self.source, self.path, "exec"), module.__dict__)

    def get_source(self, fullname):
        return self.source


def install_module(name, file, sha256, first=None, last=None):
    path, source = _stdlib_file(file, sha256, "module")
    if first is not None:  # lines first..last (1-based) become MIDDLE, at the first line's indentation
        lines = source.splitlines(keepends=True)
        indent = lines[first - 1][:len(lines[first - 1]) - len(lines[first - 1].lstrip())]
        lines[first - 1:last] = [indent + MIDDLE + "\n"]
        source = "".join(lines)
    sys.meta_path.insert(0, _Source(name, path, source))
    sys.modules.pop(name, None)
    return _importlib.import_module(name)


def import_tests(name, file, sha256):
    import os
    path, _ = _stdlib_file(file, sha256, "test module")
    module = _importlib.import_module(name)
    if os.path.realpath(module.__file__) != os.path.realpath(path):
        raise RuntimeError(f"{name} was imported from {module.__file__}, not from {path}")
    return module


def run_tests(module, names):
    import unittest
    loader = unittest.TestLoader()
    suite = unittest.TestSuite(loader.loadTestsFromName(name, module) for name in names)
    result = unittest.TestResult()
    suite.run(result)
    problems = [f"{test.id()}: {trace.strip().splitlines()[-1]}" for test, trace in result.failures + result.errors]
    problems += [f"{test.id()}: skipped ({why})" for test, why in result.skipped]
    problems += [f"{test.id()}: unexpected success" for test in result.unexpectedSuccesses]
    if problems or result.testsRun != len(names):
        raise AssertionError(f"{len(problems)} problem(s) in {result.testsRun} of {len(names)} tests; first: "
                             + (problems[0] if problems else "not every test ran"))
"""
MODULE_ENTRY = "module:"  # entry_point prefix of a task that tests a whole module

STDERR_LIMIT = 16 * 1024 * 1024  # bytes a program may write to stderr (and any file) before SIGXFSZ


@dataclass(frozen=True)
class ExecResult:
    """passed: exit status 0 within the time limit. status: "passed", "failed" or "timed out".
    detail: the last line of stderr for a failure ("" when passed). seconds: wall time. cpu_seconds: the
    program's user + system CPU time (what it costs on an idle machine; 0 when it timed out on the wall clock).
    output: the text of run_program's `output_file` when the program wrote it ("" otherwise)."""

    passed: bool
    status: str
    detail: str
    seconds: float
    output: str = ""
    cpu_seconds: float = 0.0


def check_program(prompt: str, middle: str, suffix: str, test: str, entry_point: str) -> str:
    """The HumanEval-Infilling check program (openai/human-eval-infilling execution.py); for an entry_point
    `module:NAME` the module-test program described at the top of this file (prompt and suffix unused)."""
    if entry_point.startswith(MODULE_ENTRY):
        name = entry_point.removeprefix(MODULE_ENTRY)
        return MODULE_RUNTIME + f"MIDDLE = {middle!r}\n" + test + "\n" + f"check(sys.modules[{name!r}])\n"
    return prompt + middle + suffix + "\n" + test + "\n" + f"check({entry_point})"


def run_program(source: str, timeout_s: float = 5.0, memory_mb: int = 1024,
                wall_timeout_s: float | None = None, output_file: str | None = None) -> ExecResult:
    """Execute `source` as a Python program under the restrictions above.

    timeout_s: CPU seconds the program may use. wall_timeout_s: wall-clock limit, by default 4 * timeout_s + 5
    so that a busy machine does not fail honest programs while a sleeping one is still stopped.
    output_file: a file name the program may write in its working directory; its text is returned (stdout
    is discarded: the code under test prints there).
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
                code, cpu = _wait(proc, wall)
            except subprocess.TimeoutExpired:
                return ExecResult(False, "timed out", f"no exit within {wall:g}s", time.perf_counter() - started)
            finally:
                _kill_group(proc)  # on time-out, and any children it left behind
        seconds = time.perf_counter() - started
        output = Path(tmp, output_file) if output_file else None
        text = output.read_text(encoding="utf-8") if output is not None and output.is_file() else ""
        if code == 0:
            return ExecResult(True, "passed", "", seconds, text, cpu)
        if code in (-signal.SIGXCPU, -signal.SIGKILL):
            return ExecResult(False, "timed out", f"over {timeout_s:g} CPU seconds", seconds, text, cpu)
        return ExecResult(False, "failed", _last_line(stderr_path) or f"exit status {code}", seconds, text, cpu)


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


def _wait(proc: subprocess.Popen, timeout: float) -> tuple[int, float]:
    """Popen.wait(timeout) that also returns the child's CPU seconds: (exit code, -signal if killed; CPU)."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen.wait() returns it
            return proc.returncode, usage.ru_utime + usage.ru_stime
        if time.monotonic() >= deadline:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        time.sleep(delay)
        delay = min(2 * delay, 0.02)


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
