"""benchmarks/execution.py really runs the tests, in a restricted subprocess."""

import socket
import time

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
