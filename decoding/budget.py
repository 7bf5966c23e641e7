"""The latency budget: how many tokens an iteration must commit for the decode to end by the deadline.

Chosen once per decode: `NoBudget` (deadline_ms None) always asks for 1 token per iteration (the strategy's
own rule decides); `Deadline` estimates the cost of one iteration as it goes and raises the minimum so that
the tokens left fit in the iterations left. Past the deadline it asks for everything at once, and the loop
commits all remaining positions from the current marginals.
"""

from __future__ import annotations

import math
import time


class NoBudget:
    hit = False

    def plan(self, remaining: int) -> tuple[int, bool]:
        """(minimum tokens to commit this iteration, commit everything now)."""
        return 1, False

    def record(self, seconds: float) -> None:
        pass


class Deadline:
    """deadline_s: seconds from `start` (time.perf_counter()) by which the decode should end.

    The iteration cost is an exponential moving average (weight `smoothing` on the newest iteration), so it
    follows changes such as cached vs full forward passes and shrinking candidate sets.
    """

    def __init__(self, deadline_s: float, start: float, smoothing: float = 0.5):
        self.end = start + deadline_s
        self.smoothing = smoothing
        self.cost: float | None = None
        self.hit = False

    def plan(self, remaining: int) -> tuple[int, bool]:
        """(minimum tokens to commit this iteration, commit everything now).

        Everything is committed now when the deadline has passed or only this iteration fits before it.
        """
        left = self.end - time.perf_counter()
        if left <= 0:
            self.hit = True
            return remaining, True
        if self.cost is None:
            return 1, False
        iterations = math.floor(left / self.cost)  # this one included
        if iterations <= 1 and remaining > 1:
            self.hit = True
            return remaining, True
        return math.ceil(remaining / max(iterations, 1)), False

    def record(self, seconds: float) -> None:
        self.cost = seconds if self.cost is None else self.smoothing * seconds + (1 - self.smoothing) * self.cost


def make_budget(deadline_ms: float | None, start: float) -> NoBudget | Deadline:
    return NoBudget() if deadline_ms is None else Deadline(deadline_ms / 1000.0, start)
