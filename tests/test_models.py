"""Loading: the tiny pair loads through the same code path as the real checkpoints."""

import torch

from decoding.models import dlm_logits


def test_tiny_pair_loads_with_shared_vocabulary(tiny_models):
    pair = tiny_models
    tok = pair.dlm.tokenizer
    assert pair.dlm.logit_shift is True
    assert pair.dlm.mask_id == tok.convert_tokens_to_ids("<|mask|>")
    assert pair.ar.open_id == tok.convert_tokens_to_ids("<think>")
    # one tokenizer: every id is shared except the mask
    assert not pair.alignment.shared[pair.dlm.mask_id]
    assert int(pair.alignment.shared.sum()) == pair.dlm.vocab_size - 1


def test_dlm_forward_is_bidirectional(tiny_models):
    dlm = tiny_models.dlm
    x = torch.tensor([[5, 6, 7, 8, 9, 10]])
    y = x.clone()
    y[0, -1] = 11
    with torch.no_grad():
        a, b = dlm_logits(dlm, x), dlm_logits(dlm, y)
    # position 1 is predicted from the output at position 0, which sees the changed last token
    assert not torch.allclose(a[0, 1], b[0, 1])


def _dream_checkpoint(tiny_model_dirs, folder):
    """The tiny DLM re-saved the way Dream-Coder ships: Dream's config field names (model_type "Dream",
    DreamModel, auto_map to its remote code, rope_theta, torch_dtype, mask_token_id, no dlm_logit_shift) and
    Qwen2-layout weight names. The remote code file only raises: loading must not run it unless asked to."""
    import json
    import shutil

    src = tiny_model_dirs[0]
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / name, folder / name)
    cfg = json.loads((src / "config.json").read_text())
    dream = {k: cfg[k] for k in ("attention_dropout", "bos_token_id", "eos_token_id", "hidden_act", "hidden_size",
                                 "initializer_range", "intermediate_size", "max_position_embeddings",
                                 "max_window_layers", "num_attention_heads", "num_hidden_layers",
                                 "num_key_value_heads", "pad_token_id", "rms_norm_eps", "sliding_window",
                                 "tie_word_embeddings", "use_cache", "use_sliding_window", "vocab_size")}
    dream.update(
        architectures=["DreamModel"], model_type="Dream", torch_dtype="float32", rope_theta=1000000.0,
        rope_scaling=None, mask_token_id=cfg["mask_token_id"], transformers_version="4.46.2",
        auto_map={"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
    )
    (folder / "config.json").write_text(json.dumps(dream, indent=2))
    for name in ("configuration_dream.py", "modeling_dream.py"):
        (folder / name).write_text('raise RuntimeError("remote code executed")\n')
    return folder


def test_dream_layout_checkpoint_loads_as_a_bidirectional_shifted_qwen2(tiny_model_dirs, tmp_path):
    from safetensors.torch import load_file

    from decoding.marginals import Canvas, FullForward
    from decoding.models import load_dlm

    dlm = load_dlm(_dream_checkpoint(tiny_model_dirs, tmp_path), device="cpu", dtype="float32")
    # every weight name matched (load_dlm refuses missing/unexpected keys) and the values are the file's
    weights = load_file(tmp_path / "model.safetensors")
    state = dlm.model.state_dict()
    assert set(weights) <= set(state)
    assert all(torch.equal(state[k], v) for k, v in weights.items())
    assert type(dlm.model).__name__ == "Qwen2ForCausalLM"
    assert dlm.logit_shift is True  # from model_type "Dream", a property of the checkpoint
    assert dlm.mask_id == 1 and dlm.eos_id == 0
    assert dlm.model.config.rope_parameters["rope_theta"] == 1000000.0  # Dream's rope_theta is kept

    x = torch.tensor([[5, 6, 7, 1, 1, 1, 9, 10]])
    with torch.no_grad():
        raw = dlm.model(input_ids=x).logits[0]  # (8, V), no shift
        y = x.clone()
        y[0, -1] = 11
        raw_changed = dlm.model(input_ids=y).logits[0]
    assert not torch.allclose(raw[0], raw_changed[0])  # bidirectional: position 0 sees the last token
    # the shift is applied exactly once: middle position p (canvas 3 + p) is read from output 3 + p - 1
    stage = FullForward(dlm, eos_penalty=0.0)
    got = stage(Canvas(x, start=3, length=3), torch.arange(3), 0)
    keep = torch.arange(raw.shape[-1]) != dlm.mask_id  # the stage bans the mask id (-inf)
    assert torch.allclose(got[:, keep], raw[2:5, keep], atol=1e-6) and (got[:, dlm.mask_id] == -torch.inf).all()
    assert torch.allclose(dlm_logits(dlm, x)[0, 3:6], raw[2:5], atol=1e-6)


def test_dream_remote_code_runs_only_when_asked(tiny_model_dirs, tmp_path, monkeypatch):
    import pytest

    from decoding.models import load_dlm

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = _dream_checkpoint(tiny_model_dirs, tmp_path)
    load_dlm(folder, device="cpu", dtype="float32")  # the raising remote code was not imported
    with pytest.raises(Exception, match="remote code executed"):
        load_dlm(folder, device="cpu", dtype="float32", trust_remote_code=True)


def test_a_checkpoint_with_foreign_weight_names_is_refused(tiny_model_dirs, tmp_path):
    import pytest
    from safetensors.torch import load_file, save_file

    from decoding.models import load_dlm

    folder = _dream_checkpoint(tiny_model_dirs, tmp_path)
    weights = load_file(folder / "model.safetensors")
    weights["transformer.wte.weight"] = weights.pop("model.embed_tokens.weight")
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(ValueError, match="weights do not match"):
        load_dlm(folder, device="cpu", dtype="float32")
