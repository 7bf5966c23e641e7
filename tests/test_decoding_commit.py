"""The commit rules and token maths as pure functions, on hand-built entropies and masks."""

import math

import pytest
import torch

from decoding.commit import (
    above_confidence,
    ban_eos_behind_frontier,
    block_mean_entropy,
    candidate_blocks,
    cast_eos,
    dynamic_commit,
    lowest_entropy,
    static_commit,
)
from decoding.sampling import entropy, eos_rule, greedy, make_sampler

T, F = True, False


def test_entropy_in_nats_and_banned_ids_count_zero():
    uniform4 = torch.zeros(4)
    assert entropy(uniform4).item() == pytest.approx(math.log(4))
    two_of_four = torch.tensor([0.0, 0.0, -math.inf, -math.inf])  # two ids banned
    assert entropy(two_of_four).item() == pytest.approx(math.log(2))
    point = torch.tensor([0.0, -math.inf, -math.inf])
    assert entropy(point).item() == 0.0
    # batched: (2, 3) -> (2,)
    assert entropy(torch.stack([torch.zeros(3), point])).tolist() == pytest.approx([math.log(3), 0.0])


def test_candidate_scope_starts_at_the_frontier_and_skips_finished_blocks():
    open_blocks = torch.tensor([[F, F], [F, T], [F, F], [T, T], [T, F], [T, T]])
    assert candidate_blocks(open_blocks, scope=10).tolist() == [1, 3, 4, 5]
    assert candidate_blocks(open_blocks, scope=2).tolist() == [1, 3]
    assert candidate_blocks(open_blocks, scope=1).tolist() == [1]


def test_block_mean_counts_only_open_positions():
    ent = torch.tensor([[1.0, 3.0, 5.0], [9.0, 9.0, 9.0]])
    open_ = torch.tensor([[F, T, T], [F, F, F]])
    means = block_mean_entropy(ent, open_)
    assert means[0].item() == pytest.approx(4.0)  # (3 + 5) / 2, the committed 1.0 ignored
    assert means[1].item() == math.inf  # nothing open


def test_static_commits_exactly_the_open_tokens_of_the_lowest_entropy_block():
    ent = torch.tensor([[0.9, 0.9, 0.9, 0.9], [0.1, 5.0, 0.2, 0.3], [0.4, 0.4, 0.4, 0.4]])
    open_ = torch.tensor([[T, T, T, T], [F, F, T, T], [T, T, T, T]])
    mask = static_commit(ent, open_)
    # block 1's open mean is 0.25 (the committed 5.0 does not count), lower than 0.4 and 0.9
    assert mask.tolist() == [[F, F, F, F], [F, F, T, T], [F, F, F, F]]


def test_static_takes_more_blocks_when_the_budget_needs_more_tokens():
    ent = torch.tensor([[0.9, 0.9], [0.1, 0.1], [0.4, 0.4]])
    open_ = torch.ones(3, 2, dtype=torch.bool)
    assert static_commit(ent, open_, need=3).tolist() == [[F, F], [T, T], [T, T]]
    assert static_commit(ent, open_, need=2).tolist() == [[F, F], [T, T], [F, F]]


def test_dynamic_commits_the_largest_prefix_below_tau():
    ent = torch.tensor([
        [0.1, 0.2, 2.0, 2.0],  # prefix means 0.1, 0.15, 0.77, 1.08 -> 2 tokens below 0.5
        [0.3, 0.3, 0.3, 3.0],  # 0.3, 0.3, 0.3, 0.975 -> 3 tokens below 0.5
    ])
    open_ = torch.ones(2, 4, dtype=torch.bool)
    assert dynamic_commit(ent, open_, tau=0.5).tolist() == [[F, F, F, F], [T, T, T, F]]
    # a high tau admits whole blocks; ties in size go to the lower mean (0.975 < 1.075)
    assert dynamic_commit(ent, open_, tau=10.0).tolist() == [[F, F, F, F], [T, T, T, T]]


def test_dynamic_mean_skips_committed_positions_and_a_prefix_may_jump_over_them():
    ent = torch.tensor([[0.1, 9.0, 0.2, 0.3]])
    open_ = torch.tensor([[T, F, T, T]])  # position 1 already committed (its 9.0 is not counted)
    assert dynamic_commit(ent, open_, tau=0.5).tolist() == [[T, F, T, T]]


def test_dynamic_k_of_one_falls_back_to_the_dlm():
    ent = torch.tensor([[0.1, 3.0, 3.0], [2.0, 2.0, 2.0]])  # only single-token prefixes qualify
    open_ = torch.ones(2, 3, dtype=torch.bool)
    assert dynamic_commit(ent, open_, tau=0.5) is None
    assert dynamic_commit(torch.full((2, 3), 4.0), open_, tau=0.5) is None
    # a budget that needs more tokens relaxes the threshold instead of falling back
    # (static rule: block 1's mean 2.0 beats block 0's 2.03)
    assert dynamic_commit(ent, open_, tau=0.5, need=3).tolist() == [[F, F, F], [T, T, T]]


def test_dlm_baseline_selections():
    ent = torch.tensor([0.5, 0.1, 0.9, 0.2])
    assert sorted(lowest_entropy(ent, 2).tolist()) == [1, 3]
    assert sorted(lowest_entropy(ent, 10).tolist()) == [0, 1, 2, 3]
    top = torch.tensor([0.3, 0.95, 0.92, 0.5])
    assert above_confidence(top, 0.9).tolist() == [1, 2]
    assert above_confidence(top, 0.99).tolist() == [1]  # at least the most confident one
    assert above_confidence(top, 0.99, need=3).tolist() == [1, 2, 3]


def test_eos_casting_fills_everything_after_the_first_committed_eos():
    EOS, M = 0, 1
    middle = torch.tensor([7, M, 0, M, 8, M, 0, 0])  # positions 6, 7 are block padding
    open_ = middle == M
    closed = cast_eos(middle, open_, EOS, length=6)
    assert closed == 2  # the masks at 3 and 5
    assert middle.tolist() == [7, M, 0, 0, 0, 0, 0, 0]
    assert open_.tolist() == [F, T, F, F, F, F, F, F]
    # no committed EOS in the real positions: nothing changes (the padding EOS do not count)
    middle = torch.tensor([7, M, M, 0])
    assert cast_eos(middle, middle == M, EOS, length=3) == 0
    assert middle.tolist() == [7, M, M, 0]


def test_nucleus_sampling_never_leaves_the_nucleus_and_is_seeded():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(400, 4)
    nucleus = make_sampler(1.0, 0.7)
    draws = nucleus(logits, torch.Generator().manual_seed(0))
    assert set(draws.tolist()) == {0, 1}  # 0.5 + 0.3 covers 0.7; ids 2 and 3 are cut
    again = nucleus(logits, torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)
    assert make_sampler(0.0, 0.8)(logits[:2], None).tolist() == [0, 0]  # temperature 0 = argmax


def test_eos_rule_bans_eos_only_where_it_is_less_likely_than_the_threshold():
    # rows: P(EOS) = 0.3 (the argmax among 8 ids, yet unlikely), 0.6, and either side of the 0.5 threshold
    # (0.52 allowed, 0.48 banned although it is the argmax). Exactly 0.5 is left out: whether softmax(log p)
    # lands on it or a rounding step below depends on the CPU's vector unit.
    probs = torch.tensor([[p] + [(1 - p) / 7] * 7 for p in (0.3, 0.6, 0.52, 0.48)])
    logits = probs.log()
    out = eos_rule(logits, eos_id=0, min_prob=0.5)
    assert (out[[0, 3], 0] == -math.inf).all() and torch.isfinite(out[[1, 2], 0]).all()
    assert torch.equal(out[:, 1:], logits[:, 1:]) and torch.isfinite(logits).all()  # a copy, rest untouched
    assert greedy(out).tolist() == [1, 0, 0, 1]
    sampler = make_sampler(0.0, 1.0, eos_id=0, eos_min_prob=0.5)
    assert sampler(logits, None).tolist() == [1, 0, 0, 1]
    assert make_sampler(0.0, 1.0, eos_id=0, eos_min_prob=0.0)(logits, None).tolist() == [0, 0, 0, 0]


def test_eos_is_committable_only_at_the_frontier():
    open_ = torch.tensor([False, False, True, False, True, True])  # frontier: position 2
    positions = torch.tensor([2, 4, 5])
    logits = torch.zeros(3, 5)
    out = ban_eos_behind_frontier(logits, positions, open_, eos_id=3)
    assert torch.isfinite(out[0]).all()
    assert (out[1:, 3] == -math.inf).all() and torch.isfinite(out[1:, :3]).all()
    assert torch.isfinite(logits).all()  # the input is not modified

