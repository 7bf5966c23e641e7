"""peft LoRA adapter folders as a model format: loading (merged at load), and training.finetune --lora-rank.

What a user relies on: an adapter folder works wherever a model folder does (load_ar, load_dlm, load_models,
the CLI), decodes with the logits of the model it was saved from, carries its own CoDiLA config keys and
tokenizer, and anything else (a .bin, a missing base, weights for another model) is an error at load time.
"""

import dataclasses
import json
import shutil

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file

from decoding.models import load_ar, load_dlm, load_models, locate_model
from training.config import FinetuneConfig
from training.finetune import finetune, parse_args
from training.finetune_trainer import Trainer

X = torch.tensor([[5, 9, 2, 17, 40, 3, 11, 8]])


def _adapter(model, folder, base, **lora):
    """Wrap `model` in a LoRA adapter with random (non-zero) weights; save it to `folder` naming `base`.
    Returns the peft model in eval mode (the reference whose logits a load must reproduce)."""
    spec = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                          "up_proj", "down_proj"], **lora)
    wrapped = get_peft_model(model, spec)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in wrapped.parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn(p.shape, generator=gen))
    wrapped.peft_config["default"].base_model_name_or_path = str(base)
    wrapped.save_pretrained(folder)
    return wrapped.eval()


def _plain_ar(ar_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(ar_dir, dtype=torch.float32)


def _logits(model, x=X):
    with torch.no_grad():
        return model(input_ids=x).logits


def test_an_ar_adapter_loads_merged_with_the_logits_it_was_saved_with(tiny_model_dirs, tmp_path):
    _, ar_dir = tiny_model_dirs
    ref = _adapter(_plain_ar(ar_dir), tmp_path / "lora", ar_dir, trainable_token_indices=[2, 3])
    ar = load_ar(tmp_path / "lora", device="cpu", dtype="float32")
    assert "Peft" not in type(ar.model).__name__ and not any("lora" in n for n, _ in ar.model.named_parameters())
    torch.testing.assert_close(_logits(ar.model), _logits(ref), rtol=1e-5, atol=1e-5)
    # the trained embedding rows (trainable_token_indices) made it into the merged weights
    base = _plain_ar(ar_dir)
    assert not torch.allclose(ar.embeddings[2:4], base.get_input_embeddings().weight[2:4])
    torch.testing.assert_close(ar.embeddings[4:], base.get_input_embeddings().weight[4:])
    assert (ar.open_id, ar.close_id) == (2, 3)


def test_modules_to_save_survive_the_round_trip(tiny_model_dirs, tmp_path):
    _, ar_dir = tiny_model_dirs
    ref = _adapter(_plain_ar(ar_dir), tmp_path / "lora", ar_dir, modules_to_save=["embed_tokens"])
    ar = load_ar(tmp_path / "lora", device="cpu", dtype="float32")
    torch.testing.assert_close(_logits(ar.model), _logits(ref), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ar.embeddings, _plain_ar(ar_dir).get_input_embeddings().weight)


def test_a_dlm_adapter_loads_bidirectional_with_the_peft_models_logits(tiny_model_dirs, tmp_path):
    dlm_dir, _ = tiny_model_dirs
    base = load_dlm(dlm_dir, device="cpu", dtype="float32")  # bidirectional, as the adapter was trained
    ref = _adapter(base.model, tmp_path / "lora", dlm_dir)
    dlm = load_dlm(tmp_path / "lora", device="cpu", dtype="float32")
    assert dlm.logit_shift and dlm.mask_id == base.mask_id
    torch.testing.assert_close(_logits(dlm.model), _logits(ref), rtol=1e-5, atol=1e-5)
    y = X.clone()
    y[0, -1] = 21
    assert not torch.allclose(_logits(dlm.model)[0, 0], _logits(dlm.model, y)[0, 0])  # still bidirectional


def test_relative_base_own_config_keys_and_own_tokenizer_win(tiny_model_dirs, tmp_path):
    _, ar_dir = tiny_model_dirs
    shutil.copytree(ar_dir, tmp_path / "models" / "base")
    folder = tmp_path / "models" / "lora"
    _adapter(_plain_ar(ar_dir), folder, "../base")  # relative to the adapter folder
    cfg = json.loads((ar_dir / "config.json").read_text())
    cfg.update(codila_tau=2.5, codila_block_size=2, codila_boundary_tokens=["<|mask|>", "</think>"], hidden_size=999)
    (folder / "config.json").write_text(json.dumps(cfg))
    ar = load_ar(folder, device="cpu", dtype="float32")
    assert (ar.tau, ar.block_size) == (2.5, 2)
    assert (ar.open_id, ar.close_id) == (1, 3)  # codila_boundary_tokens from the adapter's config.json
    assert ar.model.config.hidden_size == 32  # architecture keys stay the base's
    # the adapter's own tokenizer files win over the base's
    tok_config = json.loads((ar_dir / "tokenizer_config.json").read_text())
    tok_config["model_max_length"] = 777
    for name in ("tokenizer.json",):
        shutil.copy(ar_dir / name, folder / name)
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config))
    assert load_ar(folder, device="cpu", dtype="float32").tokenizer.model_max_length == 777
    assert load_ar(tmp_path / "models" / "base", device="cpu", dtype="float32").tokenizer.model_max_length != 777


def test_load_models_and_the_cli_take_adapter_folders(tiny_model_dirs, tmp_path, capsys):
    from decoding.__main__ import main

    dlm_dir, ar_dir = tiny_model_dirs
    _adapter(load_dlm(dlm_dir, device="cpu", dtype="float32").model, tmp_path / "dlm-lora", dlm_dir)
    _adapter(_plain_ar(ar_dir), tmp_path / "ar-lora", ar_dir)
    pair = load_models(tmp_path / "dlm-lora", tmp_path / "ar-lora", device="cpu", dtype="float32")
    assert int(pair.alignment.shared.sum()) == pair.dlm.vocab_size - 1
    assert main(["--dlm", str(tmp_path / "dlm-lora"), "--ar", str(tmp_path / "ar-lora"), "--device", "cpu",
                 "--prefix", "def f(x):\n    ", "--max-new-tokens", "8", "--mode", "static", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["stats"]["iterations"] == 2


def test_bad_adapters_are_refused_at_load(tiny_model_dirs, tmp_path):
    _, ar_dir = tiny_model_dirs
    folder = tmp_path / "lora"
    _adapter(_plain_ar(ar_dir), folder, ar_dir)
    weights = load_file(folder / "adapter_model.safetensors")

    (folder / "adapter_model.safetensors").rename(folder / "adapter_model.bin")
    with pytest.raises(ValueError, match="safetensors only"):
        load_ar(folder, device="cpu")
    (folder / "adapter_model.bin").unlink()

    save_file({k: v for k, v in weights.items() if "layers.1." not in k}, folder / "adapter_model.safetensors")
    with pytest.raises(ValueError, match="adapter weights do not match"):
        load_ar(folder, device="cpu")
    save_file(weights, folder / "adapter_model.safetensors")

    spec = json.loads((folder / "adapter_config.json").read_text())
    for base, message in ((str(tmp_path / "nowhere"), "not a local folder"),
                          ("HuggingFaceTB/SmolLM2-135M", "not a local folder")):
        (folder / "adapter_config.json").write_text(json.dumps({**spec, "base_model_name_or_path": base}))
        with pytest.raises(ValueError, match=message):
            load_ar(folder, device="cpu")
    (folder / "adapter_config.json").write_text(json.dumps({**spec, "peft_type": "IA3"}))
    with pytest.raises(ValueError, match="only LoRA"):
        load_ar(folder, device="cpu")
    (folder / "adapter_config.json").write_text(json.dumps({**spec, "base_model_name_or_path": str(folder)}))
    with pytest.raises(ValueError, match="a cycle"):
        load_ar(folder, device="cpu")


# ----------------------------------------------------------------------------------------------------------
# training.finetune --lora-rank

def _lora_run(tiny_model_dirs, tmp_path, output, ar=None, **kw):
    from tests.test_training_finetune import _small_run, _write_data

    _write_data(tmp_path)
    base = dict(lora_rank=4, lr=1e-2, max_steps=4, val_every=4, save_every=2)
    config = _small_run(tmp_path, tiny_model_dirs, output, **{**base, **kw})
    return dataclasses.replace(config, ar=str(ar)) if ar else config


def test_cli_lora_options():
    config = parse_args(["--dlm", "d", "--ar", "a", "--data", "x.jsonl", "--output", "o", "--lora-rank", "8",
                         "--lora-targets", "q_proj,v_proj", "--lora-train-tokens", "none", "--trust-remote-code"])
    assert (config.lora_rank, config.alpha, config.lora_targets) == (8, 16.0, ("q_proj", "v_proj"))
    assert config.lora_train_tokens == ("none",) and config.trust_remote_code
    full = parse_args(["--dlm", "d", "--ar", "a", "--data", "x.jsonl", "--output", "o"])
    assert full.lora_rank == 0 and len(full.lora_targets) == 7  # every attention and MLP projection
    with pytest.raises(ValueError, match="lora_rank"):
        FinetuneConfig(dlm="d", ar="a", data=("x",), output="o", lora_rank=-1)


def test_a_lora_finetune_saves_an_adapter_that_loads_with_the_in_training_logits(tiny_model_dirs, tmp_path):
    out = tmp_path / "out"
    trainer = Trainer(_lora_run(tiny_model_dirs, tmp_path, out))
    trainer.train()  # validates (and exports) at its last step: the export is the final state
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "config.json", "tokenizer.json"} <= names
    assert "model.safetensors" not in names
    spec = json.loads((out / "adapter_config.json").read_text())
    assert spec["base_model_name_or_path"] == str(tiny_model_dirs[1].resolve())
    assert spec["trainable_token_indices"] == [2, 3]  # the boundary rows train by default
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["codila_block_size"], cfg["codila_boundary_tokens"]) == (4, ["<think>", "</think>"])

    model = trainer.pair.ar.model.eval()
    loaded = load_ar(out, device="cpu", dtype="float32")
    torch.testing.assert_close(_logits(loaded.model), _logits(model), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loaded.embeddings, trainer.pair.ar.embeddings.detach(), rtol=1e-6, atol=1e-6)
    start = load_ar(tiny_model_dirs[1], device="cpu", dtype="float32")
    assert not torch.allclose(_logits(loaded.model), _logits(start.model))  # it trained
    assert not torch.equal(loaded.embeddings[2:4], start.embeddings[2:4])  # and so did the boundary rows
    assert loaded.block_size == 4


def test_lora_resume_after_interruption_matches_an_uninterrupted_run(tiny_model_dirs, tmp_path):
    full = finetune(_lora_run(tiny_model_dirs, tmp_path, tmp_path / "full"))

    def crash(step):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(_lora_run(tiny_model_dirs, tmp_path, tmp_path / "cut"), on_step=crash)
    seen = []
    resumed = finetune(_lora_run(tiny_model_dirs, tmp_path, tmp_path / "cut"), on_step=seen.append)
    assert seen == [3, 4]
    assert resumed["best_val_loss"] == pytest.approx(full["best_val_loss"], rel=1e-6)
    a = load_file(tmp_path / "full" / "adapter_model.safetensors")
    b = load_file(tmp_path / "cut" / "adapter_model.safetensors")
    assert set(a) == set(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)
    # a full fine-tune cannot resume from a LoRA run's checkpoints
    with pytest.raises(ValueError, match="does not match this run"):
        finetune(_lora_run(tiny_model_dirs, tmp_path, tmp_path / "cut", lora_rank=0, max_steps=6))


def test_an_adapter_as_input_ar_is_merged_and_the_new_adapter_chains_to_it(tiny_model_dirs, tmp_path):
    first = tmp_path / "first"
    finetune(_lora_run(tiny_model_dirs, tmp_path, first))
    trainer = Trainer(_lora_run(tiny_model_dirs, tmp_path, tmp_path / "second", ar=first, lora_train_tokens=("none",)))
    trainer.train()
    spec = json.loads((tmp_path / "second" / "adapter_config.json").read_text())
    assert spec["base_model_name_or_path"] == str(first.resolve()) and spec["trainable_token_indices"] is None
    source = locate_model(tmp_path / "second")
    assert source.base == tiny_model_dirs[1].resolve() and source.adapters == (first.resolve(), tmp_path / "second")
    loaded = load_ar(tmp_path / "second", device="cpu", dtype="float32")
    torch.testing.assert_close(_logits(loaded.model), _logits(trainer.pair.ar.model.eval()), rtol=1e-5, atol=1e-5)
