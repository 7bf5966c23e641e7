"""training.executor: the default model's executor learns from the DLM's own marginals, checkpoints, resumes where
it stopped, and exports the folder decoding.models loads back as a slice of the DLM's base."""

import json
import random

import pytest
import torch

from decoding import infill, load_models, preset
from training.config import ExecutorConfig
from training.executor import block_batch, executor_loss, load, main
from training.tiny_models import build_tiny_fim_dlm


@pytest.fixture(scope="module")
def dlm(tmp_path_factory):
    return build_tiny_fim_dlm(tmp_path_factory.mktemp("fim"))[1]


def _flags(dlm, run, **more):
    flags = {"dlm": dlm, "output": run, "batch-size": 1, "eval-every": 1, "eval-samples": 2, "save-every": 1,
             "prefix-tokens": 16, "suffix-tokens": 4, "middle-tokens": 8, "layers": 1, "block-size": 4,
             "blocks": 2, "threads": 1, **more}
    return [f"--{k}={v}" for k, v in flags.items()]


def test_the_executor_learns_the_blocks_behind_the_frontier(dlm, tmp_path):
    """Overfitting one sample's blocks: the loss on the B - 1 positions behind the frontier falls (the tiny
    base's frozen random LM head keeps its logits near uniform, log 320 = 5.8 nats: 0.3 nats is a real fall)."""
    pair = load(ExecutorConfig(dlm=str(dlm), output=str(tmp_path), layers=1, block_size=4, lr=1e-2,
                               prefix_tokens=16, suffix_tokens=4, middle_tokens=8))
    tok = pair.dlm.tokenizer
    pre, suf, mid = pair.dlm.fim.fim_ids
    from training.draft import Sample

    sample = Sample([pre, *tok.encode("def add(a, b):\n", add_special_tokens=False), suf, mid],
                    tok.encode("    return a + b\n", add_special_tokens=False))
    rows, targets = block_batch(pair, sample, 4, 3, random.Random(0))
    assert rows.shape[:2] == targets.shape == (3, 4)
    params = [p for p in pair.ar.model.parameters() if p.requires_grad]
    assert params and all("lora_" in n for n, p in pair.ar.model.named_parameters() if p.requires_grad)
    opt = torch.optim.AdamW(params, lr=1e-2)
    dlm_before = [p.detach().clone() for p in pair.dlm.model.parameters()]
    first = float(executor_loss(pair, rows, targets).detach())
    for _ in range(30):
        loss = executor_loss(pair, rows, targets)
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert float(executor_loss(pair, rows, targets).detach()) < first - 0.3
    assert all(torch.equal(a, b) for a, b in zip(dlm_before, pair.dlm.model.parameters()))  # the DLM stays


def test_a_run_trains_resumes_and_exports_an_executor_the_decoder_loads(dlm, tmp_path):
    run = tmp_path / "run"
    main(_flags(dlm, run, **{"max-steps": 2}))
    curve = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in curve] == [0, 1, 2]
    assert {"executor_token_acc", "executor_block_exact", "dlm_token_acc", "dlm_block_exact",
            "frontier_acc"} <= set(curve[-1])
    with pytest.raises(SystemExit, match="--no-resume"):  # a run never overwrites another's checkpoint
        main(_flags(dlm, run, **{"max-steps": 3}) + ["--no-resume"])
    main(_flags(dlm, run, **{"max-steps": 3}))  # goes on from step 2
    assert [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()][-1] == 3

    out = tmp_path / "ar"
    main(_flags(dlm, run) + [f"--export={out}"])
    config = json.loads((out / "config.json").read_text())
    assert config["codila_executor_layers"] == 1 and config["codila_block_size"] == 4
    assert config["codila_boundary_tokens"] == ["<|quad_start|>", "<|quad_end|>"]
    assert config["codila_training"]["steps"] == 3
    models = load_models(dlm, out, device="cpu", dtype="float32")
    assert models.ar.block_size == 4 and models.ar.tokenizer is models.dlm.tokenizer
    embed = models.ar.model.get_base_model().model.embed_tokens.weight
    assert embed.data_ptr() == models.dlm.model.get_base_model().model.embed_tokens.weight.data_ptr()
    got = infill(models, "def add(a, b):\n    ", "\n", preset("balanced", method="codila", mode="static",
                                                             max_new_tokens=9, read_suffix=True))
    assert got.stats.ar_calls >= 1 and got.stats.dlm_forwards >= 1


def test_bad_values_are_refused_before_anything_loads():
    with pytest.raises(ValueError, match="middle_tokens"):
        ExecutorConfig(output="o", middle_tokens=3, block_size=4)
    with pytest.raises(ValueError, match="block_size"):
        ExecutorConfig(output="o", block_size=1)
    with pytest.raises(ValueError, match="boundary_tokens"):
        ExecutorConfig(output="o", boundary_tokens=("<|quad_start|>",))
