"""End to end: `python -m benchmarks.infill` as a subprocess on the tiny models."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULT_KEYS = {"decoder", "syntax_ok", "exact_match", "pass_at_1", "nfe_per_token", "tokens_per_second",
               "mean_latency_ms", "p95_latency_ms"}
TASKS = [
    {"task_id": "test/0", "prompt": "def return1():\n", "suffix": "1", "canonical_solution": "    return ",
     "test": "def check(candidate):\n    assert candidate() == 1", "entry_point": "return1"},
    {"task_id": "t/1", "prompt": "def add(a, b):\n    ", "suffix": "\n", "canonical_solution": "return a + b"},
    {"task_id": "t/2", "prompt": "for i in range(10):\n    ", "suffix": "\n", "canonical_solution": "print(i)"},
    {"task_id": "t/3", "prompt": "x = ", "suffix": "\n", "canonical_solution": "1"},
]


def _harness(args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return [sys.executable, "-m", "benchmarks.infill", *args], dict(cwd=ROOT, env=env, **kw)


def _progress_at_least(stderr: str, done: int, total: int = 200) -> bool:
    return any(int(n) >= done for n in re.findall(rf"\| *(\d+)/{total} \[", stderr))


def _task_file(tmp_path, tasks=TASKS):
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(t) + "\n" for t in tasks))
    return path


@pytest.mark.slow
def test_harness_runs_three_tasks_and_writes_the_report(tmp_path, tiny_model_dirs):
    dlm, ar = tiny_model_dirs
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    decoders = ["dlm:k=1", "codila:b=2", "codila:b=2,tau=0.5", "codila-top1:b=2", "codila:b=2,budget_ms=200",
                "preset:fast,max_new_tokens=6,syntax_check=off", "ar:max_new_tokens=6"]
    command, kw = _harness(["--tasks", str(_task_file(tmp_path)), "--limit", "3", "--dlm", str(dlm), "--ar", str(ar),
                            *(x for d in decoders for x in ("--decoder", d)), "--length", "fixed:6",
                            "--json", str(out), "--plot", str(png), "-q"])
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, proc.stderr[-3000:]

    report = json.loads(out.read_text())
    assert report["tasks"] == [str(tmp_path / "tasks.jsonl")]
    assert report["n"] == 3 and not report["interrupted"]
    assert report["models"] == {"dlm": str(dlm.resolve()), "ar": str(ar.resolve())}
    assert [r["decoder"] for r in report["results"]] == decoders
    for row in report["results"]:
        assert RESULT_KEYS <= row.keys()
        assert row["n"] == 3 and row["n_tested"] == 1  # only test/0 carries tests
        assert 0.0 <= row["syntax_ok"] <= 1.0 and row["pass_at_1"] in (0.0, 1.0)
        assert row["p95_latency_ms"] >= row["mean_latency_ms"] * 0 and row["tokens_per_second"] >= 0
    assert {s["max_new_tokens"] for s in report["samples"]} == {6}
    editor = report["decoders"]["preset:fast,max_new_tokens=6,syntax_check=off"]
    assert editor["pipeline"] == "lsp_server.pipeline.complete" and editor["settings"]["preset"] == "fast"
    assert editor["block_size"] == 8 and "max_new_tokens" in report["decoders"]["dlm:k=1"]
    assert len(report["samples"]) == 3 * len(decoders)
    static = next(r for r in report["results"] if r["decoder"] == "codila:b=2")
    assert static["nfe_per_token"] == pytest.approx(0.5)  # static B=2: one DLM forward per 2 positions
    for decoder in decoders:  # every decoder appears as a row of the table
        assert decoder in proc.stdout
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args, message", [
    (["--decoder", "dlm:x=1"], "unknown key 'x'"),
    (["--decoder", "dlm:k=1", "--length", "fixed:0"], "fixed:N"),
    (["--decoder", "dlm:k=1", "--decoder", "dlm:k=1"], "given twice"),
    (["--decoder", "dlm:k=1", "--limit", "0"], "--limit must be at least 1"),
])
def test_harness_refuses_bad_input_before_loading_models(tmp_path, capsys, monkeypatch, args, message):
    from benchmarks import infill

    monkeypatch.setattr(infill, "load_models_for", lambda args: pytest.fail("models loaded despite bad input"))
    with pytest.raises(SystemExit) as exit_:
        infill.main(["--tasks", str(_task_file(tmp_path)), *args])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_harness_reports_a_missing_model_folder(tmp_path, capsys):
    from benchmarks import infill

    with pytest.raises(SystemExit) as exit_:
        infill.main(["--tasks", str(_task_file(tmp_path)), "--decoder", "dlm:k=1", "--dlm", str(tmp_path / "nope")])
    assert exit_.value.code == 2 and "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_ctrl_c_reports_and_writes_what_finished(tmp_path, tiny_model_dirs):
    dlm, ar = tiny_model_dirs
    # far more work than the test needs (2,000 tasks, ~40 s): on a loaded machine the reader can lag the
    # harness by seconds, and with 200 tasks (4 s) the run sometimes ended before the interrupt arrived
    many = [{**TASKS[1], "task_id": f"t/{i}"} for i in range(2000)]
    out = tmp_path / "partial.json"
    command, kw = _harness(["--tasks", str(_task_file(tmp_path, many)), "--dlm", str(dlm), "--ar", str(ar),
                            "--decoder", "dlm:k=1", "--length", "fixed:8", "--json", str(out)])
    # SIGINT ignored in the child, as in a run started as a background job (bash without job control): the
    # harness installs its own handler, so Ctrl-C / kill -INT still stops it with what finished
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN), **kw)
    try:
        seen = ""
        deadline = time.monotonic() + 300
        # the progress bar: wait until it shows 4 decodes (the 4th task's own bookkeeping may still be running
        # when the interrupt lands, so 3 tasks are certainly done)
        while not _progress_at_least(seen[-300:], 4, total=2000) and time.monotonic() < deadline:
            seen += proc.stderr.read(1)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["interrupted"] and 3 <= report["n"] < 2000
    assert report["results"][0]["n"] == report["n"] == len(report["samples"])
    assert "interrupted" in seen + stderr and "dlm:k=1" in stdout


@pytest.mark.slow
def test_server_latency_reports_latency_overhead_and_the_servers_memory(tmp_path):
    out = tmp_path / "latency.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.server_latency", "--tiny", "--threads", "1",
                           "--requests", "3", "--max-new-tokens", "4", "--context-tokens", "64", "--json", str(out),
                           "--server-log", str(tmp_path / "server.log")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["requests"] == 3 and sum(report["outcomes"].values()) == 3
    e2e, overhead = report["end_to_end_ms"], report["server_overhead_ms"]
    assert 0 < e2e["p50"] <= e2e["p95"] and 0 <= overhead["p50"] <= e2e["p95"]
    if sys.platform == "linux":  # a Python process with torch and a model loaded: tens to hundreds of MB
        memory = report["server_memory_mb"]
        assert 50 < memory["rss"] <= memory["peak"] < 4096
