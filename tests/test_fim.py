"""The causal-context DLM (decoding.fim): verified decoding gives the base's own greedy middle, whatever the
drafter proposes; the prompt's KV cache is reused across requests without changing a token."""

import pytest
import torch

import decoding.fim as fim_mod
from decoding import infill, preset
from decoding.fim import DraftMeter, generate, round_mask
from decoding.models import load_fim_base, load_models
from training.tiny_models import build_tiny_fim_dlm

PREFIX = "def add(a, b):\n    "


def fim_config(**changes):
    """The balanced preset reading the suffix through the FIM tokens (the presets complete the prefix)."""
    return preset("balanced", read_suffix=True, **changes)

SUFFIX = "\n\nfor i in range(10):\n    print(i)\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base, adapter = build_tiny_fim_dlm(tmp_path_factory.mktemp("fim"))
    return base, adapter, load_models(adapter, device="cpu", dtype="float32")


def _ids(models, text):
    return models.dlm.tokenizer.encode(text, add_special_tokens=False)


def test_the_default_layout_loads_as_a_drafting_dlm_without_an_executor(tiny):
    _, _, models = tiny
    assert models.dlm.fim is not None and models.dlm.fim.drafts and models.ar is None
    with pytest.raises(ValueError, match="needs its executor: none is loaded"):
        infill(models, PREFIX, SUFFIX, fim_config(method="codila", max_new_tokens=8))


def paying_meter() -> DraftMeter:
    """A meter that has measured drafting to pay (tests that look at the drafts must not depend on timing)."""
    return DraftMeter(drafting_ms=1.0, plain_ms=1.0, gain=1.0)


def test_verified_decoding_is_the_bases_greedy_output_whatever_the_drafts(tiny, monkeypatch):
    _, _, models = tiny
    monkeypatch.setattr(models.dlm.fim, "meter", paying_meter())
    ar = infill(models, PREFIX, SUFFIX, fim_config(method="ar", max_new_tokens=24, token_healing=False))
    assert ar.stats.dlm_forwards == len(ar.tokens) - 1 or ar.stats.dlm_forwards == len(ar.tokens)
    for k in (1, 4, 8):
        got = infill(models, PREFIX, SUFFIX, fim_config(block_size=k, max_new_tokens=24, token_healing=False))
        assert got.tokens == ar.tokens and got.text == ar.text
        assert got.stats.drafted > 0  # the random adapter drafted; the base rejected what it would not write

    # a perfect drafter (its drafts are the base's own continuation): same output, fewer passes
    truth = ar.tokens + [models.dlm.eos_id] * 16
    real_step = fim_mod.step

    def oracle_step(fim, kv, pending, block):
        verify, drafted = real_step(fim, kv, pending, block)
        done = kv.get_seq_length() - prompt_len  # tokens of the middle in the cache, pending included
        drafted = torch.full_like(drafted, -1e4)
        for k in range(drafted.shape[0]):
            drafted[k, truth[done + k + 1]] = 0.0
        return verify, drafted

    prompt_len = len(models.dlm.fim.prompt(_ids(models, PREFIX), _ids(models, SUFFIX)))
    monkeypatch.setattr(fim_mod, "step", oracle_step)
    fast = infill(models, PREFIX, SUFFIX, fim_config(block_size=4, max_new_tokens=24, token_healing=False))
    assert fast.tokens == ar.tokens
    assert fast.stats.accepted > 0 and fast.stats.dlm_forwards < ar.stats.dlm_forwards


def test_token_healing_and_the_stop_rule_apply_to_verified_and_ar_alike(tiny):
    _, _, models = tiny
    first_line = lambda text: text.split("\n", 1)[0] if "\n" in text else None  # noqa: E731
    a = infill(models, PREFIX, SUFFIX, fim_config(method="ar", max_new_tokens=24), stop=first_line)
    v = infill(models, PREFIX, SUFFIX, fim_config(max_new_tokens=24), stop=first_line)
    assert a.text == v.text and "\n" not in v.text
    assert a.stats.healing == v.stats.healing != "off"


def test_the_prompt_cache_is_reused_and_changes_nothing(tiny):
    _, _, models = tiny
    fim = models.dlm.fim
    prefix, suffix = _ids(models, PREFIX), _ids(models, SUFFIX)
    fim.forget_prompt()
    cold = generate(fim, prefix, suffix, 12, draft=4)
    warm = generate(fim, prefix, suffix, 12, draft=4)
    assert warm.tokens == cold.tokens and warm.stats.reused_tokens > 0 and cold.stats.reused_tokens == 0
    # a keystroke later: the prompt differs near its end; the reused part is exact
    typed = _ids(models, PREFIX + "r")
    fim.forget_prompt()
    fresh = generate(fim, typed, suffix, 12, draft=4)
    generate(fim, prefix, suffix, 12, draft=4)
    after = generate(fim, typed, suffix, 12, draft=4)
    assert after.tokens == fresh.tokens and after.stats.reused_tokens > len(typed) // 2


def test_a_plain_base_completes_from_the_prefix_or_fills_the_middle(tiny):
    base, _, _ = tiny
    pair = load_fim_base(base, device="cpu", dtype="float32")
    assert pair.dlm.fim is not None and not pair.dlm.fim.drafts
    fim = infill(pair, PREFIX, SUFFIX, fim_config(method="ar", max_new_tokens=8, token_healing=False))
    prefix_only = infill(pair, PREFIX, SUFFIX, preset("balanced", method="ar", max_new_tokens=8,
                                                      token_healing=False, read_suffix=False))
    assert fim.stats.prefill_tokens > prefix_only.stats.prefill_tokens  # the suffix was read, or not
    with pytest.raises(ValueError, match="drafting adapter"):
        infill(pair, PREFIX, SUFFIX, fim_config(method="verified", max_new_tokens=8))


def test_round_mask_is_causal_for_pending_tokens_and_bidirectional_for_the_block():
    m = round_mask(past=3, pending=2, block=3, device=torch.device("cpu"))[0, 0]  # (5, 8)
    assert m.shape == (5, 8) and bool(m[:, :3].all())  # everything sees the past
    assert m[0, 3:].tolist() == [True, False, False, False, False]  # pending 0 sees itself only
    assert m[1, 3:].tolist() == [True, True, False, False, False]
    assert bool(m[2:, 3:].all())  # the block sees every pending token and the whole block


def test_the_draft_meter_drafts_where_drafting_pays_and_explores_the_other_choice():
    meter = DraftMeter(explore=4)
    assert meter.draft_now()  # nothing measured: draft first
    meter.passed(True, 60.0)
    meter.accepted(0)
    assert not meter.draft_now()  # then measure a plain pass
    meter.passed(False, 30.0)
    # 1.0 token per 60 ms drafting against 1 per 30 ms plain: plain, except every 4th round
    choices = [meter.draft_now() for _ in range(8)]  # rounds 3 to 10
    assert choices == [False, True, False, False, False, True, False, False]  # rounds 4 and 8 explore
    for _ in range(30):  # the drafts start being accepted: 3 per drafting pass, 4 tokens per 60 ms
        meter.accepted(3)
    assert meter.pays() and [meter.draft_now() for _ in range(4)] == [True, False, True, True]  # 12 explores


def test_verified_keeps_to_plain_passes_where_drafting_does_not_pay_and_the_output_is_the_same(tiny, monkeypatch):
    _, _, models = tiny
    config = fim_config(block_size=4, max_new_tokens=24, token_healing=False)
    monkeypatch.setattr(models.dlm.fim, "meter", paying_meter())
    drafting = infill(models, PREFIX, SUFFIX, config)
    # measured: drafting passes cost 10x a plain one and yield nothing
    losing = DraftMeter(drafting_ms=100.0, plain_ms=10.0, gain=0.0, weight=0.0)  # weight 0: it stays so
    monkeypatch.setattr(models.dlm.fim, "meter", losing)
    plain = infill(models, PREFIX, SUFFIX, config)
    assert plain.tokens == drafting.tokens and plain.text == drafting.text
    assert drafting.stats.drafted > 0
    rounds = plain.stats.dlm_forwards
    assert plain.stats.drafted <= 4 * (rounds // losing.explore + 1)  # only the exploring rounds drafted
