"""Fine-tuning data as the paper's user has it: Ling-Coder-SFT parquet shards and JSONL, tokenised once into a
cache; the loss on the assistant turn only; no EOS on a cut response; the DLM's LM head only where the loss
reads; batched validation; unknown file types refused."""

import dataclasses
import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import training.finetune_data as fd
from decoding.models import dlm_logits, dlm_logits_at, load_ar, load_tokenizer
from training.config import FinetuneConfig
from training.finetune import finetune, parse_args
from training.finetune_trainer import Trainer
from training.finetune_data import Dataset, Fields, data_kind, instruction_example, split_turns


def write_ling_coder(folder, shards=2, rows=6):
    """Ling-Coder-SFT's layout: README.md + data/train_0000N_of_0000M.parquet, columns mid / messages / tags /
    languages, messages a list of {role, content}; half the records spell the roles HUMAN/ASSISTANT."""
    (folder / "data").mkdir(parents=True)
    (folder / "README.md").write_text("# Ling-Coder-SFT\n")
    for s in range(shards):
        table = []
        for i in range(rows):
            k = s * rows + i
            user, assistant = ("HUMAN", "ASSISTANT") if k % 2 else ("user", "assistant")
            table.append({"mid": f"m{k}", "tags": ["code"], "languages": ["python"], "messages": [
                {"role": user, "content": f"Write add{k}."},
                {"role": assistant, "content": f"def add{k}(a, b):\n    return a + b + {k}\n"}]})
        pq.write_table(pa.Table.from_pylist(table), folder / "data" / f"train_{s:05d}_of_{shards:05d}.parquet",
                       row_group_size=4)
    return folder


def _config(tmp_path, data, **kw):
    return FinetuneConfig(dlm="d", ar="a", data=tuple(str(d) for d in data), output=str(tmp_path / "out"), **kw)


def _texts(tok, data, ex):
    return tok.decode(ex.ids[:ex.start]), ex.ids[ex.start:ex.start + ex.length]


def test_a_folder_of_parquet_shards_trains_on_the_assistant_turn_in_both_role_spellings(tiny_model_dirs, tmp_path):
    folder = write_ling_coder(tmp_path / "Ling-Coder-SFT")
    kind, files = data_kind(str(folder))
    assert kind == "instructions" and [f.name for f in files] == ["train_00000_of_00002.parquet",
                                                                  "train_00001_of_00002.parquet"]
    tok = load_tokenizer(tiny_model_dirs[0])
    data = Dataset(_config(tmp_path, [folder], val_samples=2), tok)
    assert (len(data.train), len(data.val)) == (11, 1)  # at most a tenth validates
    seen = set()
    for item in data.train + data.val:
        ex = data.example(item, random.Random(0))
        prompt, response = _texts(tok, data, ex)
        k = int(prompt.removeprefix("Write add").removesuffix(".\n"))  # no template: contents one per line
        seen.add(k)
        assert ex.length % 4 == 0 and response[-1] == tok.eos_token_id
        assert tok.decode([t for t in response if t != tok.eos_token_id]) == f"def add{k}(a, b):\n    return a + b + {k}\n"
    assert seen == set(range(12))
    # the DLM's own end of middle wins over its tokenizer's eos (a converted base's tokenizer names another)
    other = Dataset(_config(tmp_path, [folder], val_samples=2), tok, eos_id=3)
    ex = other.example(other.train[0], random.Random(0))
    assert ex.ids[ex.start + ex.length - 1] == 3 and tok.eos_token_id != 3


def test_the_chat_template_renders_the_prompt_and_the_answer_follows_it(published_dirs, tmp_path):
    folder = write_ling_coder(tmp_path / "sft", shards=1, rows=2)
    tok = load_tokenizer(published_dirs[0])  # Dream-Coder's tokenizer as published, chat template included
    data = Dataset(_config(tmp_path, [folder], val_samples=1), tok)
    ex = data.example(data.train[0], random.Random(0))
    prompt, response = _texts(tok, data, ex)
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user\nWrite add" in prompt
    text = tok.decode([t for t in response if t != tok.eos_token_id])
    assert text.startswith("def add") and "<|im" not in text  # the loss is on the answer alone
    assert response[-1] == tok.eos_token_id == 151_643


def test_multi_turn_records_answer_with_the_last_assistant_turn():
    fields = Fields()
    row = {"messages": [{"role": "SYSTEM", "content": "be brief"}, {"role": "HUMAN", "content": "a"},
                        {"role": "ASSISTANT", "content": "first"}, {"role": "human", "content": "b"},
                        {"role": "Assistant", "content": "second"}, {"role": "user", "content": "thanks"}]}
    prompt, response = split_turns(row, fields, "x")
    assert response == "second" and [m["role"] for m in prompt] == ["system", "user", "assistant", "user"]
    with pytest.raises(ValueError, match="unknown role 'robot'"):
        split_turns({"messages": [{"role": "robot", "content": "a"}, {"role": "assistant", "content": "b"}]}, fields, "x")
    with pytest.raises(ValueError, match="needs an assistant turn"):
        split_turns({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, fields, "x")


def test_a_response_cut_at_the_limit_gets_no_eos():
    eos = 0
    done = instruction_example([7, 8, 9], [11, 12, 13, 14, 15], eos, block_size=4, max_length=64, max_response=8)
    assert done.ids[done.start:] == [11, 12, 13, 14, 15, eos, eos, eos] and done.ids[:done.start] == [7, 8, 9]
    cut = instruction_example([7, 8, 9], list(range(11, 21)), eos, block_size=4, max_length=64, max_response=8)
    assert cut.ids[cut.start:] == list(range(11, 19)) and eos not in cut.ids  # whole blocks, no EOS
    # exactly at the limit: the EOS does not fit, so it is a cut response too
    edge = instruction_example([7], list(range(11, 19)), eos, block_size=4, max_length=64, max_response=8)
    assert edge.ids[edge.start:] == list(range(11, 19))
    # the prompt keeps its last tokens when the context is short
    short = instruction_example(list(range(100, 120)), [11, 12], eos, block_size=4, max_length=10, max_response=8)
    assert short.ids == [114, 115, 116, 117, 118, 119, 11, 12, eos, eos] and short.start == 6


def test_records_are_tokenised_once_into_a_memory_mapped_cache(tiny_model_dirs, tmp_path, monkeypatch):
    folder = write_ling_coder(tmp_path / "sft")
    tok = load_tokenizer(tiny_model_dirs[0])
    config = _config(tmp_path, [folder], data_cache=str(tmp_path / "cache"))
    first = Dataset(config, tok)
    assert isinstance(first.instructions[0].tokens, np.memmap)
    monkeypatch.setattr(fd, "build_cache", lambda *a: pytest.fail("tokenised again"))
    again = Dataset(config, tok)  # a resume, another rank, another block size: the same cache
    assert again.train == first.train
    ex_a = first.example(first.train[0], random.Random(0))
    assert again.example(again.train[0], random.Random(0)) == ex_a
    monkeypatch.undo()
    # a changed data file is a new cache
    shard = folder / "data" / "train_00000_of_00002.parquet"
    pq.write_table(pq.read_table(shard).slice(0, 3), shard)
    assert len(Dataset(config, tok).train) + len(Dataset(config, tok).val) == 9
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_jsonl_with_both_role_spellings_and_source_folders(tiny_model_dirs, tmp_path):
    rows = [{"messages": [{"role": "HUMAN", "content": "q1"}, {"role": "ASSISTANT", "content": "x = 1"}]},
            {"messages": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "y = 2"}]},
            {"instruction": "q3", "output": "z = 3"}]
    (tmp_path / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = load_tokenizer(tiny_model_dirs[0])
    data = Dataset(_config(tmp_path, [tmp_path / "sft.jsonl"], val_samples=1), tok)
    answers = {tok.decode([t for t in data.example(i, random.Random(0)).ids if t != tok.eos_token_id]).split("\n", 1)[1]
               for i in data.train + data.val}
    assert answers == {"x = 1", "y = 2", "z = 3"}
    # a folder of code that happens to hold a .jsonl is still a folder of code
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "main.py").write_text("print(1)\n")
    (tmp_path / "repo" / "fixtures.jsonl").write_text('{"a": 1}\n')
    assert data_kind(str(tmp_path / "repo")) == ("source", [tmp_path / "repo" / "main.py"])


@pytest.mark.parametrize("name", ["sft.json", "sft.csv", "notes.txt", "train.parquet.gz"])
def test_a_file_type_it_does_not_know_is_refused(tmp_path, name):
    (tmp_path / name).write_text("{}")
    with pytest.raises(ValueError, match="unknown file type"):
        data_kind(str(tmp_path / name))


def test_the_dlm_head_runs_only_on_the_positions_the_loss_reads(tiny_models):
    dlm = tiny_models.dlm
    x = torch.randint(4, dlm.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    positions = torch.tensor([0, 5, 6, 7, 8, 17])
    rows_seen = []
    handle = dlm.model.lm_head.register_forward_hook(lambda m, args, out: rows_seen.append(args[0].shape[1]))
    try:
        with torch.no_grad():
            got = dlm_logits_at(dlm, x, positions)  # (2, 6, V)
    finally:
        handle.remove()
    assert rows_seen == [6]
    with torch.no_grad():
        torch.testing.assert_close(got, dlm_logits(dlm, x)[:, positions], rtol=1e-5, atol=1e-5)


def _run(tiny_model_dirs, tmp_path, data, **kw):
    from tests.test_training_finetune import _small_run

    config = _small_run(tmp_path, tiny_model_dirs, tmp_path / "out", **kw)
    return dataclasses.replace(config, data=tuple(str(d) for d in data))


def test_validation_runs_in_batches(tiny_model_dirs, tmp_path):
    folder = write_ling_coder(tmp_path / "sft", rows=20)
    trainer = Trainer(_run(tiny_model_dirs, tmp_path, [folder], val_samples=4, val_batch_size=3))
    assert len(trainer.data.val) == 4
    calls = []
    handle = trainer.pair.dlm.model.register_forward_hook(lambda m, args, out: calls.append(1))
    try:
        first = trainer.validate()
        assert len(calls) == 2  # 4 items, 3 per forward
        assert trainer.validate() == first  # fixed masks: the same number every time
    finally:
        handle.remove()


def test_finetune_on_the_published_pair_and_ling_coder_shards(published_dirs, tmp_path):
    folder = write_ling_coder(tmp_path / "Ling-Coder-SFT")
    dlm, ar = published_dirs
    config = parse_args(["--dlm", str(dlm), "--ar", str(ar), "--data", str(folder), "--output", str(tmp_path / "out"),
                         "--block-size", "2", "--max-steps", "2", "--grad-accum", "1", "--val-samples", "2",
                         "--val-every", "2", "--max-length", "64", "--budget", "16", "--max-middle", "16", "--lr", "1e-3", "--device", "cpu",
                         "--dtype", "float32", "--threads", "1"])
    result = finetune(config)
    assert result["step"] == 2 and result["best_val_loss"] < float("inf")
    trained = load_ar(tmp_path / "out", device="cpu", dtype="float32")
    assert trained.embeddings.shape[0] == 151_936 and (trained.open_id, trained.close_id) == (151_667, 151_668)
    assert trained.block_size == 2
