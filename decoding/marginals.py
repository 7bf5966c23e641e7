"""The DLM marginals stage: one forward pass over the canvas -> logits for every masked middle position.

canvas = prefix + N masks + suffix, shape (1, L). The stage returns logits (M, V) for the M masked middle
positions, with the Dream logit shift applied where the checkpoint needs it, the EOS penalty subtracted
and the mask id banned (a committed mask would never finish).

Two ways to run the forward pass, chosen once per decode (`make_marginals_stage`):
- `FullForward`: the whole canvas every iteration (kv_cache="none").
- `CachedForward`: an approximate KV cache (kv_cache="prefix" / "dual"). Every `cache_refresh` iterations a
  full pass refreshes the keys/values of the prefix (and, for "dual", the suffix); in between only the
  query window is recomputed, attending to those cached keys/values. Attention is bidirectional, so the
  cached entries are stale (they were computed against an older middle): the approximation Fast-dLLM makes.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from decoding.models import DiffusionLM, fold_stop_tokens


@dataclass
class Canvas:
    """The token canvas of one decode.

    ids:    (1, L) prefix + middle + suffix on the DLM's device; the middle holds mask_id where open.
    start:  P, index of the first middle position; length: N, middle length.
    """

    ids: torch.Tensor
    start: int
    length: int

    @property
    def middle(self) -> torch.Tensor:
        """(N,) view of the middle: writes go straight into the canvas."""
        return self.ids[0, self.start : self.start + self.length]


class MarginalsStage:
    """Shared part of both stages: which output rows predict which positions, and the logit edits."""

    def __init__(self, dlm: DiffusionLM, eos_penalty: float):
        self.dlm = dlm
        self.eos_penalty = eos_penalty
        self.forwards = 0
        # Remote-code models may not take `logits_to_keep`; then every row is projected and sliced after.
        self.keeps_rows = "logits_to_keep" in inspect.signature(dlm.model.forward).parameters

    def source_rows(self, canvas: Canvas, positions: torch.Tensor) -> torch.Tensor:
        """Output row (canvas index) that predicts each middle position. positions: (M,) -> (M,)."""
        pos = positions + canvas.start  # (M,) canvas index
        # Dream logit shift: position i is predicted by the output at i - 1 (position 0 keeps its own output)
        return (pos - 1).clamp_min(0) if self.dlm.logit_shift else pos

    def finish(self, logits: torch.Tensor) -> torch.Tensor:
        """Fold turn-end tokens into EOS, apply the EOS penalty, ban the mask id. logits: (M, V) -> (M, V) float32."""
        logits = fold_stop_tokens(logits.float(), self.dlm.eos_id, getattr(self.dlm, "stop_ids", ()))
        logits[:, self.dlm.mask_id] = -torch.inf
        if self.eos_penalty:
            logits[:, self.dlm.eos_id] -= self.eos_penalty
        return logits

    def run(self, input_ids: torch.Tensor, rows: torch.Tensor, **kwargs) -> torch.Tensor:
        """One DLM forward. input_ids (1, T), rows (M,) indices into T -> logits (M, V)."""
        self.forwards += 1
        if self.keeps_rows:
            return self.dlm.model(input_ids=input_ids, logits_to_keep=rows, **kwargs).logits[0]  # (M, V)
        return self.dlm.model(input_ids=input_ids, **kwargs).logits[0, rows]  # (M, V)


class FullForward(MarginalsStage):
    """kv_cache="none": the whole canvas through the DLM every iteration."""

    @torch.inference_mode()
    def __call__(self, canvas: Canvas, positions: torch.Tensor, iteration: int) -> torch.Tensor:
        """positions: (M,) masked middle indices -> logits (M, V)."""
        return self.finish(self.run(canvas.ids, self.source_rows(canvas, positions), use_cache=False))


class CachedForward(MarginalsStage):
    """kv_cache="prefix" / "dual": refresh the cache every `refresh` iterations, else run the query window.

    Query window [q0, q1): every position whose output or key/value can change. q0 = P - 1 with the logit
    shift (the output at P - 1 predicts position P), else P. q1 = P + N for "dual" (the suffix is cached too),
    L for "prefix". Cached keys/values: canvas [0, q0) and, for "dual", [P + N, L), stored with their RoPE
    rotation already applied, so the window is run with its true position ids.
    """

    def __init__(self, dlm: DiffusionLM, eos_penalty: float, canvas: Canvas, dual: bool, refresh: int):
        super().__init__(dlm, eos_penalty)
        L = canvas.ids.shape[1]
        self.refresh = refresh
        self.q0 = max(canvas.start - 1, 0) if dlm.logit_shift else canvas.start
        self.q1 = canvas.start + canvas.length if dual else L
        self.kept = [(0, self.q0)] + ([(self.q1, L)] if dual else [])  # canvas ranges held in the cache
        self.cache: DynamicCache | None = None

    @torch.inference_mode()
    def __call__(self, canvas: Canvas, positions: torch.Tensor, iteration: int) -> torch.Tensor:
        """positions: (M,) masked middle indices -> logits (M, V)."""
        rows = self.source_rows(canvas, positions)  # (M,) canvas index
        if self.cache is None or iteration % self.refresh == 0:
            return self.finish(self._refresh(canvas, rows))
        window = canvas.ids[:, self.q0 : self.q1]  # (1, q1 - q0)
        position_ids = torch.arange(self.q0, self.q1, device=window.device).unsqueeze(0)  # (1, q1 - q0)
        logits = self.run(window, rows - self.q0, position_ids=position_ids, past_key_values=self.cache, use_cache=True)
        # drop the window's keys/values again: the cache must not grow across iterations
        self.cache.crop(-(self.q1 - self.q0))
        return self.finish(logits)

    def _refresh(self, canvas: Canvas, rows: torch.Tensor) -> torch.Tensor:
        """Full pass; keep the keys/values of the cached ranges. rows (M,) -> logits (M, V)."""
        cache = DynamicCache(config=self.dlm.model.config)
        logits = self.run(canvas.ids, rows, past_key_values=cache, use_cache=True)
        kept = []
        for layer in cache.layers:
            k = torch.cat([layer.keys[..., a:b, :] for a, b in self.kept], dim=-2)  # (1, nkv, T_kept, hs)
            v = torch.cat([layer.values[..., a:b, :] for a, b in self.kept], dim=-2)  # (1, nkv, T_kept, hs)
            kept.append((k, v))
        self.cache = DynamicCache(ddp_cache_data=kept, config=self.dlm.model.config)
        return logits


def make_marginals_stage(dlm: DiffusionLM, canvas: Canvas, kv_cache: str, cache_refresh: int,
                         eos_penalty: float) -> FullForward | CachedForward:
    """The forward strategy for one decode, from the config's kv_cache setting."""
    if kv_cache == "none":
        return FullForward(dlm, eos_penalty)
    return CachedForward(dlm, eos_penalty, canvas, dual=kv_cache == "dual", refresh=cache_refresh)
