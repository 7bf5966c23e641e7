"""Soft conditioning and vocabulary alignment: the DLM -> AR interface."""

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from decoding.executor import ar_allowed_ids
from decoding.soft import VocabAlignment, align_probs, block_inputs, soft_embeddings


def test_soft_embedding_is_the_expected_ar_embedding():
    E = torch.tensor([[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]])  # (V=3, H=2)
    probs = torch.tensor([[0.25, 0.75, 0.0], [0.0, 0.0, 1.0]])
    # e = sum_v p_v E[v]
    assert soft_embeddings(probs, E).tolist() == [[0.25, 1.5], [5.0, 5.0]]


def test_block_inputs_boundaries_committed_tokens_and_hard_eos():
    V, H, EOS, OPEN, CLOSE = 6, 3, 0, 4, 5
    E = torch.arange(V * H, dtype=torch.float32).view(V, H)
    probs = torch.zeros(2, 3, V)
    probs[0, 0, 1], probs[0, 0, 2] = 0.5, 0.5      # a mixture
    probs[0, 1, EOS], probs[0, 1, 3] = 0.6, 0.4    # argmax EOS -> hard EOS embedding
    probs[0, 2, 3] = 1.0
    probs[1, :, 2] = 1.0
    committed = torch.tensor([[-1, -1, -1], [-1, 3, -1]])  # block 1 position 1 already holds token 3
    x = block_inputs(probs, committed, E, OPEN, CLOSE, EOS)
    assert x.shape == (2, 5, H)
    assert torch.equal(x[:, 0], E[OPEN].expand(2, H)) and torch.equal(x[:, -1], E[CLOSE].expand(2, H))
    assert torch.allclose(x[0, 1], 0.5 * E[1] + 0.5 * E[2])
    assert torch.equal(x[0, 2], E[EOS])
    assert torch.equal(x[1, 2], E[3])  # committed: exactly the token's embedding, not the marginal's
    hard = block_inputs(probs, committed, E, OPEN, CLOSE, EOS, hard=True)
    assert torch.equal(hard[0, 1], E[1])  # top-1 ablation: argmax (first of the tie), no mixture
    assert torch.equal(hard[0, 3], E[3])


def _pair_of_tokenizers():
    """Two tokenizers that agree on every id below n and disagree on the top ids, like Dream-Coder and Qwen3:
    DLM n, n+1 = <|beginoftext|>, <|mask|>; AR n, n+1 = <tool_response>, </tool_response>, then <think> ..."""
    sample = ["def f(x):\n    return x * 2\n", "for i in range(3):\n    print(i)\n"] * 4
    toks = []
    for extra in (["<|beginoftext|>", "<|mask|>"], ["<tool_response>", "</tool_response>", "<think>", "</think>"]):
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(sample, trainers.BpeTrainer(
            vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
        fast.add_special_tokens({"additional_special_tokens": extra})
        toks.append(fast)
    return toks


def test_vocabulary_alignment_drops_the_ids_whose_meaning_differs():
    dlm_tok, ar_tok = _pair_of_tokenizers()
    n = dlm_tok.convert_tokens_to_ids("<|beginoftext|>")
    assert ar_tok.convert_tokens_to_ids("<tool_response>") == n  # same id, different token
    mask = n + 1
    # the DLM's embedding matrix is padded beyond its tokenizer (Dream: 152064 rows for 151667 tokens)
    align = VocabAlignment.from_tokenizers(dlm_tok, ar_tok, dlm_vocab=n + 8, ar_vocab=n + 4, exclude=(mask,))
    assert align.shared[:n].all()
    assert not align.shared[n:].any()  # <|beginoftext|>, <|mask|> and the padding rows

    probs = torch.zeros(n + 8)
    probs[5], probs[7], probs[n], probs[mask], probs[n + 6] = 0.3, 0.1, 0.4, 0.1, 0.1
    out = align_probs(probs, align)
    assert out.shape == (n + 4,)  # onto the AR's vocabulary
    assert out[5].item() == pytest.approx(0.75) and out[7].item() == pytest.approx(0.25)  # renormalised
    assert out[n:].sum().item() == 0.0  # never mass on <tool_response> & co: ids are not remapped


def test_the_ar_may_only_emit_ids_the_dlm_shares():
    dlm_tok, ar_tok = _pair_of_tokenizers()
    n = dlm_tok.convert_tokens_to_ids("<|beginoftext|>")
    align = VocabAlignment.from_tokenizers(dlm_tok, ar_tok, dlm_vocab=n + 2, ar_vocab=n + 4, exclude=(n + 1,))

    class Pair:  # the only attribute ar_allowed_ids reads
        alignment = align

    allowed = ar_allowed_ids(Pair)
    assert allowed.shape == (n + 4,)
    assert allowed[:n].all() and not allowed[n:].any()
