"""What the benchmark measures, per task and per decoder.

The headline columns are pass@1 (over the tasks with tests) and exact match (over all tasks): what a user
gets. syntax_ok and the rest explain them (a junk model that writes `return None` everywhere parses).

Per task: syntax_ok (the middle is not empty and the whole program prompt + middle + suffix parses:
tree-sitter, plus Python's own compiler for Python; an empty middle would pass, as removing a whole statement
usually leaves valid code), exact_match (the middle equals the reference line by line, trailing whitespace and
trailing blank lines ignored), similarity (how close the middle is to the reference, 0..1: difflib's ratio
of the two after the same normalisation; partial credit where exact match gives none), passed (the task's
tests pass; None without tests).
Per decoder, over its tasks: the share of syntax_ok / exact_match, mean similarity, top_middle_share (the
share of tasks answered with the decoder's single most frequent non-empty middle: a decoder that writes
`return None` everywhere scores high syntax_ok and high top_middle_share; different tasks rarely share a
right answer), pass@1 over the tasks that have tests, DLM forward passes per committed token, generated
tokens per second of decoding, mean and 95th-percentile latency of one infill call.
"""

from __future__ import annotations

import difflib
import statistics
from collections import Counter
from dataclasses import dataclass

import numpy

from verify import syntax_ok as _syntax_ok

HEADLINE = ("pass_at_1", "exact_match")  # the first columns of the table and of each --json result row


@dataclass(frozen=True)
class Sample:
    """One decoder on one task.

    tokens: generated middle tokens (EOS excluded); committed: positions the decoder committed (EOS
    included); latency_ms: wall time of the infill call (tokenization included).
    """

    task_id: str
    decoder: str
    middle: str
    syntax_ok: bool
    exact_match: bool
    passed: bool | None
    exec_detail: str | None
    latency_ms: float
    tokens: int
    committed: int
    dlm_forwards: int
    ar_calls: int
    iterations: int
    max_new_tokens: int
    deadline_hit: bool
    similarity: float = 0.0


def normalize(text: str) -> list[str]:
    """Lines without trailing whitespace, trailing blank lines dropped (the exact-match comparison)."""
    return [line.rstrip() for line in text.rstrip().split("\n")]


def exact_match(middle: str, reference: str) -> bool:
    return normalize(middle) == normalize(reference)


def _normalized(text: str) -> str:
    """`normalize` as one string, without leading whitespace (the cursor may sit before or after the
    indentation)."""
    return "\n".join(normalize(text)).lstrip()


def similarity(middle: str, reference: str) -> float:
    """0..1, 1 for an exact match: difflib's ratio of the `_normalized` middle and reference."""
    a, b = _normalized(middle), _normalized(reference)
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() if a or b else 1.0


def program_syntax_ok(prompt: str, middle: str, suffix: str, language: str) -> bool:
    """The middle is not blank and the whole program parses. A blank middle never counts: removing a whole
    statement usually leaves valid code, and a decoder that only emits EOS must not score."""
    return bool(middle.strip()) and _syntax_ok(prompt + middle + suffix, language)


def percentile(values: list[float], q: float) -> float:
    """q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    return float(numpy.percentile(values, q))


def summarize(decoder: str, samples: list[Sample]) -> dict:
    """The result row of one decoder (keys as in the --json output): the headline first, each with the number
    of tasks it is computed over (pass_at_1: n_tested, the tasks with tests; exact_match and the rest: n)."""
    mine = [s for s in samples if s.decoder == decoder]
    n = len(mine)
    tested = [s for s in mine if s.passed is not None]
    latencies = [s.latency_ms for s in mine]
    committed = sum(s.committed for s in mine)
    seconds = sum(latencies) / 1000.0
    return {
        "decoder": decoder,
        "pass_at_1": _share(s.passed for s in tested) if tested else None,
        "n_tested": len(tested),
        "exact_match": _share(s.exact_match for s in mine),
        "n": n,
        "syntax_ok": _share(s.syntax_ok for s in mine),
        "similarity": statistics.fmean(s.similarity for s in mine) if mine else None,
        "top_middle_share": _top_share([s.middle for s in mine]),
        "nfe_per_token": sum(s.dlm_forwards for s in mine) / committed if committed else None,
        "tokens_per_second": sum(s.tokens for s in mine) / seconds if seconds else None,
        "mean_latency_ms": statistics.fmean(latencies) if latencies else None,
        "p95_latency_ms": percentile(latencies, 95) if latencies else None,
        "tokens": sum(s.tokens for s in mine),
        "fill": statistics.fmean(s.tokens / s.max_new_tokens for s in mine) if mine else None,
        "deadline_hit_rate": _share(s.deadline_hit for s in mine),
        "empty": _share(not s.middle.strip() for s in mine),
    }


def _top_share(middles: list[str]) -> float | None:
    """Share of `middles` equal (normalised) to the most frequent non-empty one; None for no middles."""
    if not middles:
        return None
    counts = Counter(_normalized(m) for m in middles)
    counts.pop("", None)
    return max(counts.values()) / len(middles) if counts else 0.0


def _share(flags) -> float | None:
    flags = list(flags)
    return sum(map(bool, flags)) / len(flags) if flags else None
