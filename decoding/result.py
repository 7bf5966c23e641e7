"""What one decode gives back, whichever decoder ran it (decoding.loop's canvas methods, decoding.fim's
verified decoding): the middle, its counters and timings, the per-iteration report, and the cancel signal."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


class Cancelled(Exception):
    """Raised by decode() when its `cancel` callable returns True (checked before every iteration)."""


@dataclass
class StepInfo:
    """Reported to `on_step` after every iteration.

    committed: tokens committed by this iteration (EOS-casting fill not counted); remaining: masked positions
    left; positions/tokens: what was committed (middle indices, ids), e.g. to stream a partial completion.
    """

    iteration: int
    committed: int
    remaining: int
    elapsed_s: float
    positions: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)


@dataclass
class DecodeStats:
    """Counters and timings of one decode.

    tokens: generated middle tokens (EOS and its fill excluded). committed_per_iteration: tokens each
    iteration's rule committed. seconds = dlm_seconds (DLM forward passes incl. the marginal edits)
    + ar_seconds (AR executor calls) + other_seconds (everything else: the decoder's own overhead).
    """

    dlm_forwards: int = 0
    ar_calls: int = 0
    ar_tokens: int = 0
    iterations: int = 0
    tokens: int = 0
    committed_per_iteration: list[int] = field(default_factory=list)
    seconds: float = 0.0
    dlm_seconds: float = 0.0
    ar_seconds: float = 0.0
    other_seconds: float = 0.0
    deadline_hit: bool = False
    tau: float | None = None  # the dynamic threshold in force (resolve_tau); None unless codila dynamic
    healing: str = "off"  # token healing: "off", "ok" (the middle spelled the healed text), "failed"
    # verified decoding (decoding.fim): drafts proposed and accepted, prompt tokens computed and reused
    drafted: int = 0
    accepted: int = 0
    prefill_tokens: int = 0
    reused_tokens: int = 0

    def as_dict(self) -> dict:
        """JSON-ready. Adds tokens_per_iteration (mean committed per iteration) and nfe_per_token (DLM
        forward passes per committed token; 1/B for static CoDiLA)."""
        committed = sum(self.committed_per_iteration)
        return {
            **asdict(self),
            "tokens_per_iteration": committed / self.iterations if self.iterations else 0.0,
            "nfe_per_token": self.dlm_forwards / committed if committed else 0.0,
            "tokens_per_second": self.tokens / self.seconds if self.seconds else 0.0,
        }


@dataclass
class DecodeResult:
    """text: the middle with EOS/pad removed; tokens: its ids; middle_ids: all N committed middle ids."""

    text: str
    tokens: list[int]
    stats: DecodeStats
    middle_ids: list[int] = field(default_factory=list)
