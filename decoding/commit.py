"""Which tokens to commit: pure functions of entropies and masks, so each rule is testable on its own.

Vocabulary of this module:
- the middle of the canvas is split into `nb` blocks of `B` positions (the last one padded with committed
  EOS when max_new_tokens is not a multiple of B);
- `open` marks positions still masked;
- a block's uncertainty is the mean AR entropy over its *open* positions (committed ones are not counted,
  which favours finishing partly decoded blocks).
"""

from __future__ import annotations

import torch


def candidate_blocks(open_blocks: torch.Tensor, scope: int) -> torch.Tensor:
    """The `scope` blocks nearest the decoding frontier that still have masked positions.

    open_blocks: (nb, B) bool. Returns block indices (nc,), ascending, nc = min(scope, blocks with masks).
    The frontier is the first block with a masked position; candidates are the next ones with masks after it.
    """
    has_mask = open_blocks.any(-1)  # (nb,)
    return has_mask.nonzero().squeeze(-1)[:scope]  # (nc,)


def block_mean_entropy(entropies: torch.Tensor, open_: torch.Tensor) -> torch.Tensor:
    """Mean entropy over the open positions of each block. entropies, open_: (nc, B) -> (nc,).

    A block with no open position scores +inf (nothing to commit there).
    """
    n_open = open_.sum(-1)  # (nc,)
    total = (entropies * open_).sum(-1)  # (nc,)
    return torch.where(n_open > 0, total / n_open.clamp_min(1), torch.full_like(total, float("inf")))


def static_commit(entropies: torch.Tensor, open_: torch.Tensor, need: int = 1) -> torch.Tensor:
    """Static parallelism: commit every open position of the lowest-mean-entropy block.

    entropies, open_: (nc, B). Returns the commit mask (nc, B) bool. When `need` (from the latency budget)
    exceeds one block's open positions, the next-best blocks are added until at least `need` are covered.
    """
    order = block_mean_entropy(entropies, open_).argsort()  # (nc,), best first
    n_open = open_.sum(-1)[order]  # (nc,)
    # blocks taken: the best one, plus as many as needed to reach `need` open positions
    before = n_open.cumsum(0) - n_open  # (nc,) open positions in the better blocks
    take = torch.zeros_like(open_[:, 0])  # (nc,) bool
    take[order] = (before < need) & (n_open > 0)
    return open_ & take.unsqueeze(-1)  # (nc, B)


def dynamic_commit(entropies: torch.Tensor, open_: torch.Tensor, tau: float, need: int = 1) -> torch.Tensor | None:
    """Dynamic parallelism: commit the largest block prefix whose mean entropy is below `tau`.

    entropies, open_: (nc, B). A prefix's size k is the number of open positions it contains; its mean is
    over those k. Returns the commit mask (nc, B) bool for one block, or None when k <= 1 (the caller falls
    back to the DLM for a single token: the AR's entropy says little about coherence of one token).
    If the latency budget asks for `need` > k tokens, the threshold is relaxed: static_commit with `need`.
    """
    nc, B = open_.shape
    openf = open_.to(entropies.dtype)
    cum_n = openf.cumsum(-1)  # (nc, B) open positions in prefix [0, j]
    mean = (entropies * openf).cumsum(-1) / cum_n.clamp_min(1)  # (nc, B) mean entropy of prefix [0, j]
    # a prefix qualifies when it ends on an open position and its mean is below tau
    ok = open_ & (mean < tau)  # (nc, B)
    k = torch.where(ok, cum_n, torch.zeros_like(cum_n))  # (nc, B)
    best_k = int(k.max())
    if best_k < max(need, 2):
        return static_commit(entropies, open_, need) if need > 1 else None
    # among prefixes of the best size, the lowest mean; ties go to the earliest block
    score = torch.where(k == best_k, mean, torch.full_like(mean, float("inf")))  # (nc, B)
    flat = int(score.flatten().argmin())
    block, end = divmod(flat, B)
    mask = torch.zeros_like(open_)
    mask[block, : end + 1] = open_[block, : end + 1]
    return mask  # (nc, B)


def mean_below(entropies: torch.Tensor, tau: float) -> int:
    """The length of the longest prefix of `entropies` (n,) whose mean is at most tau (0..n): the dynamic rule
    on a causal-context DLM's frontier block (decoding.fim_codila), where the frontier token is already decided."""
    n = entropies.numel()
    mean = entropies.cumsum(0) / torch.arange(1, n + 1, dtype=entropies.dtype)  # (n,) mean of prefix [0, j]
    ok = (mean <= tau).nonzero()
    return int(ok[-1]) + 1 if ok.numel() else 0


def lowest_entropy(entropies: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k lowest entropies (k clipped to the length). entropies: (M,) -> (min(k, M),)."""
    return entropies.topk(min(k, entropies.numel()), largest=False).indices


def above_confidence(top_prob: torch.Tensor, threshold: float, need: int = 1) -> torch.Tensor:
    """Indices whose top probability is >= threshold, and at least the `need` most confident ones.

    top_prob: (M,) -> (K,), most confident first.
    """
    order = top_prob.argsort(descending=True)  # (M,)
    n = max(int((top_prob >= threshold).sum()), min(need, top_prob.numel()))
    return order[:n]


def cast_eos(middle: torch.Tensor, open_: torch.Tensor, eos_id: int, length: int) -> int:
    """EOS casting (Dream-Coder): everything after the first committed EOS becomes EOS.

    middle: (Npad,) ids, open_: (Npad,) bool, both updated in place; only the first `length` positions are
    real. Returns how many masked positions this closed.
    """
    committed_eos = ((middle[:length] == eos_id) & ~open_[:length]).nonzero()
    if committed_eos.numel() == 0:
        return 0
    first = int(committed_eos[0])
    closed = int(open_[first + 1 :].sum())
    middle[first + 1 :] = eos_id
    open_[first + 1 :] = False
    return closed


def ban_eos_behind_frontier(logits: torch.Tensor, positions: torch.Tensor, open_: torch.Tensor, eos_id: int) -> torch.Tensor:
    """EOS only at the frontier: a copy of `logits` with EOS at -inf except at the first open position.

    logits: (M, V) for middle positions `positions` (M,); open_: (Npad,) bool. Whether the middle ends at a
    position depends on what stands left of it; decided anywhere else, one confident EOS near the end of
    the budget makes its left neighbour more likely EOS, and the chain eats the whole middle.
    """
    frontier = int(open_.nonzero()[0])
    logits = logits.clone()
    logits[positions != frontier, eos_id] = -torch.inf
    return logits
