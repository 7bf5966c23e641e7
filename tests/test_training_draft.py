"""training.draft: the drafting adapter trains, checkpoints, resumes where it stopped, and exports as the
adapter folder the default model ships (loaded back as a drafting causal-context DLM)."""

import json

import pytest

from decoding import infill, load_models, preset
from training.config import DraftConfig
from training.draft import main
from training.tiny_models import build_tiny_fim_base


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return build_tiny_fim_base(tmp_path_factory.mktemp("fim-base"))


def _flags(base, run, **more):
    flags = {"base": base, "output": run, "batch-size": 1, "eval-every": 1, "eval-samples": 2, "save-every": 1,
             "prefix-tokens": 16, "suffix-tokens": 4, "middle-tokens": 12, "block-sizes": "2,4", "threads": 1,
             **more}
    return [f"--{k}={v}" for k, v in flags.items()]


def test_a_run_trains_resumes_and_exports_a_drafting_adapter(base, tmp_path):
    run = tmp_path / "run"
    main(_flags(base, run, **{"max-steps": 2}))
    curve = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in curve] == [0, 1, 2] and "accepted_per_pass" in curve[-1]
    with pytest.raises(SystemExit, match="--no-resume"):  # a run never overwrites another's checkpoint
        main(_flags(base, run, **{"max-steps": 3}) + ["--no-resume"])
    main(_flags(base, run, **{"max-steps": 3}))  # goes on from step 2
    assert [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()][-1] == 3

    out = tmp_path / "dlm"
    main(_flags(base, run) + [f"--export={out}"])
    config = json.loads((out / "config.json").read_text())
    assert config["codila_dlm_layout"] == "fim" and config["codila_training"]["steps"] == 3
    models = load_models(out, device="cpu", dtype="float32")
    assert models.dlm.fim.drafts
    ar = infill(models, "def add(a, b):\n    ", "\n", preset("balanced", method="ar", max_new_tokens=6))
    verified = infill(models, "def add(a, b):\n    ", "\n", preset("balanced", max_new_tokens=6))
    assert verified.tokens == ar.tokens


def test_bad_values_are_refused_before_anything_loads():
    with pytest.raises(ValueError, match="middle_tokens"):
        DraftConfig(output="o", middle_tokens=5, block_sizes=(4, 8))
    with pytest.raises(ValueError, match="block_size"):
        DraftConfig(output="o", block_sizes=(32,))
