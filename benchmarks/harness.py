"""The benchmark loop: every decoder on every task, with the same loaded models.

    run_benchmark(models, tasks, decoders, length) -> Run(samples, interrupted)

Per task, per decoder: choose the generation length -> fit prefix/suffix into the model's context ->
infill -> score (syntax, exact match, tests). Tasks are the outer loop, so an interrupted run has every
decoder on the same tasks, and slow drifts of the machine (another job starting) hit all decoders alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from benchmarks.execution import check_program, run_program
from benchmarks.metrics import Sample, exact_match, program_syntax_ok, similarity
from benchmarks.specs import DecoderSpec
from benchmarks.tasks import Task


@dataclass(frozen=True)
class Length:
    """How many masked positions each task gets (max_new_tokens).

    "fixed:N": N for every task; the decoder must end the middle itself (unused positions become EOS).
    "oracle":  the reference middle's token count under the DLM tokenizer, so the decoder fills exactly the
               right number of positions (the decode pads a partial last block with EOS itself, so no
               rounding to a multiple of B is needed and every decoder gets the same N).
    """

    kind: str
    tokens: int | None = None

    @classmethod
    def parse(cls, text: str) -> "Length":
        if text == "oracle":
            return cls("oracle")
        kind, _, number = text.partition(":")
        if kind == "fixed" and number.isdigit() and 1 <= int(number) <= 8192:
            return cls("fixed", int(number))
        raise ValueError(f"length must be 'oracle' or 'fixed:N' with 1 <= N <= 8192; got {text!r}")

    def for_task(self, task: Task, tokenizer) -> int:
        if self.kind == "fixed":
            return self.tokens
        return max(1, len(tokenizer.encode(task.canonical_solution, add_special_tokens=False)))

    def __str__(self) -> str:
        return self.kind if self.tokens is None else f"{self.kind}:{self.tokens}"


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    interrupted: bool = False
    tasks_done: int = 0


def context_limits(prefix_tokens: int, suffix_tokens: int, budget: int) -> tuple[int, int]:
    """(prefix tokens kept, suffix tokens kept) within `budget` context tokens.

    Everything when it fits; otherwise the suffix keeps up to a third of the budget (more if the prefix is
    short) and the prefix the rest: the code just before the gap matters most.
    """
    if budget < 0:
        raise ValueError(f"no room for context: budget {budget}")
    if prefix_tokens + suffix_tokens <= budget:
        return prefix_tokens, suffix_tokens
    keep_suffix = min(suffix_tokens, max(budget // 3, budget - prefix_tokens))
    return budget - keep_suffix, keep_suffix


def evaluate(models, task: Task, decoder: DecoderSpec, max_new_tokens: int, max_context: int,
             exec_timeout_s: float) -> Sample:
    """One decoder on one task -> a scored Sample."""
    try:
        return _evaluate(models, task, decoder, max_new_tokens, max_context, exec_timeout_s)
    except ValueError as err:
        raise ValueError(f"task {task.task_id!r}, decoder {decoder.spec!r}: {err}") from err


def _evaluate(models, task: Task, decoder: DecoderSpec, max_new_tokens: int, max_context: int,
              exec_timeout_s: float | None) -> Sample:
    """evaluate() without the error context; exec_timeout_s None skips the tests (warm-up)."""
    from decoding import infill

    tokenizer = models.dlm.tokenizer
    config = decoder.config.replace(max_new_tokens=max_new_tokens)
    n_prefix = len(tokenizer.encode(task.prompt, add_special_tokens=False))
    n_suffix = len(tokenizer.encode(task.suffix, add_special_tokens=False))
    keep_prefix, keep_suffix = context_limits(n_prefix, n_suffix, max_context - max_new_tokens)

    started = time.perf_counter()
    result = infill(models, task.prompt, task.suffix, config, max_prefix_tokens=keep_prefix,
                    max_suffix_tokens=keep_suffix)
    latency_ms = (time.perf_counter() - started) * 1000.0

    middle = result.text
    passed, detail = None, None
    if task.executable and exec_timeout_s is not None:
        outcome = run_program(check_program(task.prompt, middle, task.suffix, task.test, task.entry_point),
                              timeout_s=exec_timeout_s)
        passed, detail = outcome.passed, outcome.detail or None
    stats = result.stats
    return Sample(
        task_id=task.task_id, decoder=decoder.spec, middle=middle,
        syntax_ok=program_syntax_ok(task.prompt, middle, task.suffix, task.language),
        exact_match=exact_match(middle, task.canonical_solution), passed=passed, exec_detail=detail,
        latency_ms=latency_ms, tokens=stats.tokens, committed=sum(stats.committed_per_iteration),
        dlm_forwards=stats.dlm_forwards, ar_calls=stats.ar_calls, iterations=stats.iterations,
        max_new_tokens=max_new_tokens, deadline_hit=stats.deadline_hit,
        similarity=similarity(middle, task.canonical_solution),
    )


def run_benchmark(models, tasks: list[Task], decoders: list[DecoderSpec], length: Length, *,
                  max_context: int, exec_timeout_s: float = 5.0,
                  on_sample: Callable[[Sample], None] | None = None) -> Run:
    """Every decoder on every task. Ctrl-C stops it and returns what finished (run.interrupted = True);
    samples of a task that not every decoder finished are dropped, so all decoders cover the same tasks."""
    if not tasks or not decoders:
        raise ValueError("need at least one task and one decoder")
    run = Run()
    try:
        _warm_up(models, tasks[0], decoders, length, max_context)
        for task in tasks:
            n = _new_tokens(models, task, length, max_context)
            finished = []
            for decoder in decoders:
                finished.append(evaluate(models, task, decoder, n, max_context, exec_timeout_s))
                if on_sample is not None:
                    on_sample(finished[-1])
            run.samples += finished
            run.tasks_done += 1
    except KeyboardInterrupt:
        run.interrupted = True
    return run


def _new_tokens(models, task: Task, length: Length, max_context: int) -> int:
    n = length.for_task(task, models.dlm.tokenizer)
    if n >= max_context:
        raise ValueError(f"task {task.task_id}: {n} new tokens leave no room in a {max_context}-token context; "
                         "use a smaller --length or a larger --max-context")
    return n


def _warm_up(models, task: Task, decoders: list[DecoderSpec], length: Length, max_context: int) -> None:
    """One untimed decode per decoder on the first task: the first call of each configuration pays one-time
    costs (allocator growth, kernel selection for new shapes, lazy imports) that are not its speed."""
    n = _new_tokens(models, task, length, max_context)
    for decoder in decoders:
        _evaluate(models, task, decoder, n, max_context, exec_timeout_s=None)
