"""benchmarks/execution.py really runs the tests, in a restricted subprocess."""

import hashlib
import socket
import sysconfig
import time
from pathlib import Path

import pytest

from benchmarks.execution import check_program, network_isolation, run_program


def test_a_passing_program_passes():
    result = run_program("def f():\n    return 41 + 1\nassert f() == 42\n")
    assert (result.passed, result.status, result.detail) == (True, "passed", "")


def test_a_failing_program_fails_and_says_why():
    result = run_program("assert sum([1, 2]) == 4, 'wrong sum'\n")
    assert (result.passed, result.status) == (False, "failed")
    assert result.detail == "AssertionError: wrong sum"


def test_a_syntax_error_fails():
    result = run_program("def f(:\n")
    assert not result.passed and "SyntaxError" in result.detail


def test_an_endless_computation_is_stopped_by_its_cpu_limit():
    result = run_program("while True:\n    pass\n", timeout_s=1.0, wall_timeout_s=120)
    assert (result.passed, result.status, result.detail) == (False, "timed out", "over 1 CPU seconds")


def test_cpu_time_counts_computing_not_waiting():
    busy = run_program("x = 0\nfor i in range(3_000_000):\n    x += i\n")
    sleeping = run_program("import time\ntime.sleep(1.0)\n")
    assert busy.passed and sleeping.passed
    assert busy.cpu_seconds > 0 and sleeping.seconds >= 1.0
    assert sleeping.cpu_seconds < sleeping.seconds - 0.5  # the second of sleep is not CPU time


def test_a_program_that_sleeps_forever_is_stopped_by_the_wall_clock():
    started = time.perf_counter()
    result = run_program("import time\nwhile True:\n    time.sleep(0.01)\n", timeout_s=5.0, wall_timeout_s=1.0)
    assert (result.passed, result.status) == (False, "timed out")
    assert time.perf_counter() - started < 30


def test_a_program_cannot_reach_the_network():
    # a server on this machine's loopback: reachable by any unrestricted process, so a refusal is the sandbox
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        server.settimeout(0.5)
        result = run_program(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3)\n")
        with pytest.raises(socket.timeout):
            server.accept()
    assert not result.passed
    assert "PermissionError" in result.detail or "OSError" in result.detail


def test_the_network_namespace_alone_blocks_the_network_where_available():
    prefix = network_isolation()
    if not prefix:
        pytest.skip("unshare cannot create a network namespace here; the audit hook is the only guard")
    import subprocess
    import sys

    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3)"
        probe = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, timeout=30)
    assert probe.returncode != 0


def test_a_program_cannot_start_other_programs():
    result = run_program("import subprocess\nsubprocess.run(['true'])\n")
    assert not result.passed and "subprocess.Popen is disabled" in result.detail


def test_a_program_runs_in_its_own_empty_directory():
    result = run_program("import os\n"
                         "assert sorted(os.listdir('.')) == ['program.py', 'stderr.txt'], os.listdir('.')\n"
                         "assert os.environ['HOME'] == os.getcwd()\n")
    assert result.passed, result.detail


def test_check_program_follows_human_eval_infilling():
    program = check_program("def return1():\n", "    return ", "1", "def check(candidate):\n    assert candidate() == 1",
                            "return1")
    assert program == "def return1():\n    return 1\ndef check(candidate):\n    assert candidate() == 1\ncheck(return1)"
    assert run_program(program).passed
    assert not run_program(check_program("def return1():\n", "    return 2+", "1",
                                         "def check(candidate):\n    assert candidate() == 1", "return1")).passed


# --- tasks that test a whole module (entry_point "module:NAME"): colorsys and its own tests ---------------

STDLIB = Path(sysconfig.get_paths()["stdlib"])
YIQ_LINE = "    i = 0.74*(r-y) - 0.27*(b-y)\n"  # a statement of colorsys.rgb_to_yiq


def _sha256(rel: str) -> str:
    return hashlib.sha256((STDLIB / rel).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def yiq_gap() -> int:
    """The line number of YIQ_LINE in this Python's colorsys.py (its test module must exist too)."""
    if not (STDLIB / "test" / "test_colorsys.py").is_file():
        pytest.skip("this Python has no test package (Lib/test)")
    lines = (STDLIB / "colorsys.py").read_text().splitlines(keepends=True)
    if YIQ_LINE not in lines:
        pytest.skip("colorsys.rgb_to_yiq differs in this Python")
    return lines.index(YIQ_LINE) + 1


def _colorsys_program(middle: str, line: int, check: str | None = None, module_sha: str | None = None) -> str:
    test = (f"install_module('colorsys', 'colorsys.py', {module_sha or _sha256('colorsys.py')!r}, {line}, {line})\n"
            f"tests = import_tests('test.test_colorsys', 'test/test_colorsys.py', "
            f"{_sha256('test/test_colorsys.py')!r})\n"
            + (check or "def check(candidate):\n"
                        "    run_tests(tests, ['ColorsysTest.test_yiq_values', 'ColorsysTest.test_yiq_roundtrip'])\n"))
    return check_program("ignored prompt", middle, "ignored suffix", test, "module:colorsys")


def test_a_module_task_runs_the_module_with_the_middle_under_its_own_tests(yiq_gap):
    assert run_program(_colorsys_program("i = 0.74*(r-y) - 0.27*(b-y)", yiq_gap)).passed
    missing = run_program(_colorsys_program("pass", yiq_gap))
    assert not missing.passed and "test_yiq" in missing.detail and "NameError" in missing.detail
    wrong = run_program(_colorsys_program("i = 0.74*(r-y) + 0.27*(b-y)", yiq_gap))
    assert not wrong.passed and "AssertionError" in wrong.detail


def test_check_program_of_a_module_task_uses_the_middle_not_prompt_and_suffix(yiq_gap):
    program = _colorsys_program("i = 1", yiq_gap)
    assert "ignored" not in program and "MIDDLE = 'i = 1'\n" in program
    assert program.endswith("check(sys.modules['colorsys'])\n")


def test_every_import_of_the_module_gets_the_middle_a_fresh_one_too(yiq_gap):
    check = ("def check(candidate):\n"
             "    import importlib, sys\n"
             "    del sys.modules['colorsys']\n"
             "    fresh = importlib.import_module('colorsys')\n"
             "    assert fresh is not candidate and fresh.rgb_to_yiq(0.0, 0.0, 0.0)[1] == 12345\n")
    assert run_program(_colorsys_program("i = 12345", yiq_gap, check)).passed


def test_a_module_task_refuses_a_file_other_than_the_one_it_was_cut_from(yiq_gap):
    result = run_program(_colorsys_program("i = 0.74*(r-y) - 0.27*(b-y)", yiq_gap, module_sha="0" * 64))
    assert not result.passed and "is not the file this task was cut from" in result.detail


def test_a_module_task_without_the_test_package_says_what_is_missing():
    test = ("tests = import_tests('test.no_such_test', 'test/no_such_test.py', '0')\n"
            "def check(candidate):\n    pass\n")
    result = run_program(check_program("", "", "", test, "module:sys"))
    assert not result.passed and "test/no_such_test.py is missing" in result.detail


def test_run_tests_fails_on_a_skipped_test_and_on_a_failing_one():
    program = ("import unittest\n"
               "class T(unittest.TestCase):\n"
               "    def test_ok(self):\n        pass\n"
               "    @unittest.skip('not here')\n"
               "    def test_skipped(self):\n        pass\n"
               "    def test_wrong(self):\n        self.assertEqual(1, 2)\n"
               "def check(candidate):\n    run_tests(sys.modules['__main__'], NAMES)\n")
    def run(names):
        return run_program(check_program("", "", "", f"NAMES = {names!r}\n" + program, "module:unittest"))

    assert run(["T.test_ok"]).passed
    skipped = run(["T.test_ok", "T.test_skipped"])
    assert not skipped.passed and "skipped (not here)" in skipped.detail
    wrong = run(["T.test_wrong"])
    assert not wrong.passed and "AssertionError: 1 != 2" in wrong.detail


def test_the_program_is_the_main_module():
    # as with `python program.py`: pickle (and unittest's module fixtures) find the program's classes there
    result = run_program("import pickle, sys\n"
                         "class Point:\n    pass\n"
                         "assert sys.modules['__main__'].Point is Point\n"
                         "assert type(pickle.loads(pickle.dumps(Point()))) is Point\n")
    assert result.passed, result.detail


def test_a_program_can_hand_back_a_file():
    result = run_program("open('out.txt', 'w').write('hello')\n", output_file="out.txt")
    assert (result.passed, result.output) == (True, "hello")
    assert run_program("pass\n", output_file="out.txt").output == ""
