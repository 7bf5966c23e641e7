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


# ----------------------------------------------------------------------------------------------------------
# The published folders (tests/published_models.py): Dream-Coder-v0-Instruct-7B and Qwen3-0.6B as downloaded

CODE = "def add(a, b):\n    return a + b\n\n\nclass Point:\n    x: int = 0\n"


def test_published_dream_coder_folder_loads_without_remote_code(published_dirs):
    from decoding.models import load_dlm

    dlm = load_dlm(published_dirs[0], device="cpu")  # the raising remote code files are never imported
    tok = dlm.tokenizer
    assert type(dlm.model).__name__ == "Qwen2ForCausalLM" and dlm.vocab_size == 152_064
    assert dlm.model.dtype == torch.bfloat16  # dtype auto keeps the checkpoint's torch_dtype on CPU
    assert 151_643 <= len(tok) <= 152_064  # the tokenizer is the vocabulary, not an empty shell
    ids = tok.encode(CODE, add_special_tokens=False)
    assert ids and tok.decode(ids) == CODE  # code round-trips
    assert (dlm.eos_id, dlm.mask_id, tok.pad_token_id, tok.bos_token_id) == (151_643, 151_666, 151_643, 151_665)
    assert tok.convert_ids_to_tokens([151_645, 151_666]) == ["<|im_end|>", "<|mask|>"]
    assert dlm.stop_ids == (151_645,)  # <|im_end|> ends a middle as EOS does
    assert dlm.logit_shift is True
    prompt = tok.apply_chat_template([{"role": "user", "content": "add two numbers"}], tokenize=False,
                                     add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n") and "<|im_start|>user\nadd two numbers<|im_end|>" in prompt
    assert all(not p.requires_grad for p in dlm.model.parameters())


def test_published_qwen3_folder_loads_as_the_executor(published_dirs):
    from decoding.models import load_ar

    ar = load_ar(published_dirs[1], device="cpu")
    assert ar.embeddings.shape[0] == 151_936 and ar.model.dtype == torch.bfloat16
    assert (ar.open_id, ar.close_id) == (151_667, 151_668)
    assert ar.tokenizer.decode(ar.tokenizer.encode(CODE, add_special_tokens=False)) == CODE
    assert ar.model.get_output_embeddings().weight.data_ptr() == ar.embeddings.data_ptr()  # tied, as published


def test_the_published_pair_aligns_on_ids_below_151665_and_decodes(published_dirs):
    from decoding import DecodeConfig, infill
    from decoding.models import load_models

    pair = load_models(*published_dirs, device="cpu", dtype="float32")
    shared = pair.alignment.shared
    assert shared.shape == (152_064,) and pair.alignment.ar_vocab == 151_936
    assert bool(shared[:151_665].all()) and not bool(shared[151_665:].any())  # 0..151664, as the paper says
    for method in ("codila", "dlm"):
        config = DecodeConfig(method=method, max_new_tokens=8, block_size=4, mode="static", eos_casting=False)
        result = infill(pair, "def add(a, b):\n    ", "\n\nprint(add(1, 2))\n", config)
        assert result.stats.iterations >= 1 and len(result.middle_ids) == 8
        assert all(t < 151_665 or t == pair.dlm.eos_id for t in result.middle_ids)  # ids both models share


def test_turn_end_is_folded_into_eos_in_the_marginals(published_dirs):
    from decoding.marginals import Canvas, FullForward
    from decoding.models import load_dlm

    dlm = load_dlm(published_dirs[0], device="cpu", dtype="float32")
    x = torch.tensor([[10, 11, 12, dlm.mask_id, dlm.mask_id, 13]])
    with torch.no_grad():
        raw = dlm.model(input_ids=x).logits[0, 2:4].float().softmax(-1)  # shifted rows for positions 3, 4
    got = FullForward(dlm, eos_penalty=0.0)(Canvas(x, start=3, length=2), torch.arange(2), 0).softmax(-1)
    assert (got[:, 151_645] == 0).all()
    keep = raw.clone()
    keep[:, dlm.mask_id] = 0
    keep = keep / keep.sum(-1, keepdim=True)
    torch.testing.assert_close(got[:, dlm.eos_id], keep[:, dlm.eos_id] + keep[:, 151_645])


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_a_tokenizer_that_loads_broken_is_an_error(published_dirs, tmp_path):
    import json

    import pytest

    from decoding.models import load_dlm

    dream, qwen3 = published_dirs
    # an empty vocabulary: code would encode to nothing
    empty = _copy(dream, tmp_path / "empty")
    (empty / "vocab.json").write_text(json.dumps({"a": 0}))
    (empty / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(ValueError, match="loaded broken"):
        load_dlm(empty, device="cpu")
    # Qwen3's tokenizer.json in Dream's folder without Dream's remote class: <|beginoftext|>/<|mask|> would be
    # appended at new ids instead of 151665/151666
    shifted = _copy(dream, tmp_path / "shifted")
    (shifted / "tokenizer.json").write_bytes((qwen3 / "tokenizer.json").read_bytes())
    for name in ("vocab.json", "merges.txt"):
        (shifted / name).unlink()
    config = json.loads((shifted / "tokenizer_config.json").read_text())
    del config["auto_map"]
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    (shifted / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="not at the ids tokenizer_config.json declares"):
        load_dlm(shifted, device="cpu")


def test_dream_remote_code_failing_under_transformers_5_gets_a_clear_refusal(published_dirs, tmp_path, monkeypatch):
    """Dream's modeling_dream.py asks ROPE_INIT_FUNCTIONS for "default", which transformers 5 removed: a
    stand-in remote code that does the same must end in advice, not a bare KeyError."""
    import pytest

    from decoding.models import load_dlm

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = _copy(published_dirs[0], tmp_path / "dream-remote")
    (folder / "configuration_dream.py").write_text(
        "from transformers import PretrainedConfig\n\n\nclass DreamConfig(PretrainedConfig):\n"
        "    model_type = 'Dream'\n")
    (folder / "modeling_dream.py").write_text(
        "from transformers import PreTrainedModel\nfrom transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS\n"
        "from .configuration_dream import DreamConfig\n\n\nclass DreamModel(PreTrainedModel):\n"
        "    config_class = DreamConfig\n    _supports_sdpa = True\n\n    def __init__(self, config):\n        super().__init__(config)\n"
        "        self.rope_init_fn = ROPE_INIT_FUNCTIONS['default']\n")
    with pytest.raises(ValueError, match="without --trust-remote-code"):
        load_dlm(folder, device="cpu", trust_remote_code=True)


def test_loaded_models_build_no_autograd_graph_in_decoding(tiny_models):
    from decoding.soft import block_inputs

    pair = tiny_models
    assert not pair.ar.embeddings.requires_grad
    probs = torch.softmax(torch.randn(2, 4, pair.ar.embeddings.shape[0]), -1)
    x = block_inputs(probs, torch.full((2, 4), -1), pair.ar.embeddings, pair.ar.open_id, pair.ar.close_id, 0)
    assert x.grad_fn is None and not x.requires_grad  # the soft-embedding matmul records nothing


def test_weights_load_straight_onto_the_device_in_the_checkpoints_dtype(tiny_model_dirs, monkeypatch):
    """No staging copy in host memory: from_pretrained places the weights (device_map) in the resolved dtype."""
    import transformers

    from decoding.models import load_ar, resolve_dtype

    seen = []
    original = transformers.AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.append(kwargs)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    load_ar(tiny_model_dirs[1], device="cpu")
    assert seen[0]["device_map"] == torch.device("cpu") and seen[0]["dtype"] == torch.float32
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_dtype("auto", cpu, "bfloat16") == torch.bfloat16 and resolve_dtype("auto", cpu, None) == torch.float32
    assert resolve_dtype("auto", cuda, "float32") == torch.bfloat16 and resolve_dtype("float32", cpu, "bfloat16") == torch.float32
