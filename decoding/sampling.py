"""Token-level maths shared by the DLM and the AR executor: entropy and temperature/top-p sampling.

A sampler is chosen once per decode (`make_sampler`): greedy when the temperature is 0, nucleus otherwise,
optionally with the EOS rule (`eos_rule`) in front. Every random draw takes an explicit `torch.Generator`,
so one seed fixes a whole decode.
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


def make_sampler(temperature: float, top_p: float, eos_id: int | None = None, eos_min_prob: float = 0.0) -> Sampler:
    """Greedy (argmax) when temperature is 0, else nucleus sampling at (temperature, top_p).

    With `eos_id` and `eos_min_prob` > 0, `eos_rule` is applied to the logits first.
    """
    if temperature == 0:
        base = greedy
    else:
        # transformers' own warpers, built once: logits / T, then -inf outside the top-p nucleus
        warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
        if top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p, min_tokens_to_keep=1))

        def base(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
            return sample(warpers(None, logits.float()), generator)

    if eos_id is None or eos_min_prob <= 0:
        return base

    def with_eos_rule(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return base(eos_rule(logits, eos_id, eos_min_prob), generator)

    return with_eos_rule


def eos_rule(logits: torch.Tensor, eos_id: int, min_prob: float) -> torch.Tensor:
    """Ban EOS in the rows where the model gives it less than `min_prob`. logits: (M, V) -> (M, V), a copy.

    EOS is one event ("the middle ends here") competing with thousands of tokens: a model with flat token
    distributions makes it the argmax at 5% probability and ends every middle at once. Treated as the
    binary decision it is, the middle ends where EOS is at least `min_prob` likely (0.5: more likely than
    not), and elsewhere the token comes from the distribution over the other ids.
    """
    logits = logits.float().clone()
    p_eos = torch.softmax(logits, dim=-1)[:, eos_id]  # (M,)
    logits[p_eos < min_prob, eos_id] = -torch.inf
    return logits


def greedy(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Argmax per row. logits: (M, V) -> (M,)."""
    return logits.argmax(-1)


def sample(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One id per row from softmax(logits), drawn with `generator`. logits: (M, V) -> (M,)."""
    probs = torch.softmax(logits, dim=-1)  # (M, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (M,)
