"""int8 weights for the causal-context DLM on a CPU (decoding.quantize, dtype int8): what a laptop user runs.
The int8 model is its own reference: verified decoding gives its greedy middle, the adapter switched off leaves
the int8 base alone, and int8 is chosen by `auto` only for a model whose card measured it."""

import json

import pytest
import torch
from torch.ao.nn.quantized.dynamic import Linear as Int8Linear

from decoding import fim as F
from decoding import infill, preset
from decoding.models import base_slice, load_ar, load_fim_base, load_models
from decoding.quantize import is_int8
from training.tiny_models import build_tiny_fim_dlm, build_tiny_fim_executor

PREFIX = "def add(a, b):\n    "
SUFFIX = "\n\nfor i in range(10):\n    print(i)\n"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return build_tiny_fim_dlm(tmp_path_factory.mktemp("int8"))


@pytest.fixture(scope="module")
def int8(folders):
    return load_models(folders[1], device="cpu", dtype="int8")


def _linears(model):
    plain = [n for n, m in model.named_modules() if type(m) is torch.nn.Linear and "lora_" not in n]
    quantized = [n for n, m in model.named_modules() if isinstance(m, Int8Linear)]
    return plain, quantized


def test_int8_quantizes_every_base_linear_and_keeps_the_adapter_float(int8):
    model = int8.dlm.model
    plain, quantized = _linears(model)
    assert not plain and len(quantized) > 0
    assert any("lm_head" in n for n in quantized)
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    assert lora and all(p.dtype == torch.float32 for p in lora)
    assert is_int8(model) and int8.dlm.vocab_size == model.config.vocab_size


def test_verified_on_int8_is_the_int8_bases_greedy_middle(int8):
    """Exact here; on the real base only up to near-ties: a pass quantizes its activations with one scale for all
    its positions, so a verifying pass can tip a tie the one-token pass would not (218 of 240 public middles)."""
    ar = infill(int8, PREFIX, SUFFIX, preset("balanced", method="ar", max_new_tokens=24, token_healing=False))
    assert ar.tokens
    for k in (2, 4):
        got = infill(int8, PREFIX, SUFFIX, preset("balanced", block_size=k, max_new_tokens=24, token_healing=False))
        assert got.tokens == ar.tokens and got.stats.drafted > 0


def test_the_adapter_off_is_the_int8_base_alone(folders, int8):
    """adapter_off gives the logits of the base loaded without any adapter, exactly; the adapter is back on after."""
    fim = int8.dlm.fim
    bare = load_fim_base(folders[0], device="cpu", dtype="int8").dlm.model
    ids = torch.tensor([fim.tokenizer.encode(PREFIX, add_special_tokens=False)])
    with torch.inference_mode():
        reference = bare(input_ids=ids).logits
        with fim.adapter_off():
            off = fim.model(input_ids=ids).logits
        on = fim.model(input_ids=ids).logits
    assert torch.equal(off, reference)
    assert not torch.equal(on, reference)


def test_a_cold_prompt_gets_what_a_prompt_cache_holding_its_first_token_gets(int8):
    """The first token is the attention sink (activations ~30x the rest's on the real base), so a cold int8
    prefill runs it alone: otherwise its pass's one activation scale would flatten the whole prompt, and a cold
    request would answer differently from one whose cache already holds that token."""
    fim = int8.dlm.fim
    ids = fim.prompt(fim.tokenizer.encode(PREFIX, add_special_tokens=False),
                     fim.tokenizer.encode(SUFFIX, add_special_tokens=False))
    with torch.inference_mode():
        fim.forget_prompt()
        _, cold, reused = F.prefill(fim, ids)
        assert reused == 0
        other = [ids[0], *reversed(ids[1:])]  # shares the first token only
        kv, _, _ = F.prefill(fim, other)
        F.keep(fim, other, kv)
        _, warm, reused = F.prefill(fim, ids)
    assert reused == 1 and torch.equal(cold, warm)


def _marked(adapter, folder, **extra):
    """A copy of the adapter folder whose config.json asks for int8 on a CPU, as the default model's does."""
    folder.mkdir()
    for f in adapter.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "codila_cpu_dtype": "int8", **extra}))
    return folder


def test_the_layers_a_model_keeps_float_stay_float_and_a_wrong_name_fails_at_load(folders, int8, tmp_path):
    """`codila_int8_keep_float` (the default model names the down projections whose activation outliers int8
    cannot hold) keeps those Linear layers float, their adapter included; a name the model lacks is an error."""
    kept = "model.layers.0.mlp.down_proj"
    models = load_models(_marked(folders[1], tmp_path / "dlm", codila_int8_keep_float=[kept]), device="cpu")
    plain, quantized = _linears(models.dlm.model)
    assert len(plain) == 1 and plain[0].endswith(kept + ".base_layer")
    assert len(quantized) == len(_linears(int8.dlm.model)[1]) - 1
    assert models.dlm.model.get_submodule(plain[0]).weight.dtype == torch.float32
    ar = infill(models, PREFIX, SUFFIX, preset("balanced", method="ar", max_new_tokens=12, token_healing=False))
    verified = infill(models, PREFIX, SUFFIX, preset("balanced", block_size=4, max_new_tokens=12, token_healing=False))
    assert ar.tokens and verified.tokens == ar.tokens
    wrong = _marked(folders[1], tmp_path / "wrong", codila_int8_keep_float=["model.layers.0.mlp.down"])
    with pytest.raises(ValueError, match="has no such Linear"):
        load_models(wrong, device="cpu")


def test_auto_picks_int8_only_where_the_models_config_says_so(folders, tmp_path):
    base, adapter = folders
    assert not is_int8(load_models(adapter, device="cpu", dtype="auto").dlm.model)  # no codila_cpu_dtype
    marked = _marked(adapter, tmp_path / "dlm")
    assert is_int8(load_models(marked, device="cpu", dtype="auto").dlm.model)
    assert not is_int8(load_models(marked, device="cpu", dtype="bfloat16").dlm.model)
    # an executor slice shares the base's float weights: auto keeps them float, and codila decodes
    with_executor = load_models(marked, build_tiny_fim_executor(tmp_path, base), device="cpu", dtype="auto")
    assert not is_int8(with_executor.dlm.model)
    assert infill(with_executor, PREFIX, SUFFIX, preset("balanced", method="codila", max_new_tokens=8)).tokens


def test_int8_is_refused_where_it_cannot_apply(folders, int8, tmp_path):
    base, adapter = folders
    with pytest.raises(ValueError, match="shares the base's float weights"):
        base_slice(int8.dlm.model, 1)  # what training.executor builds its executor from
    with pytest.raises(ValueError, match="int8 is for the causal-context DLM"):
        load_ar(base, device="cpu", dtype="int8")
    executor = build_tiny_fim_executor(tmp_path, base)
    with pytest.raises(ValueError, match="shares the base's weights"):
        load_models(adapter, executor, device="cpu", dtype="int8")
