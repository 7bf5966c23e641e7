"""The default model's executor and the CoDiLA methods on the causal-context DLM (decoding.fim_codila): the
executor is a slice of the DLM's own base (same tensors, DLM unchanged), B = 1 is the base's greedy middle,
static commits whole blocks, dynamic commits by the executor's entropy, top-1 differs only in its inputs."""

import pytest
import torch

import decoding.fim as fim_mod
import decoding.fim_codila as fc
from benchmarks.specs import parse_spec
from benchmarks.tasks import Task
from decoding import infill, preset
from decoding.fim import step
from decoding.models import load_models
from training.tiny_models import build_tiny_fim_dlm, build_tiny_fim_executor

PREFIX = "def add(a, b):\n    "
SUFFIX = "\n\nfor i in range(10):\n    print(i)\n"


def config(method, **changes):
    knobs = dict(read_suffix=True, token_healing=False, max_new_tokens=16, ar_temperature=0.0)
    return preset("balanced", method=method, **{**knobs, **changes})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("fim-codila")
    base, dlm = build_tiny_fim_dlm(root)
    ar = build_tiny_fim_executor(root, base, layers=1, block_size=4)
    alone = load_models(dlm, device="cpu", dtype="float32")
    return alone, load_models(dlm, ar, device="cpu", dtype="float32")


def _round_logits(models):
    """One drafting pass of the DLM over a fixed prompt: (verify, drafts) logits."""
    fim = models.dlm.fim
    tok = models.dlm.tokenizer
    ids = fim.prompt(tok.encode(PREFIX, add_special_tokens=False), tok.encode(SUFFIX, add_special_tokens=False))
    fim.forget_prompt()  # a cold prompt each time: a reused cache computes the same numbers in another order
    kv, _, _ = fim_mod.prefill(fim, ids[:-2])
    fim.forget_prompt()
    return step(fim, kv, ids[-2:], 4)


def test_the_executor_shares_the_dlms_tensors_and_leaves_the_dlm_unchanged(tiny):
    alone, pair = tiny
    dlm_base = pair.dlm.model.get_base_model()
    dlm_tensors = {p.data_ptr() for n, p in dlm_base.named_parameters() if "lora_" not in n}
    slice_params = dict(pair.ar.model.get_base_model().named_parameters())
    shared = {n: p for n, p in slice_params.items() if "lora_" not in n}
    assert shared and all(p.data_ptr() in dlm_tensors for p in shared.values())  # no second copy of the base
    assert slice_params["model.embed_tokens.weight"].data_ptr() == dlm_base.model.embed_tokens.weight.data_ptr()
    assert slice_params["lm_head.weight"].data_ptr() == dlm_base.lm_head.weight.data_ptr()
    assert len(pair.ar.model.get_base_model().model.layers) == 1 < len(dlm_base.model.layers)
    assert any("lora_" in n for n in slice_params)  # the executor's own adapter, on the slice only
    assert not any("lora_" in n for n, _ in dlm_base.model.layers[0].mlp.up_proj.named_parameters())

    before = _round_logits(pair)
    infill(pair, PREFIX, SUFFIX, config("codila"))  # the executor runs on the shared tensors
    after, reference = _round_logits(pair), _round_logits(alone)
    for a, b, r in zip(before, after, reference):
        assert torch.equal(a, b) and torch.equal(a, r)


def test_with_one_token_per_block_every_method_is_the_bases_greedy_middle(tiny):
    _, pair = tiny
    ar = infill(pair, PREFIX, SUFFIX, config("ar"))
    assert ar.tokens
    for method, changes in (("codila", {"block_size": 1}), ("codila-top1", {"block_size": 1}),
                            ("dlm", {"tokens_per_step": 1})):
        got = infill(pair, PREFIX, SUFFIX, config(method, **changes))
        assert got.tokens == ar.tokens and got.text == ar.text, method
        assert got.stats.ar_calls == 0  # nothing behind the frontier: the base's token alone


def test_static_codila_commits_a_whole_block_per_pass_unverified(tiny):
    _, pair = tiny
    got = infill(pair, PREFIX, SUFFIX, config("codila", block_size=4, mode="static", max_new_tokens=13))
    per = got.stats.committed_per_iteration
    assert per[0] == 1  # the first round has no drafts yet: the base's token alone
    assert all(n == 4 for n in per[1:-1]) and sum(per) >= len(got.tokens)
    assert got.stats.dlm_forwards == len(per) and got.stats.ar_calls == len(per) - 1
    assert got.stats.accepted == got.stats.drafted  # nothing is verified
    assert len(got.tokens) <= 13


def test_dynamic_codila_commits_by_the_executors_entropy(tiny):
    _, pair = tiny
    ar = infill(pair, PREFIX, SUFFIX, config("ar"))
    cautious = infill(pair, PREFIX, SUFFIX, config("codila", block_size=4, mode="dynamic", tau=1e-9))
    assert set(cautious.stats.committed_per_iteration) == {1}  # only the frontier: the base's token
    assert cautious.tokens == ar.tokens and cautious.stats.ar_calls > 0
    bold = infill(pair, PREFIX, SUFFIX, config("codila", block_size=4, mode="dynamic", tau=100.0))
    static = infill(pair, PREFIX, SUFFIX, config("codila", block_size=4, mode="static"))
    assert bold.tokens == static.tokens and bold.stats.tau == 100.0 and static.stats.tau is None


def test_top1_differs_from_soft_only_through_the_executors_inputs(tiny, monkeypatch):
    _, pair = tiny
    soft = infill(pair, PREFIX, SUFFIX, config("codila", block_size=4, mode="static"))
    seen = []
    real = fc.block_inputs

    def spy(probs, committed, embeddings, open_id, close_id, eos_id, hard=False):
        seen.append(hard)
        out = real(probs, committed, embeddings, open_id, close_id, eos_id, hard=hard)
        if hard:  # the argmax embedding at every decoded position
            top = probs.argmax(-1)[0, 1:]
            assert torch.equal(out[0, 2:-1], embeddings[top])
        return out

    monkeypatch.setattr(fc, "block_inputs", spy)
    top1 = infill(pair, PREFIX, SUFFIX, config("codila-top1", block_size=4, mode="static"))
    assert seen and all(seen)
    monkeypatch.setattr(fc, "block_inputs", lambda *a, hard=False: real(*a, hard=False))
    as_soft = infill(pair, PREFIX, SUFFIX, config("codila-top1", block_size=4, mode="static"))
    assert as_soft.tokens == soft.tokens  # with soft inputs, top-1 is codila token for token
    assert top1.stats.committed_per_iteration == soft.stats.committed_per_iteration


def test_dlm_reads_row_k_from_the_draft_that_predicts_frontier_plus_k(tiny, monkeypatch):
    """A drafter that drafts the base's own continuation: dlm:k=4 writes the base's middle in fewer passes
    (rows shifted by one would write something else)."""
    _, pair = tiny
    ar = infill(pair, PREFIX, SUFFIX, config("ar"))
    truth = ar.tokens + [pair.dlm.eos_id] * 16
    tok = pair.dlm.tokenizer
    prompt_len = len(pair.dlm.fim.prompt(tok.encode(PREFIX, add_special_tokens=False),
                                         tok.encode(SUFFIX, add_special_tokens=False)))

    def oracle_step(fim, kv, pending, block):
        verify, drafted = step(fim, kv, pending, block)
        done = kv.get_seq_length() - prompt_len  # middle tokens in the cache, pending included
        drafted = torch.full_like(drafted, -1e4)
        for k in range(drafted.shape[0]):
            drafted[k, truth[done + k + 1]] = 0.0
        return verify, drafted

    monkeypatch.setattr(fim_mod, "step", oracle_step)
    fast = infill(pair, PREFIX, SUFFIX, config("dlm", tokens_per_step=4))
    assert fast.tokens == ar.tokens and fast.stats.dlm_forwards < ar.stats.dlm_forwards


def test_without_an_executor_codila_is_refused_and_dlm_runs(tiny):
    alone, _ = tiny
    for method in ("codila", "codila-top1"):
        with pytest.raises(ValueError, match="needs its executor: none is loaded.*training.executor"):
            infill(alone, PREFIX, SUFFIX, config(method))
    assert infill(alone, PREFIX, SUFFIX, config("dlm", tokens_per_step=4)).stats.dlm_forwards > 0
    with pytest.raises(ValueError, match="confidence"):
        infill(alone, PREFIX, SUFFIX, config("dlm", confidence=0.9))


def test_the_benchmark_rows_run_on_the_default_layout(tiny):
    alone, pair = tiny
    task = Task("t", PREFIX, SUFFIX, " a + b")
    for spec in ("codila:b=4", "codila-top1:b=4", "dlm:k=4", "dlm:k=1"):
        middle = parse_spec(spec).infill(pair, task, 8, 256)
        assert middle.stats["dlm_forwards"] >= 1 and len(middle.stats["committed_per_iteration"]) >= 1
    assert parse_spec("dlm:k=4").infill(alone, task, 8, 256).stats["dlm_forwards"] >= 1
    with pytest.raises(ValueError, match="executor"):
        parse_spec("codila:b=4").infill(alone, task, 8, 256)
