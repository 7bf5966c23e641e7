"""python -m decoding as a user runs it: a subprocess against the tiny models."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cli(args, stdin=""):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "decoding", *args], input=stdin, capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)


def test_json_output_is_one_object_with_text_and_stats(tiny_model_dirs, tmp_path):
    dlm, ar = tiny_model_dirs
    (tmp_path / "before.py").write_text("def add(a, b):\n    ")
    (tmp_path / "after.py").write_text("\n\nprint(add(1, 2))\n")
    out = _cli(["--dlm", str(dlm), "--ar", str(ar), "--device", "cpu", "--prefix-file", str(tmp_path / "before.py"),
                "--suffix-file", str(tmp_path / "after.py"), "--preset", "fast", "--max-new-tokens", "16",
                "--mode", "static", "--no-eos-casting", "--confidence", "none", "--json"])
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)  # the whole of stdout is one JSON object
    assert set(result) == {"text", "stats", "config"}
    assert isinstance(result["text"], str)
    stats = result["stats"]
    assert {"dlm_forwards", "ar_calls", "tokens", "iterations", "seconds"} <= set(stats)
    # preset fast (B = 8, dual cache) with the flags on top: static, 16 positions -> 2 blocks
    assert result["config"]["block_size"] == 8 and result["config"]["kv_cache"] == "dual"
    assert stats["iterations"] == 2 and stats["committed_per_iteration"] == [8, 8] and stats["ar_calls"] == 2


def test_stdin_prefix_and_plain_output(tiny_model_dirs, monkeypatch, capsys):
    import io

    from decoding.__main__ import main

    dlm, ar = tiny_model_dirs
    monkeypatch.setattr("sys.stdin", io.StringIO("x = "))
    assert main(["--dlm", str(dlm), "--ar", str(ar), "--device", "cpu", "--prefix-file", "-",
                 "--max-new-tokens", "4", "--method", "dlm", "--no-eos-casting"]) == 0
    out = capsys.readouterr()
    assert "tokens in" in out.err and "4 iterations, 4 DLM forwards, 0 AR calls" in out.err
    assert out.out.endswith("\n") and len(out.out) >= 1


def test_bad_settings_and_folders_exit_2_with_the_reason(tiny_model_dirs, capsys):
    import pytest

    from decoding.__main__ import main

    dlm, ar = tiny_model_dirs
    for args, reason in ((["--tau", "-1"], "tau must be between"), (["--deadline-ms", "soon"], "is not a valid number"),
                         (["--dlm", "/nonexistent/dlm", "--ar", str(ar)], "does not exist")):
        with pytest.raises(SystemExit) as exit_:
            main(args + ["--device", "cpu", "--prefix", "x"])
        assert exit_.value.code == 2 and reason in capsys.readouterr().err
