"""Token-level maths shared by the DLM and the AR executor: entropy and temperature/top-p sampling.

A sampler is chosen once per decode (`make_sampler`): greedy when the temperature is 0, nucleus otherwise.
Every random draw takes an explicit `torch.Generator`, so one seed fixes a whole decode.
"""

from __future__ import annotations

from typing import Callable

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

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
    # transformers' own warpers, built once: logits / T, then -inf outside the top-p nucleus
    warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p, min_tokens_to_keep=1))

    def sampler(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return sample(warpers(None, logits.float()), generator)

    return sampler


def greedy(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Argmax per row. logits: (M, V) -> (M,)."""
    return logits.argmax(-1)


def sample(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One id per row from softmax(logits), drawn with `generator`. logits: (M, V) -> (M,)."""
    probs = torch.softmax(logits, dim=-1)  # (M, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (M,)
