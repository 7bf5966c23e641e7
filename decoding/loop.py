"""The decode loop: infilling and completion alike (completion is infilling with an empty suffix).

    decode(models, prefix_ids, suffix_ids, config) -> DecodeResult

A causal-context DLM (the default model) decodes every method in decoding.fim_codila, one pass per round.
On a bidirectional DLM's canvas, each iteration:
  1. DLM marginals: one forward pass over prefix + middle + suffix (marginals.py);
  2. commit: the strategy chosen once per decode picks positions and tokens
     - "codila" / "codila-top1": candidate blocks near the frontier are decoded jointly by the AR from
       soft (or top-1) conditioning, then a static or dynamic rule commits by mean AR entropy (commit.py);
     - "dlm": the DLM alone commits its k lowest-entropy positions, or every position above a confidence;
  3. EOS casting, stats, the step callback; cancellation is checked before every iteration.
The latency budget (budget.py) raises the minimum tokens per iteration so the decode ends by the deadline.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Callable

import torch

from decoding.budget import make_budget
from decoding.commit import (
    ban_eos_behind_frontier,
    above_confidence,
    candidate_blocks,
    cast_eos,
    dynamic_commit,
    lowest_entropy,
    static_commit,
)
from decoding.config import DEFAULT_TAU, DecodeConfig
from decoding.executor import BlockExecutor, make_executor
from decoding.fim_codila import check_fim_method, decode_fim
from decoding.healing import Healing, TokenTexts, heal_prefix
from decoding.marginals import Canvas, make_marginals_stage
from decoding.models import ModelPair
from decoding.result import Cancelled, DecodeResult, DecodeStats, StepInfo
from decoding.sampling import Sampler, entropy, make_sampler
from decoding.soft import align_probs, block_inputs


@dataclass
class Marginals:
    """The DLM's view this iteration.

    positions: (M,) masked middle indices. logits: (M, V) for them, as the DLM gives them (the AR's input).
    open_: (Npad,) the masked positions; eos_id: set when EOS may only be committed at the frontier
    (DecodeConfig.eos_frontier), None otherwise.
    """

    positions: torch.Tensor
    logits: torch.Tensor
    open_: torch.Tensor
    eos_id: int | None = None

    @cached_property
    def choice(self) -> torch.Tensor:
        """(M, V) the logits the DLM ranks and picks its own tokens from: `logits`, with EOS banned where the
        middle may not end. Computed on first use (CoDiLA reads it only when it falls back to the DLM)."""
        if self.eos_id is None:
            return self.logits
        return ban_eos_behind_frontier(self.logits, self.positions, self.open_, self.eos_id)

    @cached_property
    def probs(self) -> torch.Tensor:
        """(M, V) marginals at temperature 1 (what the AR executor was trained to read)."""
        return torch.softmax(self.logits, dim=-1)

    @cached_property
    def entropy(self) -> torch.Tensor:
        """(M,) DLM entropy per masked position over the ids it may commit, in nats."""
        return entropy(self.choice)


# A strategy has two stages per iteration:
#   reads(open (Npad,), need) -> positions (M,): the masked positions whose DLM marginals it needs;
#   __call__(middle (Npad,), open (Npad,), marginals of those positions, need, generator)
#       -> (positions (K,), tokens (K,)) to commit.


class BlockStrategy:
    """CoDiLA: decode candidate blocks jointly with the AR, commit by the static or dynamic rule.

    rule(entropies (nc, B), open (nc, B), need) -> commit mask (nc, B), or None for the k <= 1 DLM fallback.
    """

    def __init__(self, models: ModelPair, config: DecodeConfig, executor: BlockExecutor, rule: Callable,
                 dlm_sampler: Sampler, stats: DecodeStats, ar_generator: torch.Generator | None, sync: Callable,
                 healing: Healing | None = None):
        self.models = models
        self.healing = healing
        self.B = config.block_size
        self.scope = config.scope
        self.hard = config.method == "codila-top1"
        self.executor = executor
        self.rule = rule
        self.dlm_sampler = dlm_sampler
        self.stats = stats
        self.ar_generator = ar_generator
        self.sync = sync
        self.eos_frontier = config.eos_frontier

    def candidates(self, open_: torch.Tensor, need: int) -> torch.Tensor:
        """Middle positions of the candidate blocks, (nc, B). open_: (Npad,)."""
        B = self.B
        # the budget may need more blocks than the scope holds
        blocks = candidate_blocks(open_.view(-1, B), max(self.scope, math.ceil(need / B)))  # (nc,)
        return blocks[:, None] * B + torch.arange(B, device=open_.device)  # (nc, B)

    def reads(self, open_: torch.Tensor, need: int) -> torch.Tensor:
        """Only the candidate blocks' open positions need marginals (the lm_head runs on those rows only)."""
        pos = self.candidates(open_, need)  # (nc, B)
        return pos[open_[pos]]  # (M,), ascending

    def __call__(self, middle: torch.Tensor, open_: torch.Tensor, marg: Marginals, need: int,
                 generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        pos = self.candidates(open_, need)  # (nc, B)
        block_open = open_[pos]  # (nc, B)
        committed = torch.where(block_open, torch.full_like(pos, -1), middle[pos])  # (nc, B) id or -1
        row_of = torch.zeros_like(middle)  # (Npad,) row of each masked position in marg
        row_of[marg.positions] = torch.arange(marg.positions.numel(), device=middle.device)
        rows = row_of[pos]  # (nc, B); committed positions point at row 0, unused (hard embedding)

        # only the frontier block (everything left of it is committed) may end the middle
        eos_ok = (torch.arange(len(pos), device=pos.device) == 0) if self.eos_frontier else None  # (nc,)
        tokens, entropies = self._decode_blocks(marg.logits[rows], committed, eos_ok, pos)  # (nc, B) each
        mask = self.rule(entropies.to(block_open.device), block_open, need=need)  # (nc, B) or None
        if mask is None:
            return self._dlm_fallback(rows[block_open], marg, generator)
        return pos[mask], tokens.to(middle.device)[mask]

    def _decode_blocks(self, logits: torch.Tensor, committed: torch.Tensor, eos_ok: torch.Tensor | None,
                       pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Soft-condition the AR on each block's marginals and decode all blocks in one call.

        logits: (nc, B, V_dlm) DLM logits of the block positions; committed: (nc, B) id or -1; eos_ok: (nc,)
        the blocks that may produce EOS, or None for all; pos: (nc, B) their middle indices (for token
        healing's constraint). Returns tokens, entropies: (nc, B).
        """
        ar = self.models.ar
        # marginals at temperature 1, as the AR executor was trained to read them, on the AR's vocabulary
        probs = align_probs(torch.softmax(logits, dim=-1), self.models.alignment)  # (nc, B, V_ar)
        inputs = block_inputs(probs.to(ar.device), committed.to(ar.device), ar.embeddings, ar.open_id,
                              ar.close_id, self.models.dlm.eos_id, hard=self.hard)  # (nc, B + 2, H)
        step_mask = None if self.healing is None else self.healing.step_mask(pos, ar.embeddings.shape[0], ar.device)
        t0 = time.perf_counter()
        tokens, entropies = self.executor.decode_blocks(inputs, committed, self.ar_generator, eos_ok,
                                                        step_mask)  # (nc, B) each
        self.sync()
        self.stats.ar_seconds += time.perf_counter() - t0
        self.stats.ar_calls += 1
        self.stats.ar_tokens += tokens.numel()
        return tokens, entropies

    def _dlm_fallback(self, rows: torch.Tensor, marg: Marginals, generator: torch.Generator | None):
        """k <= 1: the DLM's most confident candidate position, its token sampled from the DLM marginal.

        rows: (K,) rows in marg of the candidate blocks' open positions. Returns ((1,), (1,)).
        """
        best = rows[marg.entropy[rows].argmin()].view(1)  # (1,) row in marg
        return marg.positions[best], self.dlm_sampler(marg.choice[best], generator)


class DLMStrategy:
    """DLM-only baseline: commit by the DLM's own confidence, tokens sampled from its marginals.

    choose(marginals, need) -> rows (K,) of the masked positions to commit.
    """

    def __init__(self, choose: Callable[[Marginals, int], torch.Tensor], dlm_sampler: Sampler):
        self.choose = choose
        self.dlm_sampler = dlm_sampler

    def reads(self, open_: torch.Tensor, need: int) -> torch.Tensor:
        """Every masked position: the DLM's confidence ranks them all."""
        return open_.nonzero().squeeze(-1)  # (M,)

    def __call__(self, middle, open_, marg: Marginals, need: int, generator):
        rows = self.choose(marg, need)  # (K,)
        return marg.positions[rows], self.dlm_sampler(marg.choice[rows], generator)


def make_strategy(models: ModelPair, config: DecodeConfig, stats: DecodeStats,
                  ar_generator: torch.Generator | None, sync: Callable, healing: Healing | None = None):
    """The commit strategy for one decode; nothing below re-reads config.method or config.mode."""
    dlm_sampler = make_sampler(config.temperature, config.top_p, models.dlm.eos_id, config.eos_min_prob)
    if config.method == "dlm":
        if config.confidence is not None:
            def choose(m: Marginals, need: int) -> torch.Tensor:
                return above_confidence(torch.softmax(m.choice, dim=-1).max(-1).values, config.confidence, need)
        else:
            def choose(m: Marginals, need: int) -> torch.Tensor:
                return lowest_entropy(m.entropy, max(config.tokens_per_step, need))
        return DLMStrategy(choose, dlm_sampler)
    if config.mode == "static":
        rule = static_commit
    else:
        rule = partial(dynamic_commit, tau=stats.tau)
    executor = make_executor(models, config.ar_temperature, config.ar_top_p, config.seed, config.eos_min_prob)
    return BlockStrategy(models, config, executor, rule, dlm_sampler, stats, ar_generator, sync, healing)


def resolve_method(config: DecodeConfig, models: ModelPair) -> str:
    """The method in force: "auto" is verified for a causal-context DLM, codila for a bidirectional one.
    Raises ValueError for a method the loaded models cannot run."""
    method = config.method
    causal = models.dlm.fim is not None
    if method == "auto":
        method = "verified" if causal and models.dlm.fim.drafts else ("ar" if causal else "codila")
    if causal:
        check_fim_method(method, config, models)
        return method
    if method in ("ar", "verified"):
        raise ValueError(f"method {method} needs a causal-context DLM (codila_dlm_layout 'fim', the default "
                         "model); a bidirectional DLM decodes with codila or dlm")
    if method in ("codila", "codila-top1") and models.ar is None:
        raise ValueError(f"method {method} needs an AR executor; none is loaded")
    return method


def resolve_tau(config: DecodeConfig, models: ModelPair) -> float:
    """The dynamic threshold in force: the config's, else the AR's own `codila_tau`, else DEFAULT_TAU."""
    if config.tau is not None:
        return config.tau
    return models.ar.tau if models.ar.tau is not None else DEFAULT_TAU


def decode(
    models: ModelPair,
    prefix_ids: list[int],
    suffix_ids: list[int],
    config: DecodeConfig,
    *,
    cancel: Callable[[], bool] | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    heal: bytes = b"",
    stop: Callable[[str], str | None] | None = None,
) -> DecodeResult:
    """Fill `config.max_new_tokens` masked positions between prefix_ids and suffix_ids.

    heal: text the middle must start with (token healing: the prefix's last token, removed by the
    caller); the result's text leaves it out, its tokens include it. A middle that cannot spell it
    comes back as empty text (`stats.healing` "failed").
    stop: text -> the finished middle, or None to go on (the editor's rule for where a completion ends):
    a causal-context DLM stops decoding there; the canvas methods cut their text with it.
    Raises ValueError for ids outside the DLM vocabulary or a mask id in the context, Cancelled when
    `cancel()` returns True before an iteration. Same models + inputs + config (seed) -> same result.
    """
    start = time.perf_counter()
    dlm = models.dlm
    method = resolve_method(config, models)
    _check_ids("prefix_ids", prefix_ids, dlm.vocab_size, None if dlm.fim else dlm.mask_id)
    _check_ids("suffix_ids", suffix_ids, dlm.vocab_size, None if dlm.fim else dlm.mask_id)
    if dlm.fim is not None:  # the causal-context DLM: one pass per round (decoding.fim_codila)
        tau = resolve_tau(config, models) if models.ar is not None else config.tau
        return decode_fim(models, method, prefix_ids, suffix_ids, config, tau=tau, heal=heal, stop=stop,
                          cancel=cancel, on_step=on_step)
    config = config.replace(method=method)
    device = dlm.device
    N, B, mask_id, eos_id = config.max_new_tokens, config.block_size, dlm.mask_id, dlm.eos_id
    _check_lengths(models, len(prefix_ids) + N + len(suffix_ids), B)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    # middle state, padded to whole blocks with committed EOS (never part of the text)
    middle = torch.full((math.ceil(N / B) * B,), eos_id, dtype=torch.long, device=device)  # (Npad,)
    middle[:N] = mask_id
    ids = torch.tensor([list(prefix_ids) + [mask_id] * N + list(suffix_ids)], dtype=torch.long, device=device)
    canvas = Canvas(ids, start=len(prefix_ids), length=N)  # ids: (1, L)

    dynamic = config.method != "dlm" and config.mode == "dynamic"
    stats = DecodeStats(tau=resolve_tau(config, models) if dynamic else None)  # the strategy reads it
    generator = torch.Generator(device=device).manual_seed(config.seed)
    ar_device = models.ar.device if models.ar is not None else device
    ar_generator = generator if ar_device == device else torch.Generator(device=ar_device).manual_seed(config.seed)
    forward = make_marginals_stage(dlm, canvas, config.kv_cache, config.cache_refresh, config.eos_penalty)
    healing = Healing(TokenTexts.of(dlm.tokenizer, dlm.vocab_size), heal) if heal else None
    stats.healing = "on" if heal else "off"
    strategy = make_strategy(models, config, stats, ar_generator, sync, healing)
    flush_sampler = make_sampler(config.temperature, config.top_p, eos_id, config.eos_min_prob)
    budget = make_budget(config.deadline_ms, start)

    iteration = 0
    while bool((open_ := middle == mask_id).any()):
        if cancel is not None and cancel():
            raise Cancelled(f"decode cancelled before iteration {iteration}")
        t_iter = time.perf_counter()
        remaining = int(open_.sum())
        need, flush = budget.plan(remaining)

        # masked middle positions whose marginals this iteration reads: all of them to flush
        positions = open_.nonzero().squeeze(-1) if flush else strategy.reads(open_, need)  # (M,)
        t0 = time.perf_counter()
        logits = forward(canvas, positions, iteration)  # (M, V)
        if healing is not None:  # the constrained position may only take tokens that spell the healed text
            logits = healing.mask_marginals(logits, positions)
        sync()
        stats.dlm_seconds += time.perf_counter() - t0
        marg = Marginals(positions, logits, open_, eos_id if config.eos_frontier else None)

        if flush:  # out of time: commit every masked position from the current marginals
            pos, tok = positions, flush_sampler(logits, generator)
        else:
            pos, tok = strategy(middle, open_, marg, need, generator)
        # at least one token committed per iteration: the loop ends after at most N iterations
        assert pos.numel() >= 1 and bool(open_[pos].all()), "an iteration must commit >= 1 masked position"
        assert bool((tok != mask_id).all()), "the mask id is never committed"
        middle[pos] = tok
        if healing is not None:
            healing.commit(middle, mask_id)
        if config.eos_casting:
            cast_eos(middle, middle == mask_id, eos_id, N)
        canvas.middle.copy_(middle[:N])

        stats.committed_per_iteration.append(pos.numel())
        budget.record(time.perf_counter() - t_iter)
        iteration += 1
        if on_step is not None:
            on_step(StepInfo(iteration - 1, pos.numel(), int((middle == mask_id).sum()),
                             time.perf_counter() - start, pos.tolist(), tok.tolist()))

    stats.iterations = iteration
    stats.dlm_forwards = forward.forwards
    stats.deadline_hit = budget.hit
    middle_ids = middle[:N].tolist()
    drop = {eos_id, dlm.tokenizer.pad_token_id}
    tokens = [t for t in middle_ids if t not in drop]
    stats.tokens = len(tokens)
    text = dlm.tokenizer.decode(tokens, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    if healing is not None:
        healed = healing.strip(text)
        stats.healing = "failed" if healed is None else "ok"
        text = healed or ""
    if stop is not None:
        text = stop(text + "\n") or text  # the canvas ends the middle itself: cut what the rule would
    stats.seconds = time.perf_counter() - start
    stats.other_seconds = stats.seconds - stats.dlm_seconds - stats.ar_seconds
    return DecodeResult(text, tokens, stats, middle_ids)


def infill(
    models: ModelPair,
    prefix: str,
    suffix: str,
    config: DecodeConfig,
    *,
    max_prefix_tokens: int | None = None,
    max_suffix_tokens: int | None = None,
    cancel: Callable[[], bool] | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    stop: Callable[[str], str | None] | None = None,
) -> DecodeResult:
    """Text in, middle text out. Keeps the LAST max_prefix_tokens of the prefix and the FIRST
    max_suffix_tokens of the suffix (None = all). Completion: suffix "".

    With `config.token_healing` the prefix's last token is taken off the canvas and the middle must start
    with its text (decoding.healing), so the model writes the boundary in its own tokenisation; the
    returned text is still what goes after the cursor.
    """
    tok = models.dlm.tokenizer
    prefix_ids = tok.encode(prefix, add_special_tokens=False)
    suffix_ids = tok.encode(suffix, add_special_tokens=False)
    if max_prefix_tokens is not None:
        _check_limit("max_prefix_tokens", max_prefix_tokens)
        prefix_ids = prefix_ids[-max_prefix_tokens:] if max_prefix_tokens else []
    if max_suffix_tokens is not None:
        _check_limit("max_suffix_tokens", max_suffix_tokens)
        suffix_ids = suffix_ids[:max_suffix_tokens]
    heal = b""
    if config.token_healing:
        healed = heal_prefix(prefix_ids, TokenTexts.of(tok, models.dlm.vocab_size), _special_ids(tok))
        prefix_ids, heal = healed.prefix_ids, healed.removed
    return decode(models, prefix_ids, suffix_ids, config, cancel=cancel, on_step=on_step, heal=heal, stop=stop)


def _special_ids(tokenizer) -> frozenset[int]:
    return frozenset(getattr(tokenizer, "all_special_ids", None) or ())


def _check_ids(name: str, ids: list[int], vocab: int, mask_id: int | None) -> None:
    for t in ids:
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab:
            raise ValueError(f"{name} must be token ids in [0, {vocab}); got {t!r}")
        if mask_id is not None and t == mask_id:
            raise ValueError(f"{name} contains the mask id {mask_id}; the context must be plain text")


def _check_lengths(models: ModelPair, canvas_len: int, B: int) -> None:
    """The canvas must fit the DLM's positions, a block prompt (2B + 2 positions) the AR's."""
    dlm_max = getattr(getattr(models.dlm.model, "config", None), "max_position_embeddings", None)
    if dlm_max is not None and canvas_len > dlm_max:
        raise ValueError(f"prefix + max_new_tokens + suffix = {canvas_len} tokens, more than the DLM's "
                         f"{dlm_max} positions; keep less context (max_prefix_tokens / max_suffix_tokens)")
    ar_max = getattr(getattr(models.ar.model, "config", None), "max_position_embeddings", None) if models.ar else None
    if ar_max is not None and 2 * B + 2 > ar_max:
        raise ValueError(f"block_size {B} needs {2 * B + 2} AR positions; the AR has {ar_max}")


def _check_limit(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer or None; got {value!r}")
