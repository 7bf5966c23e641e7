"""What the server remembers about its requests: one structured record each, counters, codila/debugStats.

    Record     the one JSON log line of a request (`lsp_server.requests` logger), also kept for debugStats
    Ledger     counters, the last RECENT_REQUESTS records, the last context and latency; `snapshot()`

Everything here is touched on the event loop only: the model thread hands its results back first.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from lsp_server.pipeline import Completion
from lsp_server.text import Context

request_log = logging.getLogger("lsp_server.requests")

RECENT_REQUESTS = 256  # request records kept for codila/debugStats
ANSWERED = ("ok", "empty", "cache")  # outcomes of a request answered by the pipeline


@dataclass
class Record:
    """The one structured log line of a request.

    server_ms is the server's own overhead: total - debounce - decode (the decoder call itself).
    """

    request: Any
    method: str
    doc: str
    outcome: str = "pending"
    language: str | None = None
    prefix_chars: int = 0
    suffix_chars: int = 0
    debounce_ms: float = 0.0
    queue_ms: float = 0.0
    window_ms: float = 0.0
    decode_ms: float = 0.0
    dlm_ms: float = 0.0
    ar_ms: float = 0.0
    decoder_other_ms: float = 0.0
    tidy_ms: float = 0.0
    verify_ms: float = 0.0
    verify: str | None = None
    server_ms: float = 0.0
    total_ms: float = 0.0
    forwards: int = 0
    ar_calls: int = 0
    iterations: int = 0
    tokens: int = 0
    tokens_per_step: float = 0.0
    deadline_hit: bool = False
    chars: int = 0
    error: str | None = None

    def describe(self, context: Context) -> None:
        self.language, self.prefix_chars, self.suffix_chars = context.language, len(context.prefix), len(context.suffix)

    def add(self, completion: Completion) -> None:
        """The pipeline's stage timings and the decoder's counters."""
        self.chars = len(completion.text)
        self.verify = completion.verify
        self.window_ms, self.decode_ms = completion.window_ms, completion.decode_ms
        self.tidy_ms, self.verify_ms = completion.tidy_ms, completion.verify_ms
        if (stats := completion.stats) is not None:
            self.dlm_ms, self.ar_ms = stats["dlm_seconds"] * 1000, stats["ar_seconds"] * 1000
            self.decoder_other_ms = stats["other_seconds"] * 1000
            self.forwards, self.ar_calls = stats["dlm_forwards"], stats["ar_calls"]
            self.iterations, self.tokens = stats["iterations"], stats["tokens"]
            self.tokens_per_step = stats["tokens"] / max(stats["iterations"], 1)
            self.deadline_hit = bool(stats.get("deadline_hit", False))

    def as_dict(self) -> dict[str, Any]:
        return {_camel(k): (round(v, 2) if isinstance(v, float) else v) for k, v in dataclasses.asdict(self).items()}


class Ledger:
    """Counters and recent records of one server (codila/debugStats)."""

    def __init__(self) -> None:
        self.counters = dict(requests=0, cache_hits=0, decodes_started=0, decodes_finished=0,
                             decodes_stopped=0, decodes_failed=0, loads=0)
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_REQUESTS)
        self.last_context: Context | None = None
        self.last_latency_ms: float | None = None

    def count(self, name: str) -> None:
        self.counters[name] += 1

    def finish(self, record: Record) -> None:
        """Log the record and keep it; answered requests set the last latency."""
        self.recent.append(record.as_dict())
        request_log.info("%s", json.dumps(record.as_dict()))
        if record.outcome in ANSWERED:
            self.last_latency_ms = record.total_ms

    def snapshot(self) -> dict[str, Any]:
        """Threads, memory, counters, the last request's context and the recent records."""
        context = self.last_context
        return {
            "threads": threading.active_count(),
            "threadNames": sorted(t.name for t in threading.enumerate()),
            "osThreads": _os_threads(),
            "rssBytes": _rss_bytes(),
            **{_camel(k): v for k, v in self.counters.items()},
            "lastLatencyMs": self.last_latency_ms,
            "lastContext": None if context is None else {
                "uri": context.uri, "language": context.language, "prefixTail": context.prefix[-40:],
                "suffixHead": context.suffix[:40], "line": context.position.line,
                "character": context.position.character},
            "recent": list(self.recent),
        }


def status_note(record: Record, syntax_checked: bool) -> str:
    """The status bar's line after a completion (`syntax_checked`: the syntaxCheck setting is not off)."""
    if record.outcome == "cache":
        return "completion from the suggestion being typed"
    note = f"{record.tokens} tokens in {record.iterations} steps"
    if record.verify == "unverified" and not syntax_checked:
        return note
    if record.verify == "unverified":
        return f"{note}; syntax not checked (no grammar for {record.doc})"
    return f"{note}; syntax {record.verify}" if record.verify else note


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _os_threads() -> int | None:
    """Threads of this process as the OS counts them (torch's native pools included); None off Linux."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
