"""The decode loop end to end on the tiny models: commit counts per method, the invariant, scope, EOS, budget,
cancellation, determinism and the text API."""

import json
import math
import shutil
import time
from contextlib import contextmanager

import pytest
import torch

import decoding
from decoding import Cancelled, DecodeConfig, decode, infill
from decoding.config import DEFAULT_TAU
from decoding.models import load_ar

PREFIX = [40, 41, 42, 43, 44]
SUFFIX = [50, 51, 52]


def run(models, **settings):
    """decode() with the given settings; returns (result, StepInfo list)."""
    steps = []
    result = decode(models, PREFIX, SUFFIX, DecodeConfig(**settings), on_step=steps.append)
    return result, steps


@contextmanager
def hooked(module, hook, pre=False):
    handle = module.register_forward_pre_hook(hook) if pre else module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def test_public_api_names():
    for name in ("DecodeConfig", "PRESETS", "preset", "load_models", "ModelPair", "default_model_dir", "decode",
                 "infill", "DecodeResult", "DecodeStats", "StepInfo", "Cancelled"):
        assert hasattr(decoding, name), name


def test_static_commits_exactly_one_block_per_forward_pass(tiny_models):
    result, steps = run(tiny_models, mode="static", block_size=4, max_new_tokens=16, eos_casting=False)
    s = result.stats
    assert s.committed_per_iteration == [4, 4, 4, 4]
    assert s.dlm_forwards == s.ar_calls == s.iterations == 4
    assert s.as_dict()["nfe_per_token"] == pytest.approx(1 / 4)
    assert len(result.middle_ids) == 16 and tiny_models.dlm.mask_id not in result.middle_ids
    # every committed block is a whole block: positions 4b .. 4b+3
    for step in steps:
        assert sorted(step.positions) == list(range(min(step.positions), min(step.positions) + 4))
        assert min(step.positions) % 4 == 0


def test_dynamic_threshold_sets_the_parallelism(tiny_models):
    loose, _ = run(tiny_models, mode="dynamic", tau=100.0, block_size=4, max_new_tokens=16, eos_casting=False)
    assert loose.stats.committed_per_iteration == [4, 4, 4, 4]  # every prefix qualifies: whole blocks
    strict, steps = run(tiny_models, mode="dynamic", tau=0.0, block_size=4, max_new_tokens=16, eos_casting=False)
    # nothing is below tau = 0: every iteration is the k <= 1 fallback, one DLM token
    assert strict.stats.committed_per_iteration == [1] * 16
    assert strict.stats.ar_calls == 16


def test_dynamic_without_tau_uses_the_ars_own_threshold(tiny_models, monkeypatch):
    # entropy scales differ between models, so tau=None defers to the AR's codila_tau (config.json)
    settings = dict(mode="dynamic", block_size=4, max_new_tokens=16, eos_casting=False)
    assert tiny_models.ar.tau is None
    unset, _ = run(tiny_models, **settings)
    assert unset.stats.tau == DEFAULT_TAU and unset.stats.committed_per_iteration == [1] * 16
    monkeypatch.setattr(tiny_models.ar.model.config, "codila_tau", 100.0, raising=False)
    own, _ = run(tiny_models, **settings)
    assert own.stats.tau == 100.0 and own.stats.committed_per_iteration == [4, 4, 4, 4]
    explicit, _ = run(tiny_models, **settings, tau=0.0)  # an explicit tau wins over the model's
    assert explicit.stats.tau == 0.0 and explicit.stats.committed_per_iteration == [1] * 16
    static, _ = run(tiny_models, **{**settings, "mode": "static"})
    assert static.stats.tau is None  # no threshold in force


def test_a_bad_codila_tau_or_block_size_in_the_ar_config_is_refused_at_load(tiny_model_dirs, tmp_path):
    ar = tmp_path / "ar"
    shutil.copytree(tiny_model_dirs[1], ar)
    config = json.loads((ar / "config.json").read_text())
    (ar / "config.json").write_text(json.dumps({**config, "codila_tau": "high"}))
    with pytest.raises(ValueError, match="codila_tau must be a number of nats"):
        load_ar(ar, device="cpu")
    # the block_size setting's own range (decoding.config), named with the file it came from
    (ar / "config.json").write_text(json.dumps({**config, "codila_block_size": 17}))
    with pytest.raises(ValueError, match=r"config.json: codila_block_size: block_size must be between 1 and 16"):
        load_ar(ar, device="cpu")
    (ar / "config.json").write_text(json.dumps({**config, "codila_tau": 5, "codila_block_size": 8}))
    assert load_ar(ar, device="cpu").tau == 5


def test_dynamic_fallback_takes_the_dlm_token_at_the_dlm_most_confident_position(tiny_models):
    config = DecodeConfig(mode="dynamic", tau=0.0, max_new_tokens=8, eos_casting=False)
    dlm_only = DecodeConfig(method="dlm", tokens_per_step=1, max_new_tokens=8, eos_casting=False)
    # sharpen the random DLM so its entropies are far apart (no near-ties between positions)
    with hooked(tiny_models.dlm.model.lm_head, lambda module, args, out: out * 50.0):
        a = decode(tiny_models, PREFIX, SUFFIX, config)
        b = decode(tiny_models, PREFIX, SUFFIX, dlm_only)
    # with scope covering the whole middle the fallback is exactly Dream's one-token-per-step decoding
    assert a.middle_ids == b.middle_ids


def test_dlm_baselines(tiny_models):
    k3, _ = run(tiny_models, method="dlm", tokens_per_step=3, max_new_tokens=16, eos_casting=False)
    assert k3.stats.committed_per_iteration == [3, 3, 3, 3, 3, 1]
    assert k3.stats.ar_calls == 0 and k3.stats.dlm_forwards == 6
    everything, _ = run(tiny_models, method="dlm", confidence=0.0, max_new_tokens=16, eos_casting=False)
    assert everything.stats.committed_per_iteration == [16]
    one_by_one, _ = run(tiny_models, method="dlm", confidence=1.0, max_new_tokens=5, eos_casting=False)
    assert one_by_one.stats.committed_per_iteration == [1] * 5  # at least the most confident one


@pytest.mark.parametrize("settings", [
    dict(method="codila", mode="static"), dict(method="codila", mode="dynamic"),
    dict(method="codila-top1", mode="static"), dict(method="dlm", tokens_per_step=2),
    dict(method="dlm", confidence=0.9), dict(method="codila", mode="dynamic", kv_cache="dual"),
])
def test_every_iteration_commits_at_least_one_token(tiny_models, settings):
    result, steps = run(tiny_models, max_new_tokens=13, block_size=4, **settings)
    remaining = [13] + [s.remaining for s in steps]
    assert all(s.committed >= 1 for s in steps)
    assert all(a > b for a, b in zip(remaining, remaining[1:]))  # strictly fewer masks each iteration
    assert steps[-1].remaining == 0 and len(steps) <= 13


def test_scope_one_decodes_blocks_left_to_right(tiny_models):
    _, steps = run(tiny_models, mode="static", scope=1, block_size=2, max_new_tokens=8, eos_casting=False)
    assert [sorted(s.positions) for s in steps] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    _, wide = run(tiny_models, mode="static", scope=4, block_size=2, max_new_tokens=8, eos_casting=False)
    assert [sorted(s.positions) for s in wide] != [[0, 1], [2, 3], [4, 5], [6, 7]]  # entropy picks the order


def test_a_partial_last_block_is_padded_not_decoded_into_the_text(tiny_models):
    result, _ = run(tiny_models, mode="static", block_size=4, max_new_tokens=6, eos_casting=False)
    assert result.stats.committed_per_iteration == [4, 2] or result.stats.committed_per_iteration == [2, 4]
    assert len(result.middle_ids) == 6


def test_eos_collapse_ends_without_hanging_and_gives_an_empty_middle(tiny_models):
    eos = tiny_models.dlm.eos_id

    def eos_everywhere(module, args, out):
        out = out.clone()
        out[..., eos] += 100.0
        return out

    with hooked(tiny_models.dlm.model.lm_head, eos_everywhere), hooked(tiny_models.ar.model.lm_head, eos_everywhere):
        for settings in (dict(method="dlm"), dict(mode="dynamic"), dict(mode="static"), dict(method="codila-top1")):
            result, steps = run(tiny_models, max_new_tokens=32, **settings)
            assert result.text == "" and result.tokens == [] and result.stats.tokens == 0
            assert set(result.middle_ids) == {eos}


def test_eos_penalty_counters_eos_collapse(tiny_models):
    eos = tiny_models.dlm.eos_id

    def eos_first(module, args, out):
        out = out.clone()
        out[..., eos] += 5.0
        return out

    # EOS as an ordinary token, committed anywhere: the argmax everywhere, so the middle collapses
    plain = dict(method="dlm", max_new_tokens=8, eos_min_prob=0.0, eos_frontier=False)
    with hooked(tiny_models.dlm.model.lm_head, eos_first):
        collapsed, _ = run(tiny_models, **plain)
        penalised, _ = run(tiny_models, **plain, eos_penalty=1000.0)
    assert collapsed.tokens == []
    assert len(penalised.tokens) == 8 and eos not in penalised.middle_ids


@pytest.mark.parametrize("settings", [dict(method="dlm"), dict(mode="static"), dict(mode="dynamic")])
def test_eos_that_is_only_the_likeliest_token_does_not_end_the_middle(tiny_models, settings):
    """EOS at ~30% everywhere is the argmax among hundreds of tokens, yet the middle more likely goes on:
    with the default EOS rule every position gets a real token; treated as an ordinary token, EOS wins."""
    eos = tiny_models.dlm.eos_id

    def eos_likeliest(module, args, out):
        out = out.clone()
        rest = out[..., torch.arange(out.shape[-1]) != eos].logsumexp(-1)  # (..,) log-mass of the others
        out[..., eos] = rest + math.log(0.3 / 0.7)  # P(EOS) = 0.3 exactly
        return out

    with hooked(tiny_models.dlm.model.lm_head, eos_likeliest), hooked(tiny_models.ar.model.lm_head, eos_likeliest):
        kept, _ = run(tiny_models, max_new_tokens=8, **settings)
        collapsed, _ = run(tiny_models, max_new_tokens=8, eos_min_prob=0.0, eos_frontier=False, **settings)
    assert len(kept.tokens) == 8 and eos not in kept.middle_ids[:8]
    assert collapsed.tokens == [] or eos in collapsed.middle_ids[:8]


def test_same_seed_same_output_different_seed_different_output(tiny_models):
    settings = dict(temperature=1.0, ar_temperature=1.0, ar_top_p=1.0, max_new_tokens=16, eos_casting=False,
                    mode="static")
    a, _ = run(tiny_models, seed=7, **settings)
    torch.manual_seed(123)  # the global RNG is not used
    b, _ = run(tiny_models, seed=7, **settings)
    c, _ = run(tiny_models, seed=8, **settings)
    assert a.middle_ids == b.middle_ids
    assert a.middle_ids != c.middle_ids


def test_cancel_is_checked_before_every_iteration(tiny_models):
    steps = []
    with pytest.raises(Cancelled):
        decode(tiny_models, PREFIX, SUFFIX, DecodeConfig(max_new_tokens=16, mode="static"),
               cancel=lambda: len(steps) >= 1, on_step=steps.append)
    assert len(steps) == 1  # cancelled within one iteration of the request
    forwards = []
    with hooked(tiny_models.dlm.model, lambda m, a, k: forwards.append(1), pre=False):
        with pytest.raises(Cancelled):
            decode(tiny_models, PREFIX, SUFFIX, DecodeConfig(), cancel=lambda: True)
    assert forwards == []  # cancelled before the first forward pass


def test_deadline_is_respected_by_raising_parallelism(tiny_models):
    def slow(module, args):
        time.sleep(0.02)  # a DLM forward pass costs >= 20 ms

    settings = dict(mode="static", block_size=2, max_new_tokens=64, eos_casting=False)
    with hooked(tiny_models.dlm.model, slow, pre=True):
        free, _ = run(tiny_models, **settings)
        timed, steps = run(tiny_models, deadline_ms=150.0, **settings)
    assert free.stats.iterations == 32 and free.stats.seconds > 0.64 and not free.stats.deadline_hit
    # every iteration costs >= 20 ms, so ending by 150 ms leaves room for at most 7 and the final flush; the
    # count, not the wall time, is the check: on a loaded machine the AR alone can take longer than the budget
    assert timed.stats.iterations <= 0.15 / 0.02 + 1
    assert timed.stats.deadline_hit and tiny_models.dlm.mask_id not in timed.middle_ids
    assert max(timed.stats.committed_per_iteration) > 2  # more than one block per iteration at some point


def test_infill_keeps_the_last_prefix_and_first_suffix_tokens(tiny_models, monkeypatch):
    seen = {}

    def spy(models, prefix_ids, suffix_ids, config, **kw):
        seen.update(prefix=prefix_ids, suffix=suffix_ids)
        return "result"

    monkeypatch.setattr("decoding.loop.decode", spy)
    tok = tiny_models.dlm.tokenizer
    prefix, suffix = "import os\nimport sys\n\ndef main():\n", "    return 0\n\nclass Point:\n"
    p_ids, s_ids = tok.encode(prefix, add_special_tokens=False), tok.encode(suffix, add_special_tokens=False)
    plain = DecodeConfig(token_healing=False)
    assert infill(tiny_models, prefix, suffix, plain, max_prefix_tokens=3, max_suffix_tokens=2) == "result"
    assert seen == dict(prefix=p_ids[-3:], suffix=s_ids[:2])
    infill(tiny_models, prefix, suffix, plain, max_prefix_tokens=0, max_suffix_tokens=1000)
    assert seen == dict(prefix=[], suffix=s_ids)
    # healing takes the last kept prefix token off the canvas and hands its text to the decode
    infill(tiny_models, prefix, suffix, DecodeConfig(), max_prefix_tokens=3, max_suffix_tokens=2)
    assert seen == dict(prefix=p_ids[-3:-1], suffix=s_ids[:2])
    with pytest.raises(ValueError, match="max_prefix_tokens"):
        infill(tiny_models, prefix, suffix, DecodeConfig(), max_prefix_tokens=-1)


def test_infill_returns_the_decoded_middle_text(tiny_models):
    result = infill(tiny_models, "def add(a, b):\n", "\n", DecodeConfig(max_new_tokens=12, eos_casting=False))
    tok = tiny_models.dlm.tokenizer
    assert result.text == tok.decode(result.tokens).removeprefix("\n")  # the healed newline stays in the prefix
    assert result.tokens == [t for t in result.middle_ids if t != tiny_models.dlm.eos_id]
    assert result.stats.tokens == len(result.tokens)
    d = result.stats.as_dict()
    assert {"dlm_forwards", "ar_calls", "tokens", "iterations", "seconds", "tokens_per_iteration",
            "nfe_per_token", "deadline_hit"} <= set(d)
    assert d["dlm_seconds"] + d["ar_seconds"] + d["other_seconds"] == pytest.approx(d["seconds"])


def test_bad_context_ids_are_refused(tiny_models):
    with pytest.raises(ValueError, match="mask id"):
        decode(tiny_models, [5, tiny_models.dlm.mask_id], [], DecodeConfig())
    with pytest.raises(ValueError, match="token ids"):
        decode(tiny_models, [5], [10**9], DecodeConfig())
    with pytest.raises(ValueError, match="more than the DLM's 2048 positions"):
        decode(tiny_models, [5] * 2000, [6] * 40, DecodeConfig(max_new_tokens=16))
    with pytest.raises(ValueError, match="block_size 16 needs 34 AR positions"):
        tiny_models.ar.model.config.max_position_embeddings = 32
        try:
            decode(tiny_models, [5], [6], DecodeConfig(block_size=16))
        finally:
            tiny_models.ar.model.config.max_position_embeddings = 64


def test_completion_without_context(tiny_models):
    result = decode(tiny_models, [], [], DecodeConfig(max_new_tokens=8, mode="static", kv_cache="dual"))
    assert len(result.middle_ids) == 8 and tiny_models.dlm.mask_id not in result.middle_ids


def test_codila_projects_only_the_candidate_rows_through_the_lm_head(tiny_models):
    rows = []
    with hooked(tiny_models.dlm.model.lm_head, lambda module, args, out: rows.append(args[0].shape[1])):
        run(tiny_models, mode="static", scope=2, block_size=4, max_new_tokens=16, eos_casting=False)
        assert rows == [8, 8, 8, 4]  # the open positions of at most 2 candidate blocks, not all 16
        rows.clear()
        run(tiny_models, method="dlm", tokens_per_step=4, max_new_tokens=16, eos_casting=False)
        assert rows == [16, 12, 8, 4]  # the DLM baseline ranks every masked position


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_decode_on_cuda_is_seeded_and_complete(tiny_model_dirs):
    from decoding import load_models

    models = load_models(*tiny_model_dirs, device="cuda", dtype="float32")
    config = DecodeConfig(max_new_tokens=16, temperature=1.0, ar_temperature=1.0, kv_cache="dual", seed=3)
    a = decode(models, PREFIX, SUFFIX, config)
    b = decode(models, PREFIX, SUFFIX, config)
    assert a.middle_ids == b.middle_ids and models.dlm.mask_id not in a.middle_ids
    assert a.stats.dlm_seconds > 0 and a.stats.ar_seconds > 0
