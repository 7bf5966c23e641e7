"""The AR block executor: batched block decoding with forced tokens and per-token entropies; the vLLM
backend's laziness and its round logic against a stand-in engine."""

import math
import sys
import types

import pytest
import torch

from decoding.executor import TorchBlockExecutor, VLLMBlockExecutor, ar_allowed_ids, make_executor
from decoding.models import load_models
from decoding.sampling import entropy, greedy, make_sampler


def _prompts(models, nb, B, seed=0):
    g = torch.Generator().manual_seed(seed)
    E = models.ar.embeddings
    probs = torch.softmax(torch.randn(nb, B, E.shape[0], generator=g) * 3, -1)  # (nb, B, V)
    mid = probs @ E  # (nb, B, H)
    ends = E[[models.ar.open_id, models.ar.close_id]]
    return torch.cat([ends[0].expand(nb, 1, -1), mid, ends[1].expand(nb, 1, -1)], 1).detach()  # (nb, B+2, H)


def test_forced_tokens_are_reproduced_and_entropies_match_an_uncached_pass(tiny_models):
    models = tiny_models
    allowed = ar_allowed_ids(models)
    ex = TorchBlockExecutor(models.ar.model, allowed, greedy)
    x = _prompts(models, nb=3, B=4)
    forced = torch.tensor([[-1, -1, -1, -1], [-1, 17, -1, 42], [5, 6, 7, 8]])
    tokens, ent = ex.decode_blocks(x, forced, None)
    assert tokens.shape == ent.shape == (3, 4)
    assert tokens[1, 1] == 17 and tokens[1, 3] == 42 and tokens[2].tolist() == [5, 6, 7, 8]

    # the same numbers from one causal pass over prompt + decoded tokens, no cache
    with torch.no_grad():
        full = torch.cat([x, models.ar.embeddings[tokens[:, :-1]]], 1)  # (3, B+2+B-1, H)
        logits = models.ar.model(inputs_embeds=full).logits[:, 5:]  # (3, B, V): outputs after </think>
    logits = logits.masked_fill(~allowed, -torch.inf)
    assert torch.allclose(ent, entropy(logits), atol=1e-4)
    free = forced < 0
    assert torch.equal(tokens[free], logits.argmax(-1)[free])  # greedy at the open positions


def test_only_blocks_allowed_to_end_the_middle_produce_eos(tiny_models):
    models = tiny_models
    eos = models.dlm.eos_id
    ex = TorchBlockExecutor(models.ar.model, ar_allowed_ids(models), greedy, eos_id=eos)
    x = _prompts(models, nb=2, B=3)
    head = models.ar.model.lm_head

    def eos_certain(module, args, out):
        out = out.clone()
        out[..., eos] += 100.0
        return out

    handle = head.register_forward_hook(eos_certain)
    try:
        tokens, ent = ex.decode_blocks(x, torch.full((2, 3), -1), None, torch.tensor([True, False]))
    finally:
        handle.remove()
    assert tokens[0].tolist() == [eos] * 3  # the frontier block may end the middle
    assert eos not in tokens[1].tolist()  # the others get real tokens ...
    assert (ent[1] > ent[0]).all()  # ... and their entropies are over what they may commit


def test_blocks_are_decoded_independently_in_one_batch(tiny_models):
    models = tiny_models
    ex = TorchBlockExecutor(models.ar.model, ar_allowed_ids(models), greedy)
    x = _prompts(models, nb=4, B=3, seed=1)
    forced = torch.full((4, 3), -1)
    batch_tokens, batch_ent = ex.decode_blocks(x, forced, None)
    for b in range(4):
        t, e = ex.decode_blocks(x[b : b + 1], forced[b : b + 1], None)
        assert torch.equal(t[0], batch_tokens[b])
        assert torch.allclose(e[0], batch_ent[b], atol=1e-5)


def test_banned_ids_are_never_sampled(tiny_models):
    models = tiny_models
    allowed = torch.zeros(models.alignment.ar_vocab, dtype=torch.bool)
    allowed[[10, 11, 12]] = True
    ex = TorchBlockExecutor(models.ar.model, allowed, make_sampler(5.0, 1.0))  # hot: spread over all it may
    tokens, ent = ex.decode_blocks(_prompts(models, 8, 4), torch.full((8, 4), -1), torch.Generator().manual_seed(0))
    assert set(tokens.flatten().tolist()) <= {10, 11, 12}
    assert (ent <= torch.log(torch.tensor(3.0)) + 1e-5).all()  # entropy over the 3 allowed ids only


def test_the_vllm_backend_is_imported_only_when_chosen(tiny_model_dirs, monkeypatch):
    built = []
    fake = types.ModuleType("vllm")
    fake.LLM = lambda **kw: built.append(kw) or "engine"
    fake.SamplingParams = lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", fake)
    dlm_dir, ar_dir = tiny_model_dirs
    pair = load_models(dlm_dir, ar_dir, device="cpu", dtype="float32")
    assert built == [] and pair.ar.vllm_engine is None
    assert isinstance(make_executor(pair, 0.1, 0.8, 0), TorchBlockExecutor)

    pair = load_models(dlm_dir, ar_dir, device="cpu", dtype="float32", ar_backend="vllm")
    assert len(built) == 1 and built[0]["enable_prompt_embeds"] is True and built[0]["model"] == str(ar_dir)
    assert isinstance(make_executor(pair, 0.1, 0.8, 0), VLLMBlockExecutor)

    monkeypatch.setitem(sys.modules, "vllm", None)  # not installed
    with pytest.raises(ValueError, match="vLLM >= 0.11"):
        load_models(dlm_dir, ar_dir, device="cpu", dtype="float32", ar_backend="vllm")


def test_vllm_executor_rounds_force_tokens_and_estimate_entropy(monkeypatch):
    fake = types.ModuleType("vllm")
    fake.SamplingParams = lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", fake)
    lp = types.SimpleNamespace

    class Engine:  # answers token 9 with p = 0.5 and token 8 with p = 0.5 at every step
        calls = []

        def generate(self, prompts, params, use_tqdm=False):
            self.calls.append([p["prompt_embeds"].shape[0] for p in prompts])
            step = lp(token_ids=[9], logprobs=[{9: lp(logprob=-0.6931471805599453), 8: lp(logprob=-0.6931471805599453)}])
            return [lp(outputs=[step]) for _ in prompts]

    E = torch.eye(12)
    allowed = torch.ones(12, dtype=torch.bool)
    allowed[11] = False
    engine = Engine()
    ex = VLLMBlockExecutor(engine, E, allowed, temperature=0.1, top_p=0.8, seed=3)
    assert ex.params["logit_bias"] == {11: -100.0} and ex.params["max_tokens"] == 1
    x = torch.zeros(2, 4, 12)  # nb=2, B=2
    tokens, ent = ex.decode_blocks(x, torch.tensor([[5, -1], [4, -1]]), None)
    assert tokens.tolist() == [[5, 9], [4, 9]]
    assert engine.calls == [[5, 5]]  # round 0 all forced: skipped; round 1 sees prompt + one token
    assert ent[:, 1].tolist() == pytest.approx([0.6931, 0.6931], abs=1e-4)


def test_vllm_executor_applies_the_eos_rules_after_sampling(monkeypatch):
    """vLLM samples before EOS can be banned: an EOS below eos_min_prob, or in a block that may not end the
    middle, becomes the likeliest allowed other id of the returned log-probabilities."""
    fake = types.ModuleType("vllm")
    fake.SamplingParams = lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", fake)
    lp = types.SimpleNamespace

    class Engine:  # samples EOS (id 0) with probability p_eos; id 11 (banned) and 8 share the rest
        def __init__(self, p_eos):
            self.p_eos = p_eos

        def generate(self, prompts, params, use_tqdm=False):
            rest = math.log((1 - self.p_eos) / 2)
            step = lp(token_ids=[0], logprobs=[{0: lp(logprob=math.log(self.p_eos)), 11: lp(logprob=rest),
                                                8: lp(logprob=rest - 0.1)}])
            return [lp(outputs=[step]) for _ in prompts]

    E = torch.eye(12)
    allowed = torch.ones(12, dtype=torch.bool)
    allowed[11] = False
    x, free = torch.zeros(2, 3, 12), torch.tensor([[-1], [-1]])  # nb=2, B=1
    for p_eos, eos_ok, expected in [(0.4, [True, True], [8, 8]), (0.9, [True, False], [0, 8])]:
        ex = VLLMBlockExecutor(Engine(p_eos), E, allowed, temperature=0.1, top_p=0.8, seed=3, eos_id=0,
                               eos_min_prob=0.5)
        tokens, _ = ex.decode_blocks(x, free, None, torch.tensor(eos_ok))
        assert tokens[:, 0].tolist() == expected


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_vllm_backend_matches_torch_on_gpu(tiny_model_dirs):
    pytest.importorskip("vllm")
    dlm_dir, ar_dir = tiny_model_dirs
    torch_pair = load_models(dlm_dir, ar_dir, device="cuda", dtype="float32")
    vllm_pair = load_models(dlm_dir, ar_dir, device="cuda", dtype="float32", ar_backend="vllm")
    x = _prompts(torch_pair, 3, 4).cuda()
    forced = torch.tensor([[-1, -1, -1, -1], [-1, 17, -1, 42], [5, 6, 7, 8]])
    t_torch, e_torch = make_executor(torch_pair, 0.0, 1.0, 0).decode_blocks(x, forced, None)
    t_vllm, e_vllm = make_executor(vllm_pair, 0.0, 1.0, 0).decode_blocks(x, forced, None)
    assert torch.equal(t_torch.cpu(), t_vllm.cpu())
