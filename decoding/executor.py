"""The AR block executor: decodes candidate blocks jointly from their soft-conditioned prompts.

Interface (`BlockExecutor`): decode_blocks(inputs_embeds (nb, B + 2, H), forced (nb, B), generator)
-> tokens (nb, B), entropies (nb, B). Every candidate block is decoded in ONE batched call; a position with
forced[b, j] >= 0 is already committed and reproduces that token; the entropy at each position is that of the
AR's predictive distribution there (temperature 1, over the ids the DLM shares), in nats.

Backends:
- `TorchBlockExecutor`: transformers model, prefill of the B + 2 prompt embeddings, then B decode steps on
  a DynamicCache (gpt-fast's prefill / decode_one_token split).
- `VLLMBlockExecutor`: vLLM with prompt embeddings (`enable_prompt_embeds=True`, vLLM >= 0.11). vLLM is
  imported only when this backend is built, so the package works without it.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Protocol

import torch
from transformers import DynamicCache

from decoding.sampling import Sampler, entropy, make_sampler


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
    """

    def __init__(self, model: torch.nn.Module, allowed: torch.Tensor, sampler: Sampler, eos_id: int | None = None):
        self.model = model
        # additive bias: 0 where allowed, -inf elsewhere; applied to every logit row
        self.bias = torch.zeros(allowed.shape, device=model.device).masked_fill(~allowed.to(model.device), -math.inf)
        self.sampler = sampler
        self.eos_id = eos_id

    @torch.inference_mode()
    def decode_blocks(
        self, inputs_embeds: torch.Tensor, forced: torch.Tensor, generator: torch.Generator | None,
        eos_ok: torch.Tensor | None = None, step_mask: StepMask | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        nb, B = forced.shape
        assert inputs_embeds.shape[:2] == (nb, B + 2), (inputs_embeds.shape, forced.shape)
        forced = forced.to(self.model.device)
        tokens = torch.empty(nb, B, dtype=torch.long, device=forced.device)
        entropies = torch.empty(nb, B, dtype=torch.float32, device=forced.device)
        cache = DynamicCache(config=self.model.config)
        logits = self._prefill(inputs_embeds, cache)  # (nb, V)
        no_eos = None if eos_ok is None or self.eos_id is None else ~eos_ok.to(forced.device)  # (nb,)
        for j in range(B):
            logits = logits.float() + self.bias  # (nb, V), banned ids at -inf
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

    def _prefill(self, inputs_embeds: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
        """inputs_embeds (nb, B + 2, H) -> next-token logits (nb, V); fills the cache."""
        out = self.model(inputs_embeds=inputs_embeds, past_key_values=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1]

    def _decode_one(self, token: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
        """token (nb,) -> next-token logits (nb, V); appends one position to the cache."""
        out = self.model(input_ids=token[:, None], past_key_values=cache, use_cache=True)
        return out.logits[:, -1]


class VLLMBlockExecutor:
    """Block decoding on vLLM from prompt embeddings (GPU deployments).

    llm:       a `vllm.LLM` built with `enable_prompt_embeds=True` (see `load_vllm_engine`).
    allowed:   (V_ar,) bool, ids the AR may emit; the others get a logit bias of -100 (Dream + Qwen3: a few
               hundred ids, far cheaper per request than a whitelist of 151k).
    logprobs:  how many top log-probabilities vLLM returns per step (its default cap is 20). vLLM returns the
               raw model log-probabilities; the entropy is estimated from the allowed ids among them, the
               remaining mass spread evenly over the other allowed ids (an upper bound).

    vLLM cannot force a token in the middle of a generation, so blocks are decoded one position per round:
    round j sends every block's prompt (its B + 2 soft embeddings plus the embeddings of its tokens 1..j-1)
    with max_tokens=1, and a forced position takes its committed token instead of the sample. Rounds in
    which every block is forced skip the engine.
    """

    def __init__(self, llm: Any, embeddings: torch.Tensor, allowed: torch.Tensor, temperature: float,
                 top_p: float, seed: int, logprobs: int = 20, eos_id: int | None = None, eos_min_prob: float = 0.0):
        from vllm import SamplingParams  # imported here: vLLM is optional

        self.llm = llm
        self.embeddings = embeddings  # (V_ar, H), to embed the tokens decoded so far
        self.allowed = allowed.cpu()
        self.n_allowed = int(allowed.sum())
        self.eos_id, self.eos_min_prob = eos_id, eos_min_prob
        banned = (~self.allowed).nonzero().squeeze(-1).tolist()
        self.params = SamplingParams(
            temperature=temperature, top_p=top_p, max_tokens=1, logprobs=logprobs, seed=seed,
            logit_bias={i: -100.0 for i in banned} or None, detokenize=False,
        )

    def decode_blocks(
        self, inputs_embeds: torch.Tensor, forced: torch.Tensor, generator: torch.Generator | None,
        eos_ok: torch.Tensor | None = None, step_mask: StepMask | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # step_mask is not applied here (vLLM samples on the engine); the healing constraint still shapes
        # the marginals the blocks are conditioned on, and a middle that misses it comes back empty
        nb, B = forced.shape
        forced = forced.cpu()
        eos_ok = torch.ones(nb, dtype=torch.bool) if eos_ok is None else eos_ok.cpu()
        tokens = torch.empty(nb, B, dtype=torch.long)
        entropies = torch.zeros(nb, B, dtype=torch.float32)
        prompts = inputs_embeds.detach().cpu()  # (nb, B + 2 + j, H) in round j; vLLM takes CPU tensors
        for j in range(B):
            if bool((forced[:, j] >= 0).all()):
                tokens[:, j] = forced[:, j]
            else:
                outs = self.llm.generate([{"prompt_embeds": p} for p in prompts], self.params, use_tqdm=False)
                for b, out in enumerate(outs):
                    step = out.outputs[0]
                    tokens[b, j] = int(forced[b, j]) if forced[b, j] >= 0 else self._apply_eos_rule(step, bool(eos_ok[b]))
                    entropies[b, j] = self._entropy(step.logprobs[0])
            new = self.embeddings[tokens[:, j].to(self.embeddings.device)].detach().cpu()  # (nb, H)
            prompts = torch.cat([prompts, new.unsqueeze(1).to(prompts.dtype)], dim=1)  # (nb, B + 3 + j, H)
        return tokens.to(self.embeddings.device), entropies.to(self.embeddings.device)

    def _apply_eos_rule(self, step: Any, eos_ok: bool) -> int:
        """The sampled id, unless it is an EOS that is banned here or that the model gave less than
        eos_min_prob: then the most likely allowed other id among the returned log-probabilities (vLLM
        samples before we can ban EOS; the entropy estimate still counts EOS)."""
        token = step.token_ids[0]
        if token != self.eos_id:
            return token
        top = step.logprobs[0]
        if eos_ok and math.exp(top[token].logprob) >= self.eos_min_prob:
            return token
        others = [(lp.logprob, i) for i, lp in top.items() if i != self.eos_id and self.allowed[i]]
        return max(others)[1] if others else token

    def _entropy(self, top: dict) -> float:
        """Entropy estimate from vLLM's top log-probabilities {id: Logprob} (raw, temperature 1)."""
        logp = torch.tensor([lp.logprob for i, lp in top.items() if self.allowed[i]], dtype=torch.float64)
        p = logp.exp()
        rest = float((1.0 - p.sum()).clamp_min(0.0))
        n_rest = max(self.n_allowed - len(logp), 1)
        # H = -sum_top p log p - rest * log(rest / n_rest), the rest spread evenly
        h = float(-(p * logp).sum())
        return h - (rest * math.log(rest / n_rest) if rest > 0 else 0.0)


def load_vllm_engine(ar_path: str, dtype: str = "auto", gpu_memory_utilization: float = 0.3, **kwargs: Any) -> Any:
    """A vLLM engine for the AR executor with prompt embeddings enabled (needs vLLM >= 0.11 and a GPU)."""
    try:
        from vllm import LLM
    except ImportError as err:
        raise ValueError("the vllm AR backend needs vLLM >= 0.11: pip install 'codila-lsp[vllm]'") from err
    return LLM(model=str(ar_path), enable_prompt_embeds=True, dtype=dtype,
               gpu_memory_utilization=gpu_memory_utilization, **kwargs)


def make_executor(models: Any, ar_temperature: float, ar_top_p: float, seed: int,
                  eos_min_prob: float = 0.0) -> BlockExecutor:
    """The executor for one decode: vLLM when the pair carries a vLLM engine, else the torch model.

    eos_min_prob: the EOS rule (decoding.sampling.eos_rule) on the AR's own distribution; EOS is the DLM's
    id, which the AR shares.
    """
    allowed = ar_allowed_ids(models)
    eos_id = models.dlm.eos_id
    if getattr(models.ar, "vllm_engine", None) is not None:
        return VLLMBlockExecutor(models.ar.vllm_engine, models.ar.embeddings, allowed, ar_temperature, ar_top_p, seed,
                                 eos_id=eos_id, eos_min_prob=eos_min_prob)
    return TorchBlockExecutor(models.ar.model, allowed, make_sampler(ar_temperature, ar_top_p, eos_id, eos_min_prob), eos_id)


def ar_allowed_ids(models: Any) -> torch.Tensor:
    """(V_ar,) bool: AR ids that mean the same token for the DLM (the alignment's shared ids)."""
    shared = models.alignment.shared
    allowed = torch.zeros(models.alignment.ar_vocab, dtype=torch.bool, device=shared.device)
    n = min(shared.numel(), allowed.numel())
    allowed[:n] = shared[:n]
    return allowed
