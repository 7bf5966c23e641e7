"""Every method on the causal-context DLM (the default model): one forward pass per round (decoding.fim.step),
what the round commits chosen once per decode.

The B marginals of the block at the frontier f, as one pass of decoding.fim gives them:
    row 0       the base's own logits at f (the last verify row: causal, adapter off, exact);
    rows 1..B-1 the draft rows 0..B-2 of the pass (Dream's shift: draft row k predicts f + k + 1).
Methods:
    ar          the base alone, one token per pass;
    verified    the base's greedy middle: B drafts per pass, the base keeps the run it agrees with;
    dlm         (k = tokens_per_step) the argmax of the k rows, committed unverified;
    codila      the executor (a shallow slice of the base with its own LoRA, decoding.models.base_slice) decodes
                the block from the rows' soft mixture (codila-top1: their argmax embeddings) with the frontier
                token fixed to the base's, then commits the whole block (static) or the frontier and the
                longest run behind it whose mean executor entropy is at most tau (dynamic).
The CoDiLA rows (codila, codila-top1, dlm) are not verified: they measure the drafts. With B = 1 every method
is the base's greedy middle.

    decode_fim(models, method, prefix_ids, suffix_ids, config, ...) -> DecodeResult
"""

from __future__ import annotations

import time
from functools import partial
from typing import Callable

import torch

from decoding.commit import mean_below
from decoding.config import DecodeConfig
from decoding.executor import BlockExecutor, make_executor
from decoding.fim import DraftArgmax, Rounds, generate
from decoding.models import ModelPair, fold_stop_tokens
from decoding.result import DecodeResult, DecodeStats, StepInfo
from decoding.soft import align_probs, block_inputs


def block_rows(logits: torch.Tensor, drafts: torch.Tensor, size: int) -> torch.Tensor:
    """The marginals of the block at the frontier: logits (V,) the base's at the frontier, drafts (K, V) the
    pass's draft rows. Returns (min(size, K + 1), V): row 0 the base's, row k >= 1 draft row k - 1."""
    return torch.cat([logits[None], drafts[:size - 1]])  # (b, V)


def executor_inputs(models: ModelPair, rows: torch.Tensor, frontier: torch.Tensor, hard: bool = False) -> torch.Tensor:
    """The executor's prompt for blocks whose first token is known: [E(open), E(frontier), e_2..e_B, E(close)].

    rows: (nb, B, V) logits of each block's marginals (block_rows); frontier: (nb,) the token at position 0
    (the base's at inference, the true one in training). hard: codila-top1, each e_j the embedding of row j's
    argmax instead of the expectation under it. Returns (nb, B + 2, H). Shared by decoding and training.executor.
    """
    dlm, ar = models.dlm, models.ar
    logits = fold_stop_tokens(rows.float().clone(), dlm.eos_id, dlm.stop_ids)  # a turn-end token means EOS
    probs = align_probs(torch.softmax(logits, dim=-1), models.alignment)  # (nb, B, V_ar), temperature 1
    committed = torch.full(rows.shape[:2], -1, dtype=torch.long, device=rows.device)  # (nb, B), -1 = decoded
    committed[:, 0] = frontier
    E = ar.embeddings
    return block_inputs(probs.to(E.device), committed.to(E.device), E, ar.open_id, ar.close_id, dlm.eos_id,
                        hard=hard)  # (nb, B + 2, H)


class ExecutorRounds:
    """codila / codila-top1 on the causal-context DLM: the executor decodes the frontier block, unverified.

    keep(entropies (b - 1,) of the positions behind the frontier) -> how many of them to commit.
    """

    verifies = False

    def __init__(self, models: ModelPair, block_size: int, hard: bool, keep: Callable[[torch.Tensor], int],
                 executor: BlockExecutor, generator: torch.Generator, stats: DecodeStats):
        self.models, self.block_size, self.hard, self.keep = models, block_size, hard, keep
        self.block = block_size - 1  # the frontier's row is the base's; the rest are drafted
        self.executor, self.generator, self.stats = executor, generator, stats

    def propose(self, logits: torch.Tensor, drafts: torch.Tensor, room: int) -> list[int]:
        rows = block_rows(logits, drafts, min(self.block_size, room + 1))  # (b, V)
        frontier = logits.argmax().view(1)  # (1,) the base's own token: the round starts with it, as any round
        inputs = executor_inputs(self.models, rows[None], frontier, self.hard)  # (1, b + 2, H)
        forced = torch.full((1, rows.shape[0]), -1, dtype=torch.long)  # (1, b)
        forced[0, 0] = frontier
        t0 = time.perf_counter()
        tokens, entropies = self.executor.decode_blocks(inputs, forced, self.generator)  # (1, b) each
        self.stats.ar_seconds += time.perf_counter() - t0
        self.stats.ar_calls += 1
        self.stats.ar_tokens += tokens.numel()
        # at least one token per round: the frontier's, then the run behind it the rule keeps
        return tokens[0, :1 + self.keep(entropies[0, 1:].float().cpu())].tolist()


def make_rounds(models: ModelPair, method: str, config: DecodeConfig, stats: DecodeStats) -> Rounds:
    """The strategy of one decode on the causal-context DLM (nothing below re-reads the method)."""
    if method == "ar":
        return DraftArgmax(0)
    if method == "verified":
        return DraftArgmax(config.block_size)
    if method == "dlm":
        return DraftArgmax(config.tokens_per_step - 1, verifies=False)
    keep = (lambda e: e.numel()) if config.mode == "static" else partial(mean_below, tau=stats.tau)
    executor = make_executor(models, config.ar_temperature, config.ar_top_p, config.seed, config.eos_min_prob)
    generator = torch.Generator(device=models.ar.device).manual_seed(config.seed)
    return ExecutorRounds(models, config.block_size, method == "codila-top1", keep, executor, generator, stats)


def check_fim_method(method: str, config: DecodeConfig, models: ModelPair) -> None:
    """Raise ValueError for a method the causal-context DLM cannot run as configured."""
    fim = models.dlm.fim
    if method in ("codila", "codila-top1") and models.ar is None:
        raise ValueError(f"method {method} on a causal-context DLM (the default model) needs its executor: none "
                         "is loaded; train one with python -m training.executor and give its folder as ar_path "
                         "(methods ar, verified and dlm need none)")
    drafted = {"verified": config.block_size, "dlm": config.tokens_per_step - 1}.get(
        method, config.block_size - 1 if method.startswith("codila") else 0)
    if drafted and not fim.drafts:
        raise ValueError(f"method {method} needs a DLM with a drafting adapter; this one has none (use ar)")
    if method == "dlm" and config.confidence is not None:
        raise ValueError("method dlm on a causal-context DLM commits tokens_per_step rows per pass; confidence "
                         "is for a bidirectional DLM's canvas")


def decode_fim(models: ModelPair, method: str, prefix_ids: list[int], suffix_ids: list[int], config: DecodeConfig,
               *, tau: float | None = None, heal: bytes = b"", stop: Callable[[str], str | None] | None = None,
               cancel: Callable[[], bool] | None = None, on_step: Callable[[StepInfo], None] | None = None
               ) -> DecodeResult:
    """`method` (resolved and checked: decoding.loop.resolve_method) on the causal-context DLM; tau: the dynamic
    threshold in force (codila)."""
    dynamic = method.startswith("codila") and config.mode == "dynamic"
    stats = DecodeStats(tau=tau if dynamic else None)
    return generate(models.dlm.fim, prefix_ids, suffix_ids if config.read_suffix else None, config.max_new_tokens,
                    rounds=make_rounds(models, method, config, stats), stats=stats, heal=heal, stop=stop,
                    cancel=cancel, on_step=on_step)
