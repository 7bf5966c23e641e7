"""Token healing: the prefix's last token comes off the canvas and the middle must spell it first."""

import pytest
import torch

from decoding import DecodeConfig
from decoding.healing import Healing, TokenTexts, heal_prefix, heal_split
from decoding.loop import decode, infill


@pytest.fixture(scope="module")
def texts(tiny_models):
    tok = tiny_models.dlm.tokenizer
    return TokenTexts.of(tok, tiny_models.dlm.vocab_size)


def test_token_texts_are_the_bytes_each_id_decodes_to(tiny_models, texts):
    tok = tiny_models.dlm.tokenizer
    ids = tok.encode("def add(a, b):\n    return a + b  # é\n", add_special_tokens=False)
    assert b"".join(texts.texts[i] for i in ids).decode() == "def add(a, b):\n    return a + b  # é\n"
    assert texts.texts[tok.convert_tokens_to_ids("<|mask|>")] == b""  # specials are never text


def test_allowed_ids_extend_or_begin_the_remaining_text(texts):
    allowed = texts.allowed(b"ret")
    chosen = {texts.texts[i] for i in allowed.nonzero().flatten().tolist()}
    assert b"r" in chosen and b"e" not in chosen  # a byte of it begins it; a byte elsewhere in it does not
    assert all(t.startswith(b"ret") or b"ret".startswith(t) for t in chosen)
    assert not any(t.startswith(b"x") for t in chosen)
    assert texts.advance(b"ret", texts.texts.index(b"r")) == b"et"


def test_heal_prefix_leaves_special_and_empty_prefixes_alone(tiny_models, texts):
    tok = tiny_models.dlm.tokenizer
    ids = tok.encode("x = foo(", add_special_tokens=False)
    healed = heal_prefix(ids, texts)
    assert healed.prefix_ids == ids[:-1] and healed.removed == texts.texts[ids[-1]]
    assert heal_prefix([], texts).removed == b""
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    assert heal_prefix([*ids, eos], texts, frozenset({eos})).removed == b""


def test_heal_split_gives_training_the_boundary_inference_sees(tiny_models):
    tok = tiny_models.dlm.tokenizer
    prefix, middle = "def add(a, b):\n    ", "return a + b"
    p_ids, m_ids = heal_split(tok, prefix, middle)
    assert p_ids == tok.encode(prefix, add_special_tokens=False)[:-1]
    assert tok.decode(p_ids) + tok.decode(m_ids) == prefix + middle
    assert m_ids == tok.encode(tok.decode(tok.encode(prefix)[-1:]) + middle, add_special_tokens=False)


def test_every_decoder_writes_the_healed_text_first_and_returns_only_what_follows(tiny_models):
    tok = tiny_models.dlm.tokenizer
    prefix, suffix = "def add(a, b):\n    return a", "\n"
    for method in ("dlm", "codila", "codila-top1"):
        config = DecodeConfig(method=method, mode="static", max_new_tokens=8, eos_casting=False, eos_min_prob=1.0)
        result = infill(tiny_models, prefix, suffix, config)
        assert result.stats.healing == "ok"
        removed = tok.decode(tok.encode(prefix, add_special_tokens=False)[-1:])
        assert tok.decode(result.tokens).startswith(removed)
        assert tok.decode(result.tokens)[len(removed):] == result.text


def test_the_constraint_holds_when_the_model_prefers_something_else(tiny_models, monkeypatch):
    """A DLM that always wants EOS/one fixed token still has to spell the healed text at position 0."""
    tok = tiny_models.dlm.tokenizer
    ids = tok.encode("x = foo(", add_special_tokens=False)
    texts = TokenTexts.of(tok, tiny_models.dlm.vocab_size)
    removed = texts.texts[ids[-1]]
    result = decode(tiny_models, ids[:-1], [], DecodeConfig(method="dlm", max_new_tokens=4, eos_casting=False,
                                                            eos_min_prob=1.0), heal=removed)
    first = texts.texts[result.middle_ids[0]]
    assert first.startswith(removed) or removed.startswith(first)
    assert result.stats.healing == "ok"


def test_step_mask_continues_a_partial_match_inside_the_block(texts):
    healing = Healing(texts, b"return")
    r_id = texts.texts.index(b"r")
    positions = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    mask = healing.step_mask(positions, len(texts.texts), torch.device("cpu"))
    first = mask(0, torch.empty(2, 0, dtype=torch.long))
    assert first[0, r_id] and first[1].all()  # only the block holding position 0 is constrained
    after_r = mask(1, torch.tensor([[r_id], [0]]))
    allowed = {texts.texts[i] for i in after_r[0].nonzero().flatten().tolist()}
    assert allowed and all(t.startswith(b"eturn") or b"eturn".startswith(t) for t in allowed)
    covering = [i for i, t in enumerate(texts.texts) if t.startswith(b"return")]
    if covering:  # a token that spells all of it ends the constraint
        assert mask(1, torch.tensor([[covering[0]], [0]])) is None
