"""Token-level maths shared by the DLM and the AR executor: entropy and temperature/top-p sampling.

A sampler is chosen once per decode (`make_sampler`): greedy when the temperature is 0, nucleus otherwise.
Every random draw takes an explicit `torch.Generator`, so one seed fixes a whole decode.
"""

from __future__ import annotations

from typing import Callable

import torch

# logits (M, V), generator -> token ids (M,)
Sampler = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of softmax(logits) over the last axis. logits: (..., V) -> (...).

    Positions with logit -inf (banned ids) have probability 0 and contribute 0.
    """
    probs = torch.softmax(logits.float(), dim=-1)  # (..., V)
    # H = -sum_v p_v log p_v, with 0 log 0 = 0
    return torch.special.entr(probs).sum(-1)


def make_sampler(temperature: float, top_p: float) -> Sampler:
    """Greedy (argmax) when temperature is 0, else nucleus sampling at (temperature, top_p)."""
    if temperature == 0:
        return greedy

    def sampler(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return sample_nucleus(logits, temperature, top_p, generator)

    return sampler


def greedy(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Argmax per row. logits: (M, V) -> (M,)."""
    return logits.argmax(-1)


def sample_nucleus(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Sample one id per row from softmax(logits / temperature) restricted to its top-p nucleus.

    logits: (M, V) -> (M,). The most likely id is always kept, so a tiny top_p behaves like argmax.
    """
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # (M, V)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)  # (M, V)
        # drop an id when the ids ranked above it already cover top_p
        drop = (sorted_p.cumsum(-1) - sorted_p) >= top_p  # (M, V), never the first
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)  # (M, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (M,)
