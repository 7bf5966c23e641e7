"""The benchmark loop: every decoder on every task, with the same loaded models.

    run_benchmark(models, tasks, decoders, length) -> Run(samples, interrupted)

Per task, per decoder: choose the generation length -> the decoder's middle (benchmarks/specs.py: the
decoder alone on the context decoding.context.split_context keeps, or the editor's whole pipeline for
`preset:` specs) -> score (syntax, exact match, tests). Tasks are the outer loop, so an interrupted run has
every decoder on the same tasks, and slow drifts of the machine (another job starting) hit all decoders alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from benchmarks.execution import check_program, run_program
from benchmarks.metrics import Sample, exact_match, program_syntax_ok, similarity
from benchmarks.specs import Decoder
from benchmarks.tasks import Task


@dataclass(frozen=True)
class Length:
    """How many masked positions each task gets (max_new_tokens).

    "fixed:N": N for every task; the decoder must end the middle itself (unused positions become EOS).
    "oracle":  the reference middle's token count under the DLM tokenizer, so the decoder fills exactly the
               right number of positions (the decode pads a partial last block with EOS itself, so no
               rounding to a multiple of B is needed and every decoder gets the same N). With token healing
               the model writes the prefix's last token again before the middle, in its own tokenisation
               (decoding.healing.heal_split): that is the count then, or every middle comes out short.
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

    def for_task(self, task: Task, tokenizer, healing: bool = False) -> int:
        if self.kind == "fixed":
            return self.tokens
        if healing:
            from decoding.healing import heal_split  # imports torch, as every decode does

            return max(1, len(heal_split(tokenizer, task.prompt, task.canonical_solution)[1]))
        return max(1, len(tokenizer.encode(task.canonical_solution, add_special_tokens=False)))

    def __str__(self) -> str:
        return self.kind if self.tokens is None else f"{self.kind}:{self.tokens}"


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    interrupted: bool = False
    tasks_done: int = 0


def evaluate(models, task: Task, decoder: Decoder, max_new_tokens: int, max_context: int,
             exec_timeout_s: float | None) -> Sample:
    """One decoder on one task -> a scored Sample; exec_timeout_s None skips the tests (warm-up).

    Every decode starts cold: the prompt's cached keys and values that the previous decoder left (the same
    task's prompt) would spare the next one its prefill."""
    models.forget_prompts()
    try:
        result = decoder.infill(models, task, max_new_tokens, max_context)
    except ValueError as err:
        raise ValueError(f"task {task.task_id!r}, decoder {decoder.spec!r}: {err}") from err
    middle = result.text
    passed, detail = None, None
    if task.executable and exec_timeout_s is not None:
        outcome = run_program(check_program(task.prompt, middle, task.suffix, task.test, task.entry_point),
                              timeout_s=exec_timeout_s)
        passed, detail = outcome.passed, outcome.detail or None
    stats = result.stats or {}
    return Sample(
        task_id=task.task_id, decoder=decoder.spec, middle=middle,
        syntax_ok=program_syntax_ok(task.prompt, middle, task.suffix, task.language),
        exact_match=exact_match(middle, task.canonical_solution), passed=passed, exec_detail=detail,
        latency_ms=result.latency_ms, tokens=stats.get("tokens", 0),
        committed=sum(stats.get("committed_per_iteration", ())), dlm_forwards=stats.get("dlm_forwards", 0),
        ar_calls=stats.get("ar_calls", 0), iterations=stats.get("iterations", 0),
        max_new_tokens=result.max_new_tokens, deadline_hit=stats.get("deadline_hit", False),
        similarity=similarity(middle, task.canonical_solution),
    )


def run_benchmark(models, tasks: list[Task], decoders: list[Decoder], length: Length, *,
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
            finished = []
            for decoder in decoders:
                n = length.for_task(task, models.dlm.tokenizer, heals(decoder))
                finished.append(evaluate(models, task, decoder, n, max_context, exec_timeout_s))
                if on_sample is not None:
                    on_sample(finished[-1])
            run.samples += finished
            run.tasks_done += 1
    except KeyboardInterrupt:
        run.interrupted = True
    return run


def _warm_up(models, task: Task, decoders: list[Decoder], length: Length, max_context: int) -> None:
    """One untimed decode per decoder on the first task: the first call of each configuration pays one-time
    costs (allocator growth, kernel selection for new shapes, lazy imports) that are not its speed."""
    for decoder in decoders:
        evaluate(models, task, decoder, length.for_task(task, models.dlm.tokenizer, heals(decoder)), max_context,
                 exec_timeout_s=None)


def heals(decoder: Decoder) -> bool:
    """Whether the decoder takes the prefix's last token off the canvas (decoder specs: their config)."""
    config = getattr(decoder, "config", None)
    return bool(getattr(config, "token_healing", False))
