"""`python -m benchmarks.tune_tau`: the rule that picks an executor's dynamic threshold, and writing it."""

import json
import shutil

import pytest

from benchmarks import tune_tau
from decoding.models import load_ar


def _row(metric, nfe):
    return {"syntax_ok": metric, "similarity": metric, "exact_match": 0.0, "pass_at_1": None, "nfe_per_token": nfe}


def test_the_fewest_dlm_passes_among_taus_that_keep_the_quality():
    base = _row(0.20, 1.0)
    sweep = {3.0: _row(0.25, 0.60), 5.0: _row(0.18, 0.35), 6.0: _row(0.16, 0.27), 7.0: _row(0.17, 0.27)}
    # 3.0 is too slow (> 0.5), 6.0 falls 4 points below dlm:k=1; 7.0 is as fast and within 3 points
    assert tune_tau.choose_tau(base, sweep, "syntax_ok", 0.03, 0.5) == 7.0
    assert tune_tau.choose_tau(base, sweep, "syntax_ok", 0.0, 0.5) is None
    assert tune_tau.choose_tau(base, sweep, "syntax_ok", 0.05, 0.5) == 7.0  # equally fast: the better metric
    assert tune_tau.choose_tau(base, {5.0: _row(0.18, 0.35), 6.0: _row(0.20, 0.35)}, "syntax_ok", 0.03, 0.5) == 6.0
    # the same result at several thresholds: the strictest of them
    assert tune_tau.choose_tau(base, {6.0: _row(0.45, 0.256), 7.0: _row(0.45, 0.256), 8.0: _row(0.45, 0.256)},
                               "syntax_ok", 0.03, 0.5) == 6.0
    assert tune_tau.choose_tau(base, sweep, "pass_at_1", 0.03, 0.5) is None  # no task had tests


def test_tau_lists_are_checked_before_any_model_loads(capsys, monkeypatch):
    monkeypatch.setattr(tune_tau, "load_models_for", lambda args: pytest.fail("models loaded despite bad input"))
    for bad in ("a,b", ",", "0", "5,-1", "101"):
        with pytest.raises(SystemExit) as exit_info:
            tune_tau.main(["--taus", bad])
        assert exit_info.value.code == 2
        assert "--taus" in capsys.readouterr().err


@pytest.mark.slow
def test_sweep_writes_the_chosen_tau_into_the_ar_config(tmp_path, tiny_model_dirs, capsys):
    dlm, ar = tiny_model_dirs
    mine = tmp_path / "ar"
    shutil.copytree(ar, mine)
    before = json.loads((mine / "config.json").read_text())
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"task_id": f"t/{i}", "prompt": "def f(a):\n    ", "suffix": "\n",
                                         "canonical_solution": f"return a + {i}"}) + "\n" for i in range(2)))
    common = ["--tasks", str(tasks), "--dlm", str(dlm), "--ar", str(mine), "--taus", "0.5,90"]

    # a bar nothing can meet: reported, exit 1, the config untouched
    assert tune_tau.main([*common, "--max-nfe", "0.01", "--write"]) == 1
    assert "nothing written" in capsys.readouterr().out
    assert json.loads((mine / "config.json").read_text()) == before

    out = tmp_path / "sweep.json"
    assert tune_tau.main([*common, "--max-nfe", "1.0", "--tolerance", "1.0", "--write", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["n"] == 2 and [r["decoder"] for r in report["results"]] == ["dlm:k=1", "codila:b=4,tau=0.5",
                                                                            "codila:b=4,tau=90"]
    # at 90 nats every block prefix passes: the fewest DLM passes, so it is the one chosen
    assert report["chosen"] == 90.0
    after = json.loads((mine / "config.json").read_text())
    assert after == {**before, "codila_tau": 90.0}
    assert load_ar(mine).tau == 90.0
