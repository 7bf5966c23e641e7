"""The AR block executor: batched block decoding with forced tokens and per-token entropies, turn-end tokens
folded into EOS, the trained block size checked; the removed vLLM backend refused with its reason."""


import pytest
import torch

from decoding.executor import TorchBlockExecutor, ar_allowed_ids, make_executor
from decoding.models import fold_stop_tokens, load_models
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


def test_the_vllm_backend_is_refused_with_its_reason(tiny_model_dirs):
    with pytest.raises(ValueError, match="vLLM AR backend was removed"):
        load_models(*tiny_model_dirs, device="cpu", dtype="float32", ar_backend="vllm")
    assert isinstance(make_executor(load_models(*tiny_model_dirs, device="cpu", dtype="float32"), 0.1, 0.8, 0),
                      TorchBlockExecutor)


def test_fold_stop_tokens_moves_the_turn_end_mass_onto_eos():
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0], [3.0, -2.0, 0.5, 0.5]])
    probs = logits.softmax(-1)
    folded = fold_stop_tokens(logits.clone(), eos_id=0, stop_ids=(2,)).softmax(-1)
    torch.testing.assert_close(folded[:, 0], probs[:, 0] + probs[:, 2])
    assert (folded[:, 2] == 0).all()
    torch.testing.assert_close(folded[:, [1, 3]], probs[:, [1, 3]])
    assert torch.equal(fold_stop_tokens(logits.clone(), 0, ()), logits)  # no stop ids: unchanged


def test_a_turn_end_token_ends_the_block_as_eos(tiny_models):
    models = tiny_models
    eos, im_end = models.dlm.eos_id, 7  # stand-in id for <|im_end|>
    ex = TorchBlockExecutor(models.ar.model, ar_allowed_ids(models), greedy, eos_id=eos, stop_ids=(im_end,))
    head = models.ar.model.lm_head

    def turn_end_certain(module, args, out):
        out = out.clone()
        out[..., im_end] += 100.0
        return out

    handle = head.register_forward_hook(turn_end_certain)
    try:
        tokens, _ = ex.decode_blocks(_prompts(models, nb=1, B=3), torch.full((1, 3), -1), None)
    finally:
        handle.remove()
    assert tokens[0].tolist() == [eos] * 3  # never the turn-end id itself: the middle ends the one way


def test_decoding_at_another_block_size_than_trained_is_logged(tiny_models, caplog):
    models = tiny_models
    ex = TorchBlockExecutor(models.ar.model, ar_allowed_ids(models), greedy, trained_block_size=2)
    with caplog.at_level("WARNING", logger="decoding.executor"):
        ex.decode_blocks(_prompts(models, nb=1, B=2), torch.full((1, 2), -1), None)
        assert not caplog.records
        ex.decode_blocks(_prompts(models, nb=1, B=3), torch.full((1, 3), -1), None)
    assert "fine-tuned for blocks of 2 tokens" in caplog.text and "decodes blocks of 3" in caplog.text
