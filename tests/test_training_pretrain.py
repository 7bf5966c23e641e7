"""Pretraining from scratch: the editor-shaped infill samples, the diffusion batch, loadable output folders."""

import json
import random

import pytest
import torch

from decoding.models import load_ar, load_dlm, load_tokenizer
from training.data import infill_sequence, sample_infill
from training.config import PretrainConfig
from training.pretrain import Corpus, dlm_batch, pretrain

SOURCE = '''import os


def join(a, b):
    """Join two parts."""
    return os.path.join(a, b)


class Box:
    def __init__(self, size):
        self.size = size

    def area(self):
        return self.size * self.size
'''


@pytest.fixture()
def corpus_dir(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(3):
        (folder / f"m{i}.py").write_text(SOURCE.replace("Box", f"Box{i}"))
    return folder


def test_infill_cut_is_contiguous_text_ending_at_a_line_end(tiny_model_dirs):
    tok = load_tokenizer(tiny_model_dirs[0])
    rng = random.Random(0)
    for _ in range(40):
        span = sample_infill(SOURCE, tok, rng, max_middle=1000)
        prefix, middle, suffix = (tok.decode(x) for x in (span.prefix, span.middle, span.suffix))
        assert prefix + middle + suffix == SOURCE
        assert middle.strip() and (suffix == "" or suffix.startswith("\n") or middle.endswith("\n"))


def test_infill_sequence_is_prefix_middle_eos_padding_suffix(tiny_model_dirs):
    tok = load_tokenizer(tiny_model_dirs[0])
    eos = tok.eos_token_id
    rng = random.Random(1)
    for _ in range(40):
        span = sample_infill(SOURCE, tok, rng, max_middle=12)
        ex = infill_sequence(span, 16, 48, eos, rng)
        middle_len = len(span.middle)
        assert len(ex.ids) == 48 and ex.length == 16 and middle_len <= 12
        assert ex.ids[ex.start:ex.start + middle_len] == span.middle
        assert ex.ids[ex.start + middle_len:ex.start + 16] == [eos] * (16 - middle_len)
        assert ex.ids[:ex.start] == span.prefix[len(span.prefix) - ex.start:]  # the prefix ends at the cursor
    with pytest.raises(ValueError, match="budget"):
        infill_sequence(span, len(span.middle) - 1, 48, eos, rng)


def test_diffusion_batch_masks_only_the_infill_region_with_weight_one_over_t(tiny_model_dirs, corpus_dir):
    tok = load_tokenizer(tiny_model_dirs[0])
    eos, mask = tok.eos_token_id, tok.convert_tokens_to_ids("<|mask|>")
    corpus = Corpus(sorted(corpus_dir.glob("*.py")), tok, eos)
    config = PretrainConfig(model="dlm", output="x", size="tiny", seq_len=64, batch_size=16, budget=16,
                            max_middle=12, infill_share=1.0)
    inputs, targets, weight, denom = dlm_batch(corpus, tok, config, random.Random(2), mask, eos)
    assert inputs.shape == targets.shape == weight.shape == (16, 64)
    assert ((denom >= 1) & (denom <= 16)).all() and (denom == 16).any()  # the budget N, at most 16
    masked = inputs == mask
    assert torch.equal(masked, weight > 0) and masked.any(1).all()  # at least one masked per row
    for row in range(16):
        region = masked[row].nonzero().flatten()
        assert region.max() - region.min() < denom[row]  # masks stay inside the budget
        w = weight[row][masked[row]]
        assert torch.allclose(w, w[0].expand_as(w)) and w[0] >= 1.0  # 1/t, t <= 1
    # noise levels are stratified: one t in each sixteenth of (0, 1]
    t = torch.stack([1 / weight[row][masked[row]][0] for row in range(16)]).sort().values
    u = (t - config.eps) / (1 - config.eps)  # the uniform draw behind each t
    assert torch.equal((u * 16).floor().clamp(0, 15), torch.arange(16.0))
    # the padded tail of the region is EOS: the model learns to close a middle
    assert (targets[masked] == eos).any()


def test_pretrain_smoke_writes_folders_the_loaders_accept(tiny_model_dirs, corpus_dir, tmp_path):
    common = dict(corpus=str(corpus_dir), tokenizer=str(tiny_model_dirs[0]), size="tiny", seq_len=64,
                  batch_size=2, budget=16, max_middle=12, max_steps=3, eval_every=2, log_every=1, threads=1)
    dlm_dir = pretrain(PretrainConfig(model="dlm", output=str(tmp_path / "dlm"), **common))
    ar_dir = pretrain(PretrainConfig(model="ar", output=str(tmp_path / "ar"), **common))

    config = json.loads((dlm_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2" and config["dlm_logit_shift"] is True
    dlm = load_dlm(dlm_dir, device="cpu", dtype="float32")
    assert dlm.logit_shift and dlm.mask_id == dlm.tokenizer.convert_tokens_to_ids("<|mask|>")
    assert dlm.model.config.is_causal is False
    ar = load_ar(ar_dir, device="cpu", dtype="float32")
    assert json.loads((ar_dir / "config.json").read_text())["model_type"] == "qwen3"
    assert ar.model.config.tie_word_embeddings
    assert (ar.open_id, ar.close_id) == (2, 3)
    rows = [json.loads(x) for x in (dlm_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
    assert rows[-1]["done"] and set(rows[-1]["final_eval"]) >= {"acc@0.15", "infill_middle_acc"}


def test_bad_pretrain_settings_raise_value_error():
    with pytest.raises(ValueError, match="model"):
        PretrainConfig(model="gpt", output="x")
    with pytest.raises(ValueError, match="budget"):
        PretrainConfig(model="dlm", output="x", budget=600, seq_len=512)


def test_report_averages_training_loss_per_window(tmp_path):
    from training.report import loss_table

    run = tmp_path / "b4"
    run.mkdir()
    rows = [{"step": s, "loss": float(s)} for s in range(1, 7)] + [{"step": 6, "val_loss": 1.5}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = loss_table([run], every=3).splitlines()
    assert table[0] == "| step | b4 |"
    assert table[2:] == ["| 3 | 2.0000 |", "| 6 | 5.0000 |"]  # means of 1,2,3 and 4,5,6
    with pytest.raises(ValueError, match="metrics.jsonl"):
        loss_table([tmp_path / "missing"], every=3)


def test_evaluation_scores_only_masked_positions_with_the_same_masks_for_every_model(tiny_model_dirs, corpus_dir,
                                                                                     monkeypatch):
    import math

    import training.evaluate as ev

    dlm = load_dlm(tiny_model_dirs[0], device="cpu", dtype="float32")
    windows = ev.validation_windows(dlm, str(corpus_dir), 16)
    vocab = dlm.model.config.vocab_size

    def oracle(_, ids):  # certain of the true token everywhere
        return torch.zeros(*ids.shape, vocab).scatter(-1, windows.unsqueeze(-1), 50.0)

    def right_where_visible(_, ids):  # certain of the truth where it is visible, of a wrong token under masks
        wrong = torch.where(ids == dlm.mask_id, (windows + 1) % vocab, windows)
        return torch.zeros(*ids.shape, vocab).scatter(-1, wrong.unsqueeze(-1), 50.0)

    first = ev.masked_scores(dlm, windows, 0.5, seed=3, batch=len(windows))
    monkeypatch.setattr(ev, "dlm_logits", lambda d, ids: torch.zeros(*ids.shape, vocab))  # uniform
    uniform = ev.masked_scores(dlm, windows, 0.5, seed=3, batch=len(windows))
    assert uniform["n"] == first["n"] and 0 < first["n"] < windows.numel()  # same masks, about half the tokens
    assert uniform["ce"] == pytest.approx(math.log(vocab), rel=1e-5)
    monkeypatch.setattr(ev, "dlm_logits", oracle)
    right = ev.masked_scores(dlm, windows, 0.5, seed=3, batch=len(windows))
    assert right["acc"] == 1.0 and right["ce"] == pytest.approx(0.0, abs=1e-6)
    monkeypatch.setattr(ev, "dlm_logits", right_where_visible)
    assert ev.masked_scores(dlm, windows, 0.5, seed=3, batch=len(windows))["acc"] == 0.0


def test_evaluate_cli_compares_models_on_the_same_text(tiny_model_dirs, corpus_dir, capsys):
    from training.evaluate import main

    dlm = str(tiny_model_dirs[0])
    assert main([dlm, dlm, "--corpus", str(corpus_dir), "--seq-len", "16", "--rates", "0.3,1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 and rows[0]["windows"] >= 1
    assert rows[0] == rows[1]  # the same model twice: the same text and masks give the same scores
    assert rows[0]["1"]["n"] == rows[0]["windows"] * 16  # rate 1 masks every position
    for bad in (["--rates", "0"], ["--rates", "x"], ["--seq-len", "1"]):
        with pytest.raises(SystemExit) as exit_info:
            main([dlm, "--corpus", str(corpus_dir), *bad])
        assert exit_info.value.code == 2
