"""The AR block executor: decodes candidate blocks jointly from their soft-conditioned prompts.

Interface (`BlockExecutor`): decode_blocks(inputs_embeds (nb, B + 2, H), forced (nb, B), generator)
-> tokens (nb, B), entropies (nb, B). Every candidate block is decoded in ONE batched call; a position with
forced[b, j] >= 0 is already committed and reproduces that token; the entropy at each position is that of the
AR's predictive distribution there (temperature 1, over the ids the DLM shares), in nats.

`TorchBlockExecutor` is the one backend: a transformers model, prefill of the B + 2 prompt embeddings, then
B decode steps on a DynamicCache (gpt-fast's prefill / decode_one_token split). A vLLM backend existed and
was removed: it could not give this backend's results (docs/real-pair.md, "Why there is no vLLM backend").
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Protocol

import torch
from transformers import DynamicCache

from decoding.models import fold_stop_tokens
from decoding.sampling import Sampler, entropy, make_sampler

log = logging.getLogger(__name__)
_warned_block_sizes: set[tuple[int, int]] = set()  # (trained B, decoded B) pairs already logged


StepMask = Callable[[int, torch.Tensor], "torch.Tensor | None"]


class BlockExecutor(Protocol):
    def decode_blocks(
        self, inputs_embeds: torch.Tensor, forced: torch.Tensor, generator: torch.Generator | None,
        eos_ok: torch.Tensor | None = None, step_mask: StepMask | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs_embeds (nb, B + 2, H), forced (nb, B) ids or -1 -> tokens (nb, B), entropies (nb, B).

        eos_ok: (nb,) bool, the blocks that may produce EOS (None = all); in the others EOS is banned
        before the entropies are taken. step_mask(j, tokens so far (nb, j)) -> (nb, V) bool of the ids
        allowed at step j, or None (token healing: the first middle tokens must spell a given text).
        """
        ...


class TorchBlockExecutor:
    """Batched block decoding with a transformers causal LM and its KV cache.

    model:    the AR (ExecutorLM.model).
    allowed:  (V_ar,) bool, ids the AR may emit (those the DLM shares: an AR-only id has no meaning on the
              DLM's canvas, and e.g. Qwen3's id 151666 is Dream's mask).
    sampler:  token sampler at the AR's temperature / top-p.
    eos_id:   the id `eos_ok` refers to.
    stop_ids: other ids that end the turn (Qwen's `<|im_end|>`): their probability is EOS's (fold_stop_tokens),
              so the executor ends a middle the one way the decoder knows.
    trained_block_size: B the AR was fine-tuned for (`codila_block_size`), or None; decoding another B is
              logged as a warning (once per process and pair of sizes).
    """

    def __init__(self, model: torch.nn.Module, allowed: torch.Tensor, sampler: Sampler, eos_id: int | None = None,
                 stop_ids: tuple[int, ...] = (), trained_block_size: int | None = None):
        self.model = model
        # additive bias: 0 where allowed, -inf elsewhere; applied to every logit row
        self.bias = torch.zeros(allowed.shape, device=model.device).masked_fill(~allowed.to(model.device), -math.inf)
        self.sampler = sampler
        self.eos_id = eos_id
        self.stop_ids = tuple(i for i in stop_ids if bool(allowed[i])) if eos_id is not None else ()
        self.trained_block_size = trained_block_size

    @torch.inference_mode()
    def decode_blocks(
        self, inputs_embeds: torch.Tensor, forced: torch.Tensor, generator: torch.Generator | None,
        eos_ok: torch.Tensor | None = None, step_mask: StepMask | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        nb, B = forced.shape
        assert inputs_embeds.shape[:2] == (nb, B + 2), (inputs_embeds.shape, forced.shape)
        self._check_block_size(B)
        forced = forced.to(self.model.device)
        tokens = torch.empty(nb, B, dtype=torch.long, device=forced.device)
        entropies = torch.empty(nb, B, dtype=torch.float32, device=forced.device)
        cache = DynamicCache(config=self.model.config)
        logits = self._prefill(inputs_embeds, cache)  # (nb, V)
        no_eos = None if eos_ok is None or self.eos_id is None else ~eos_ok.to(forced.device)  # (nb,)
        for j in range(B):
            logits = fold_stop_tokens(logits.float() + self.bias, self.eos_id, self.stop_ids)  # (nb, V), banned ids at -inf
            if no_eos is not None:
                logits[no_eos, self.eos_id] = -math.inf
            if step_mask is not None and (allowed := step_mask(j, tokens[:, :j])) is not None:
                logits = logits.masked_fill(~allowed, -math.inf)
            entropies[:, j] = entropy(logits)
            # a committed position reproduces its token; the others are sampled
            tokens[:, j] = torch.where(forced[:, j] >= 0, forced[:, j], self.sampler(logits, generator))
            if j + 1 < B:
                logits = self._decode_one(tokens[:, j], cache)
        return tokens, entropies

    def _check_block_size(self, B: int) -> None:
        trained = self.trained_block_size
        if trained is not None and trained != B and (trained, B) not in _warned_block_sizes:
            _warned_block_sizes.add((trained, B))
            log.warning("the AR executor was fine-tuned for blocks of %d tokens (codila_block_size) and decodes "
                        "blocks of %d: expect worse completions; decode with block_size %d or fine-tune an "
                        "executor for B = %d", trained, B, trained, B)

    def _prefill(self, inputs_embeds: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
        """inputs_embeds (nb, B + 2, H) -> next-token logits (nb, V); fills the cache."""
        out = self.model(inputs_embeds=inputs_embeds, past_key_values=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1]

    def _decode_one(self, token: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
        """token (nb,) -> next-token logits (nb, V); appends one position to the cache."""
        out = self.model(input_ids=token[:, None], past_key_values=cache, use_cache=True)
        return out.logits[:, -1]


def make_executor(models: Any, ar_temperature: float, ar_top_p: float, seed: int,
                  eos_min_prob: float = 0.0) -> BlockExecutor:
    """The executor for one decode (the torch model of the pair).

    eos_min_prob: the EOS rule (decoding.sampling.eos_rule) on the AR's own distribution; EOS is the DLM's
    id, which the AR shares. `seed` is unused: the AR samples from the decode's generator.
    """
    eos_id = models.dlm.eos_id
    return TorchBlockExecutor(models.ar.model, ar_allowed_ids(models), make_sampler(ar_temperature, ar_top_p, eos_id, eos_min_prob),
                              eos_id, stop_ids=getattr(models.dlm, "stop_ids", ()),
                              trained_block_size=getattr(models.ar, "block_size", None))


def ar_allowed_ids(models: Any) -> torch.Tensor:
    """(V_ar,) bool: AR ids that mean the same token for the DLM (the alignment's shared ids)."""
    shared = models.alignment.shared
    allowed = torch.zeros(models.alignment.ar_vocab, dtype=torch.bool, device=shared.device)
    n = min(shared.numel(), allowed.numel())
    allowed[:n] = shared[:n]
    return allowed
