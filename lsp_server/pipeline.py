"""The product: the completion an editor gets for a cursor, as one function.

    complete(models, context, settings) -> Completion
        cache -> binary check -> context window -> decoding.infill (ending where the editor's rule says)
        -> tidy -> verify -> worth showing? -> result

The language server runs it for every inline completion, completion and infill request (lsp_server.engine
schedules it on the model thread), and the benchmark harness runs it for `preset:NAME` decoders
(benchmarks/specs.py), so the benchmark's numbers for a preset are the editor's; benchmarks.server_latency
times it through the real server. The cache comes first because a hit needs no window.

Runs on one thread, synchronously. `decoding` resolves `infill` on first use (decoding/__init__.py), so
importing this module does not import torch.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from functools import partial
from dataclasses import dataclass
from typing import Any, Callable

import decoding
from verify import check_insertion

from lsp_server.settings import ServerSettings
from decoding.ending import ending
from lsp_server.text import Context, looks_binary, tidy, window, worth_showing

BINARY_PROBE = 4096  # characters each side of the cursor checked for binary content


@dataclass(frozen=True)
class Completion:
    """What the editor is offered, and how it was made.

    text:    "" when there is nothing to offer.
    outcome: ok | empty | cache (the rest of an earlier suggestion) | binary | stopped (cancel() said so).
    verify:  ok | trimmed | rejected | unverified; None when nothing was checked.
    stats:   the decoder's DecodeStats.as_dict(); None without a decode.
    window_ms, decode_ms, tidy_ms, verify_ms: wall time of the stages (decode: the decoding.infill call).
    """

    text: str
    outcome: str
    verify: str | None = None
    stats: dict[str, Any] | None = None
    window_ms: float = 0.0
    decode_ms: float = 0.0
    tidy_ms: float = 0.0
    verify_ms: float = 0.0


def complete(models: Any, context: Context, settings: ServerSettings, *,
             config: "decoding.DecodeConfig | None" = None,
             cache: "SuggestionCache | None" = None,
             cancel: Callable[[], bool] | None = None,
             on_step: Callable[[Any], None] | None = None,
             on_decode: Callable[[], None] | None = None) -> Completion:
    """The completion for `context` (the text before and after a cursor or selection) with `settings`.

    models:    a decoding.ModelPair. config: decode with this instead of settings.decode_config() (the
               benchmark's ar rows: the same pipeline, another decoder). cache: answers a user typing through an earlier suggestion and keeps
               this one (None in the benchmark). cancel: checked before every decoder iteration.
    on_step:   receives the decoder's StepInfo after each iteration; on_decode: called as the decode starts.
    Raises what the decoder raises for input it cannot take (ValueError).
    """
    if cache is not None and (rest := cache.lookup(context)) is not None:
        return Completion(rest, "cache")
    if looks_binary(context.prefix[-BINARY_PROBE:] + context.suffix[:BINARY_PROBE]):
        return Completion("", "binary")

    started = time.perf_counter()
    tokenizer = models.dlm.tokenizer
    gap = window(context, context_budget(models, settings), partial(token_starts, tokenizer))
    window_ms = _ms_since(started)

    if on_decode is not None:
        on_decode()
    started = time.perf_counter()
    try:
        result = decoding.infill(models, gap.prefix, gap.suffix, config or settings.decode_config(),
                                 max_prefix_tokens=gap.prefix_tokens, max_suffix_tokens=gap.suffix_tokens,
                                 cancel=cancel, on_step=on_step, stop=ending(context.prefix, context.suffix))
    except decoding.Cancelled:
        return Completion("", "stopped", window_ms=window_ms, decode_ms=_ms_since(started))
    decode_ms = _ms_since(started)

    started = time.perf_counter()
    tidied = tidy(result.text, context)
    tidy_ms = _ms_since(started)
    verdict = check_insertion(context.prefix, tidied, context.suffix, context.language, settings.syntax_check)
    text = verdict.text if worth_showing(verdict.text, context) else ""
    if cache is not None:
        cache.store(context, text)
    return Completion(text, "ok" if text else "empty", verdict.status, result.stats.as_dict(),
                      window_ms, decode_ms, tidy_ms, verdict.millis)


def token_starts(tokenizer: Any, text: str) -> list[int]:
    """The character offset where each token of `text` starts (a fast tokenizer's offset mapping)."""
    return [start for start, _ in tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]]


def context_budget(models: Any, settings: ServerSettings) -> int:
    """contextTokens, shrunk so that prefix + masked middle + suffix fits the DLM's positions."""
    positions = getattr(models.dlm.model.config, "max_position_embeddings", None) or 1 << 30
    budget = min(settings.context_tokens, positions - settings.max_new_tokens)
    if budget < 0:
        raise ValueError(f"maxNewTokens {settings.max_new_tokens} is more than the model's {positions} positions")
    return budget


class SuggestionCache:
    """The last suggestions per document. Typing the next characters of one is answered from here.

    An entry remembers the cursor's surroundings by length and a stretch of text on each side, not the whole
    document: a hit needs the same suffix and a prefix that extends the old one by a start of the suggestion.
    Used from the event loop (lookup, forget) and the model thread (lookup, store): a lock guards it.
    """

    KEEP = 4  # entries per document
    EDGE = 2048  # characters compared on each side

    def __init__(self) -> None:
        self._entries: dict[str, deque[tuple[int, str, int, str, str]]] = {}
        self._lock = threading.Lock()

    def store(self, context: Context, text: str) -> None:
        if text:
            entry = (len(context.prefix), context.prefix[-self.EDGE:], len(context.suffix),
                     context.suffix[: self.EDGE], text)
            with self._lock:
                self._entries.setdefault(context.uri, deque(maxlen=self.KEEP)).append(entry)

    def lookup(self, context: Context) -> str | None:
        """The rest of a stored suggestion the user is typing through, or None."""
        prefix, suffix = context.prefix, context.suffix
        with self._lock:
            entries = list(self._entries.get(context.uri, ()))
        for prefix_len, prefix_tail, suffix_len, suffix_head, suggestion in reversed(entries):
            typed = prefix[prefix_len:]
            if (len(suffix) == suffix_len and len(prefix) >= prefix_len and len(typed) < len(suggestion)
                    and suggestion.startswith(typed) and suffix.startswith(suffix_head)
                    and prefix[prefix_len - len(prefix_tail): prefix_len] == prefix_tail):
                return suggestion[len(typed):]
        return None

    def forget(self, uri: str | None = None) -> None:
        with self._lock:
            if uri is None:
                self._entries.clear()
            else:
                self._entries.pop(uri, None)


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
