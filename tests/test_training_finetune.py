"""The CoDiLA fine-tuning recipe: masking schedule, soft AR inputs, labels, the loop, resume."""

import dataclasses
import json
import random

import pytest
import torch
from safetensors.torch import load_file

import training.finetune_data
from decoding.models import dlm_logits, load_ar, load_tokenizer
from decoding.soft import align_probs, block_inputs
from training.corpus import stdlib_files
from training.data import Example, pad_response
from training.config import FinetuneConfig
from training.finetune import finetune, parse_args
from training.finetune_data import Dataset
from training.finetune_recipe import ar_block_batch, mask_response, sample_block_mask


def _config(tmp_path, dlm="d", ar="a", **kw):
    return FinetuneConfig(dlm=str(dlm), ar=str(ar), data=(str(tmp_path / "data.jsonl"),), output=str(tmp_path / "out"), **kw)


def _write_data(tmp_path, n=8):
    rows = [{"instruction": f"write add{i}", "output": f"def add{i}(a, b):\n    return a + b + {i}\n"} for i in range(n)]
    rows.append({"messages": [{"role": "user", "content": "say hi"}, {"role": "assistant", "content": "print('hi')"}]})
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_block_mask_probability_is_one_minus_eps_t_plus_eps():
    gen = torch.Generator().manual_seed(0)
    masks, ps = [], []
    for _ in range(400):
        mask, p = sample_block_mask(50, 0.3, 0.3, 1e-3, gen)
        masks.append(mask)
        ps.append(p)
    assert all(p == pytest.approx((1 - 1e-3) * 0.3 + 1e-3) for p in ps)
    rate = torch.stack(masks).float().mean().item()
    assert rate == pytest.approx(0.3007, abs=0.01)  # 20k Bernoulli draws: std ~0.003


def test_t_is_drawn_from_its_range():
    gen = torch.Generator().manual_seed(1)
    ps = [sample_block_mask(4, 0.2, 0.8, 1e-3, gen)[1] for _ in range(500)]
    assert min(ps) >= 0.2 * (1 - 1e-3) + 1e-3 and max(ps) <= 0.8 * (1 - 1e-3) + 1e-3
    assert min(ps) < 0.25 and max(ps) > 0.75


def test_at_least_one_block_is_always_masked():
    gen = torch.Generator().manual_seed(2)
    counts = [int(sample_block_mask(3, 0.0, 0.0, 1e-3, gen)[0].sum()) for _ in range(300)]
    assert min(counts) >= 1
    assert counts.count(1) > 290  # with p = eps the rescue block is nearly always the only one


def test_masks_are_whole_aligned_blocks_and_labels_are_minus_100_elsewhere(tmp_path):
    config = _config(tmp_path, block_size=4)
    ids = torch.arange(10, 40).reshape(1, 30)
    start, length = 5, 16
    seen_blocks = set()
    for seed in range(50):
        inputs, labels, blocks = mask_response(ids, [(start, length)], 4, 1, config, torch.Generator().manual_seed(seed))
        masked = inputs[0] == 1
        expected = torch.zeros(30, dtype=torch.bool)
        for row, lo in blocks:
            assert row == 0 and (lo - start) % 4 == 0 and start <= lo <= start + length - 4
            expected[lo:lo + 4] = True
            seen_blocks.add(lo)
        assert torch.equal(masked, expected)
        assert torch.equal(labels[0][expected], ids[0][expected])
        assert (labels[0][~expected] == -100).all()
        assert torch.equal(inputs[0][~expected], ids[0][~expected])
    assert seen_blocks == {5, 9, 13, 17}


def test_frontier_masking_trains_the_block_a_left_to_right_decoder_meets(tmp_path):
    # frontier_share 1: every row looks like scope-1 decoding in the editor: the blocks before the frontier
    # are decided text, the frontier block and all after it masked, and only the frontier block is trained
    config = _config(tmp_path, block_size=4, frontier_share=1.0)
    ids = torch.arange(10, 40).reshape(1, 30)
    start, length = 5, 16
    frontiers = set()
    for seed in range(40):
        inputs, labels, blocks = mask_response(ids, [(start, length)], 4, 1, config, torch.Generator().manual_seed(seed))
        assert len(blocks) == 1 and blocks[0][0] == 0
        lo = blocks[0][1]
        frontiers.add(lo)
        masked = torch.zeros(30, dtype=torch.bool)
        masked[lo:start + length] = True
        assert torch.equal(inputs[0] == 1, masked)
        assert torch.equal(labels[0][lo:lo + 4], ids[0][lo:lo + 4]) and int((labels[0] != -100).sum()) == 4
    assert frontiers == {5, 9, 13, 17}
    # the paper's schedule stays the default, and the share is checked
    assert _config(tmp_path).frontier_share == 0.0
    with pytest.raises(ValueError, match="frontier_share must be in"):
        _config(tmp_path, frontier_share=1.5)


def test_response_not_a_whole_number_of_blocks_is_refused(tmp_path):
    with pytest.raises(ValueError, match="multiple of the block size"):
        mask_response(torch.zeros(1, 20, dtype=torch.long), [(2, 6)], 4, 1, _config(tmp_path), torch.Generator())


def test_ar_input_is_block_inputs_of_the_dlm_marginals(tiny_models, tmp_path):
    pair, B = tiny_models, 4
    config = _config(tmp_path, block_size=B, commit_prob=0.5)
    ids = torch.randint(4, pair.dlm.vocab_size, (2, 24), generator=torch.Generator().manual_seed(3))
    inputs, labels, blocks = mask_response(ids, [(4, 16), (0, 8)], B, pair.dlm.mask_id, config,
                                           torch.Generator().manual_seed(4))
    embeds, targets = ar_block_batch(pair, inputs, labels, blocks, B)

    with torch.no_grad():
        probs = dlm_logits(pair.dlm, inputs).softmax(-1)  # (2, 24, V)
    E = pair.ar.embeddings
    assert embeds.shape == (len(blocks), 2 * B + 2, E.shape[1])
    for k, (row, lo) in enumerate(blocks):
        block = inputs[row, lo:lo + B]
        committed = torch.where(block == pair.dlm.mask_id, -1, block)
        expected = block_inputs(align_probs(probs[row, lo:lo + B][None], pair.alignment), committed[None], E,
                                pair.ar.open_id, pair.ar.close_id, pair.dlm.eos_id)[0]
        torch.testing.assert_close(embeds[k, :B + 2], expected)
        assert torch.equal(targets[k], ids[row, lo:lo + B])
        torch.testing.assert_close(embeds[k, B + 2:], E[ids[row, lo:lo + B]])  # teacher forcing
        # a committed position inside a masked block is exactly its token's embedding (one-hot marginal)
        for j in (committed >= 0).nonzero().flatten().tolist():
            torch.testing.assert_close(embeds[k, 1 + j], E[committed[j]])


def test_instruction_loss_is_on_the_response_padded_to_whole_blocks(tiny_model_dirs, tmp_path):
    _write_data(tmp_path, n=3)

    tok = load_tokenizer(tiny_model_dirs[0])
    data = Dataset(_config(tmp_path, block_size=4, val_samples=1), tok)
    items = data.train + data.val
    assert len(items) == 4 and len(data.val) == 1
    for item in items:
        ex = data.example(item, random.Random(0))
        assert ex.length % 4 == 0
        response = tok.decode(ex.ids[ex.start:ex.start + ex.length])
        prompt = tok.decode(ex.ids[:ex.start])
        assert response.rstrip("<|endoftext|>") in {f"def add{i}(a, b):\n    return a + b + {i}\n" for i in range(3)} | {"print('hi')"}
        assert prompt.startswith(("write add", "say hi"))
        assert ex.ids[ex.start + ex.length - 1] == tok.eos_token_id


def test_stdlib_data_is_the_training_split_less_the_dev_files(tiny_model_dirs, tmp_path, monkeypatch):
    read = []
    monkeypatch.setattr(training.finetune_data, "read_text", lambda path: read.append(path) or "x = 1\n")
    Dataset(dataclasses.replace(_config(tmp_path), data=("stdlib",)), load_tokenizer(tiny_model_dirs[0]))
    dev = set(stdlib_files("dev"))
    assert dev and set(read) == set(stdlib_files("train")) - dev


def test_validation_takes_at_most_a_tenth_of_a_small_dataset(tiny_model_dirs, tmp_path):
    _write_data(tmp_path, n=29)  # 30 records
    data = Dataset(_config(tmp_path, val_samples=500), load_tokenizer(tiny_model_dirs[0]))
    assert (len(data.train), len(data.val)) == (27, 3)


def test_pad_response_appends_eos_inside_the_sequence():
    ex = pad_response(Example([5, 6, 7, 8, 9, 10], 1, 3), 4, 0)
    assert ex.ids == [5, 6, 7, 8, 0, 9, 10] and (ex.start, ex.length) == (1, 4)


def test_bad_settings_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="block_size"):
        _config(tmp_path, block_size=0)
    with pytest.raises(ValueError, match="t_min"):
        _config(tmp_path, t_min=0.9, t_max=0.1)
    with pytest.raises(ValueError, match="--data"):
        FinetuneConfig(dlm="d", ar="a", data=(), output="o")
    from training.tiny_models import build_tokenizer

    tok = build_tokenizer(tmp_path / "tok")
    with pytest.raises(ValueError, match="no such file"):
        Dataset(dataclasses.replace(_config(tmp_path), data=(str(tmp_path / "missing.jsonl"),)), tok)
    (tmp_path / "data.jsonl").write_text('{"prompt": "x"}\n{"prompt": "y"}\n')
    with pytest.raises(ValueError, match="instruction"):
        Dataset(_config(tmp_path), tok)


def test_cli_defaults_are_the_paper_recipe():
    config = parse_args(["--dlm", "d", "--ar", "a", "--data", "x.jsonl", "--output", "o"])
    assert (config.block_size, config.lr, config.warmup_ratio, config.max_grad_norm, config.weight_decay) == (4, 1e-5, 0.03, 7.0, 0.0)
    assert (config.t_min, config.t_max, config.eps, config.batch_size, config.grad_accum) == (0.2, 0.8, 1e-3, 1, 8)
    assert (config.val_every, config.max_steps, config.val_samples) == (100, 32_000, 500)


def _small_run(tmp_path, tiny_model_dirs, output, **kw):
    dlm, ar = tiny_model_dirs
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "a.py").write_text("def f(x):\n    return x + 1\n\n\nclass A:\n    pass\n" * 3)
    base = dict(dlm=str(dlm), ar=str(ar), data=(str(tmp_path / "data.jsonl"), str(tmp_path / "src")),
                output=str(output), block_size=4, lr=1e-3, grad_accum=2, batch_size=2, max_steps=4,
                val_every=2, save_every=2, val_samples=2, max_length=96, budget=16, max_middle=16, threads=1)
    return FinetuneConfig(**{**base, **kw})


def test_finetune_smoke_produces_a_loadable_ar_and_json_progress(tiny_model_dirs, tmp_path, capsys):
    _write_data(tmp_path)
    config = _small_run(tmp_path, tiny_model_dirs, tmp_path / "out", json_progress=True)
    result = finetune(config)
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["step"] for x in lines[:-1]] == [1, 2, 3, 4]
    assert all({"step", "total_steps", "loss", "lr", "tokens_per_s", "eta_s"} <= set(x) for x in lines[:-1])
    assert lines[-1]["done"] is True and lines[-1]["output"] == str(tmp_path / "out")
    assert lines[-1]["best_val_loss"] == result["best_val_loss"] < float("inf")

    ar = load_ar(tmp_path / "out", device="cpu", dtype="float32")
    start = load_ar(tiny_model_dirs[1], device="cpu", dtype="float32")
    assert (ar.open_id, ar.close_id) == (start.open_id, start.close_id)
    assert not torch.equal(ar.embeddings, start.embeddings)  # it trained


def test_resume_after_interruption_matches_an_uninterrupted_run(tiny_model_dirs, tmp_path):
    _write_data(tmp_path)
    full = finetune(_small_run(tmp_path, tiny_model_dirs, tmp_path / "full"))

    def crash(step):
        if step == 3:  # killed after step 3; the last checkpoint is step 2
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(_small_run(tmp_path, tiny_model_dirs, tmp_path / "cut"), on_step=crash)
    seen = []
    resumed = finetune(_small_run(tmp_path, tiny_model_dirs, tmp_path / "cut"), on_step=seen.append)
    assert seen == [3, 4]
    assert resumed["best_val_loss"] == pytest.approx(full["best_val_loss"], rel=1e-6)
    a = load_file(tmp_path / "full" / "checkpoints" / "step-00000004" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "checkpoints" / "step-00000004" / "model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-7)


def test_a_shallow_lora_executor_with_its_own_boundary_tokens_loads_as_trained(tiny_model_dirs, tmp_path):
    """--executor-layers / --boundary-tokens are properties of the AR: written to its config, honoured at load."""
    _write_data(tmp_path)
    config = _small_run(tmp_path, tiny_model_dirs, tmp_path / "shallow", lora_rank=4, executor_layers=1,
                        boundary_tokens=("<|mask|>", "<think>"), max_steps=2)
    finetune(config)
    ar = load_ar(tmp_path / "shallow", device="cpu", dtype="float32")
    assert len(ar.model.get_decoder().layers) == 1 and ar.model.config.num_hidden_layers == 1
    assert ar.tokenizer.convert_ids_to_tokens([ar.open_id, ar.close_id]) == ["<|mask|>", "<think>"]
    full = load_ar(tiny_model_dirs[1], device="cpu", dtype="float32")
    assert len(full.model.get_decoder().layers) == 2  # the base itself is untouched
    with pytest.raises(ValueError, match="executor_layers"):
        FinetuneConfig(**{**dataclasses.asdict(config), "executor_layers": -1})
