"""benchmarks.dlm_middles: a DLM alone on the benchmark's reference middles, in the harness's oracle canvas."""

import json

import pytest
import torch

import benchmarks.dlm_middles as ev
from benchmarks.tasks import load_tasks
from decoding.models import load_dlm


def test_task_middles_are_scored_at_their_own_length_in_the_harness_canvas(tiny_model_dirs, tmp_path, monkeypatch,
                                                                            capsys):

    records = [{"task_id": "a", "prompt": "def f(x):\n    ", "canonical_solution": "return x + 1", "suffix": "\n"},
               {"task_id": "b", "prompt": "y = [", "canonical_solution": "1, 2", "suffix": "]\n"}]
    tasks_file = tmp_path / "tasks.jsonl"
    tasks_file.write_text("".join(json.dumps(r) + "\n" for r in records))
    dlm = load_dlm(tiny_model_dirs[0], device="cpu", dtype="float32")
    vocab = dlm.model.config.vocab_size
    encode = dlm.tokenizer.encode
    middles = [encode(r["canonical_solution"], add_special_tokens=False) for r in records]
    tasks = load_tasks([tasks_file])
    seen = []

    def eos_everywhere(_, ids):
        seen.append(ids[0].tolist())
        return torch.zeros(*ids.shape, vocab).index_fill(-1, torch.tensor([dlm.eos_id]), 50.0)

    monkeypatch.setattr(ev, "dlm_logits", eos_everywhere)
    scores = ev.middle_scores(dlm, tasks)
    assert scores["n"] == sum(map(len, middles))
    assert scores["eos"] == 1.0 and scores["acc"] == 0.0 and scores["p_eos"] == pytest.approx(1.0)
    # the canvas: the prompt, one mask per reference token, the suffix
    prompt = encode(records[1]["prompt"], add_special_tokens=False)
    assert seen[1] == prompt + [dlm.mask_id] * len(middles[1]) + encode("]\n", add_special_tokens=False)

    def truth(_, ids):  # certain of the reference token under each mask
        row = ids[0].tolist()
        start = row.index(dlm.mask_id)
        target = torch.tensor(row)
        target[start:start + row.count(dlm.mask_id)] = torch.tensor(middles[len(seen)])
        seen.append(row)
        return torch.zeros(1, len(row), vocab).scatter(-1, target.view(1, -1, 1), 50.0)

    seen.clear()
    monkeypatch.setattr(ev, "dlm_logits", truth)
    scores = ev.middle_scores(dlm, tasks)
    assert scores["acc"] == 1.0 and scores["eos"] == 0.0 and scores["p_eos"] < 1e-6
    with pytest.raises(ValueError, match="does not fit"):
        ev.middle_scores(dlm, tasks, max_context=2)

    monkeypatch.undo()
    assert ev.main([str(tiny_model_dirs[0]), "--tasks", str(tasks_file), "--limit", "1", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["middles"]["n"] == len(middles[0])  # --limit 1: the first task only
    with pytest.raises(SystemExit) as exit_info:
        ev.main([str(tiny_model_dirs[0]), "--tasks", str(tmp_path / "missing.jsonl")])
    assert exit_info.value.code == 2
