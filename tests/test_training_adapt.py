"""training.adapt: a causal LM made into a DLM, on a tiny model of the real layout.

What a user relies on: the export loads as a DLM (bidirectional, logit shift, the chosen mask), a killed run
resumes where it left off and ends exactly where an uninterrupted run ends, and the benchmark's held-out files
never become training data.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch

from decoding.models import load_dlm
from training.adapt import Sources, adapt, load_base_as_dlm, main
from training.config import AdaptConfig
from training.corpus import is_heldout_path, split_validation, stdlib_files

SNIPPET = '''def scale_{i}(values, factor={i}):
    """Multiply every value by factor."""
    out = []
    for value in values:
        out.append(value * factor)
    return out
'''


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    """A folder of small Python files with at least one that the hash split keeps for validation."""
    folder = tmp_path_factory.mktemp("sources")
    i = 0
    while not split_validation(sorted(folder.glob("*.py")))[1] or i < 30:
        (folder / f"mod_{i}.py").write_text(SNIPPET.format(i=i))
        i += 1
    return folder


def _config(base: Path, sources: Path, output: Path, **overrides) -> AdaptConfig:
    values = dict(base=str(base), output=str(output), mask_token="<|mask|>", eos_token="<|endoftext|>",
                  extra_sources=(str(sources),), stdlib=False, lora_rank=4, lora_alpha=8.0, seq_len=48,
                  batch_size=2, max_middle=8, budget=12, max_steps=4, warmup_steps=2, threads=1, seed=3)
    return AdaptConfig(**{**values, **overrides})


def _trained(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint.pt", weights_only=True)["trainable"]


def test_the_export_loads_as_a_dlm_with_bidirectional_attention(tiny_model_dirs, sources, tmp_path):
    base = tiny_model_dirs[1]  # the tiny AR: a causal Qwen3 with tied embeddings, like the real base
    export = adapt(_config(base, sources, tmp_path / "run"))
    spec = json.loads((export / "adapter_config.json").read_text())
    assert spec["base_model_name_or_path"] == str(base)
    dlm = load_dlm(export, device="cpu", dtype="float32")
    assert dlm.logit_shift and dlm.tokenizer.convert_ids_to_tokens(dlm.mask_id) == "<|mask|>"
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    later = ids.clone()
    later[0, 4] = 10
    with torch.no_grad():
        a, b = dlm.model(input_ids=ids).logits, dlm.model(input_ids=later).logits
    assert not torch.allclose(a[0, 0], b[0, 0])  # the first position sees the last one: not causal any more
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["step"] == 0 and "acc@0.15" in metrics[0]["eval"]
    assert metrics[-1]["end_of_session"] and metrics[-1]["step"] == 4


def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(tiny_model_dirs, sources, tmp_path):
    base = tiny_model_dirs[1]
    adapt(_config(base, sources, tmp_path / "straight", max_steps=6))
    adapt(_config(base, sources, tmp_path / "resumed", max_steps=3))  # "killed" after its step-3 save
    first = _trained(tmp_path / "resumed")
    adapt(_config(base, sources, tmp_path / "resumed", max_steps=6))
    straight, resumed = _trained(tmp_path / "straight"), _trained(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    assert any(not torch.equal(first[k], resumed[k]) for k in first)  # the second session trained
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=1e-5, atol=1e-6)


def test_full_fine_tuning_exports_a_whole_model_in_bfloat16(tiny_model_dirs, sources, tmp_path):
    export = adapt(_config(tiny_model_dirs[1], sources, tmp_path / "run", method="full", max_steps=2))
    assert not (export / "adapter_config.json").exists()
    config = json.loads((export / "config.json").read_text())
    assert config["dlm_logit_shift"] is True and config["dtype"] == "bfloat16"
    assert load_dlm(export, device="cpu", dtype="float32").logit_shift


def test_the_benchmarks_held_out_files_never_become_training_data(tiny_model_dirs, sources, tmp_path):
    held, train = stdlib_files("heldout"), stdlib_files("train")
    assert held and all(is_heldout_path(p) for p in held)
    assert not any(is_heldout_path(p) for p in train)
    # an extra source folder that holds stdlib files (here: links to three of each kind) loses the held-out ones
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i, path in enumerate(held[:3] + train[:3]):
        (mixed / f"std_{i}.py").symlink_to(path)
    config = _config(tiny_model_dirs[1], sources, tmp_path / "run", extra_sources=(str(sources), str(mixed)))
    tokenizer = load_base_as_dlm(config)[1]
    src = Sources(config, tokenizer, tokenizer.eos_token_id)
    texts = set(src.texts + src.val_texts)
    assert not {p.read_text(encoding="utf-8") for p in held[:3]} & texts
    assert {p.read_text(encoding="utf-8") for p in train[:3]} <= texts


def test_too_few_sources_and_bad_settings_are_clear_errors(tiny_model_dirs, tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    (one / "a.py").write_text(SNIPPET.format(i=1))
    with pytest.raises(ValueError, match="add sources"):
        adapt(_config(tiny_model_dirs[1], one, tmp_path / "run"))
    with pytest.raises(ValueError, match="method"):
        _config(tiny_model_dirs[1], one, tmp_path / "run", method="qlora")
    with pytest.raises(SystemExit):
        main(["--output", str(tmp_path / "run"), "--budget", "not-a-number"])
    shutil.rmtree(tmp_path / "run", ignore_errors=True)


def _tokenizer_and_ids(base: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    return tok, tok.convert_tokens_to_ids("<|mask|>"), tok.convert_tokens_to_ids("<|endoftext|>")


def test_whole_share_masks_the_editors_whole_middle_region(tiny_model_dirs, sources, tmp_path):
    # the editor's first DLM pass sees every position of the middle + padding masked: --whole-share trains it
    import random

    from training.adapt import make_batch

    base = tiny_model_dirs[1]
    tok, mask_id, eos_id = _tokenizer_and_ids(base)
    config = _config(base, sources, tmp_path / "run", infill_share=1.0, whole_share=1.0, batch_size=16)
    src = Sources(config, tok, eos_id)
    inputs, targets, masked = make_batch(src, tok, config, random.Random(0), mask_id, eos_id)
    def whole(row, target) -> bool:  # one contiguous masked run, the middle then only EOS padding after it
        where = row.nonzero().flatten()
        run = torch.arange(int(where[0]), int(where[0]) + len(where))
        tail = target[run][(target[run] == eos_id).cumsum(0) > 0]  # from the first EOS on
        return torch.equal(where, run) and bool((tail == eos_id).all()) and int(where[-1]) + 1 < len(row)

    assert all(whole(row, t) for row, t in zip(masked, targets))
    assert torch.equal(inputs == mask_id, masked)
    partial = _config(base, sources, tmp_path / "run", infill_share=1.0, whole_share=0.0, batch_size=16)
    _, targets, some = make_batch(src, tok, partial, random.Random(0), mask_id, eos_id)
    assert not all(whole(row, t) for row, t in zip(some, targets))  # without it, regions are partly masked


def test_data_workers_train_on_the_same_kind_of_batches(tiny_model_dirs, sources, tmp_path):
    import itertools
    import random

    from training.adapt import batches

    base = tiny_model_dirs[1]
    tok, mask_id, eos_id = _tokenizer_and_ids(base)
    config = _config(base, sources, tmp_path / "run", data_workers=2)
    src = Sources(config, tok, eos_id)
    made = list(itertools.islice(batches(src, tok, config, random.Random(0), mask_id, eos_id, 0), 6))
    for inputs, targets, masked in made:
        assert inputs.shape == targets.shape == masked.shape == (config.batch_size, config.seq_len)
        assert masked.any(1).all() and torch.equal(inputs[~masked], targets[~masked])
    assert len({tuple(b[1].flatten().tolist()) for b in made}) > 1  # the workers do not repeat one stream
    export = adapt(_config(base, sources, tmp_path / "run", data_workers=2, max_steps=2))
    assert (export / "adapter_model.safetensors").exists()
    with pytest.raises(ValueError, match="data_workers"):
        _config(base, sources, tmp_path / "x", data_workers=-1)
