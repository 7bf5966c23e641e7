"""Which requests run, and each one's bookkeeping in one place.

    Request     one completion or infill request, from its arrival to its log line: its stop flag (read by the
                decoder before every step), its Record, the counters it moves, its status note
    Scheduler   the requests in flight: `open` is the context every request runs in; a newer completion for a
                document stops the older one; `cancel(request_id)` stops one ($/cancelRequest)

Everything here runs on the event loop; the model thread reads a request's stop flag only, and what it tells a
request (lsp_server.worker.JobWatcher) is handed to the event loop first.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Iterator

from pygls.exceptions import JsonRpcInvalidParams

from lsp_server.editor import StatusBar
from lsp_server.pipeline import Completion
from lsp_server.records import ANSWERED, Ledger, Record
from lsp_server.settings import ServerSettings
from lsp_server.text import Context
from lsp_server.worker import Decoded

log = logging.getLogger("lsp_server.jobs")


class Request:
    """One request's bookkeeping. As a context manager: counted as it starts; at its end a cancelled task
    stops its work, an error is recorded, the record is logged (Ledger.finish) and, when the request was
    answered, the status bar shows its note."""

    def __init__(self, request_id: Any, method: str, uri: str, ledger: Ledger, status: StatusBar, *,
                 per_document: bool) -> None:
        self.id = request_id
        self.per_document = per_document  # a completion: a newer one for the document stops it (not an infill)
        self.record = Record(request_id, method, Path(uri).name)
        self.arrived = time.perf_counter()
        self.stop_flag = threading.Event()
        self.reason = ""  # why it stopped: superseded | cancelled | shutdown
        self.settings: ServerSettings | None = None  # what it completes with (describe); None before startup
        self._ledger, self._status = ledger, status

    def __enter__(self) -> Request:
        self._ledger.count("requests")
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if isinstance(error, asyncio.CancelledError):  # $/cancelRequest: pygls cancelled the handler's task
            self.stop("cancelled")
            self.record.outcome = "cancelled"
        elif isinstance(error, Exception):
            self.record.outcome = "invalid" if isinstance(error, JsonRpcInvalidParams) else "error"
            self.record.error = f"{type(error).__name__}: {error}"
        record = self.record
        record.total_ms = (time.perf_counter() - self.arrived) * 1000
        record.server_ms = max(0.0, record.total_ms - record.debounce_ms - record.decode_ms)
        self._ledger.finish(record)
        if record.outcome in ANSWERED and self.settings is not None:
            self._status.answered(record, self.settings.syntax_check != "off")

    def stop(self, reason: str) -> None:
        """Stop this request's work before the decoder's next step; the first reason is kept."""
        if not self.stop_flag.is_set():
            self.reason = reason
            self.stop_flag.set()

    @property
    def stopped(self) -> bool:
        return self.stop_flag.is_set()

    # ------------------------------------------------------------------ stages, in the order they happen
    def describe(self, context: Context, settings: ServerSettings | None) -> None:
        """What the request completes, and with which settings (None: not validated yet)."""
        self.record.describe(context)
        self.settings = settings
        if self.per_document:  # debugStats' lastContext: the last cursor completed
            self._ledger.last_context = context

    def not_ready(self) -> None:
        """Answered empty: the models are not loaded."""
        self.record.outcome = "not_ready"

    async def debounce(self, ms: int) -> None:
        """Wait `ms` before decoding (automatic requests); a newer request meanwhile stops this one."""
        started = time.perf_counter()
        await asyncio.sleep(ms / 1000)
        self.record.debounce_ms = (time.perf_counter() - started) * 1000

    def ran(self, decoded: Decoded) -> Completion | None:
        """The job's queue time, stage timings and outcome into the record; its completion, None if stopped."""
        self.record.queue_ms = decoded.queued_ms
        completion = decoded.completion
        if completion is None or completion.outcome == "stopped":
            self.record.outcome = self.reason
            return None
        self.record.add(completion)
        self.record.outcome = completion.outcome
        return completion

    # ------------------------------------------------------------------ the model thread's news (JobWatcher)
    def decode_started(self) -> None:
        self._ledger.count("decodes_started")

    def job_ended(self, completion: Completion | None) -> None:
        """The job's end on the model thread, counted even when this request was cancelled meanwhile."""
        if completion is None or completion.outcome == "stopped":
            self._ledger.count("decodes_stopped")
        elif completion.outcome == "cache":
            self._ledger.count("cache_hits")
        elif completion.stats is not None:
            self._ledger.count("decodes_finished")

    def job_failed(self, error: BaseException) -> None:
        self._ledger.count("decodes_failed")
        log.error("completion failed (request %s)", self.id, exc_info=error)


class Scheduler:
    """The requests in flight, by document and by id, and the cancel hooks of commands' other work."""

    def __init__(self, ledger: Ledger, status: StatusBar) -> None:
        self._ledger, self._status = ledger, status
        self._by_document: dict[str, Request] = {}
        self._by_id: dict[Any, Request] = {}
        self._cancel_hooks: dict[Any, Callable[[], None]] = {}  # request id -> stop a training run

    @contextmanager
    def open(self, request_id: Any, method: str, uri: str, *, per_document: bool) -> Iterator[Request]:
        """The context a request runs in. per_document (a completion): it stops the document's older one."""
        with Request(request_id, method, uri, self._ledger, self._status, per_document=per_document) as request:
            if per_document:
                if (older := self._by_document.get(uri)) is not None:
                    older.stop("superseded")
                self._by_document[uri] = request
            if request_id is not None:
                self._by_id[request_id] = request
            try:
                yield request
            finally:
                if self._by_document.get(uri) is request:
                    del self._by_document[uri]
                self._by_id.pop(request_id, None)

    def cancel(self, request_id: Any) -> None:
        """$/cancelRequest for `request_id`: stop its decode before the next step, or its training run."""
        if (request := self._by_id.get(request_id)) is not None:
            request.stop("cancelled")
        if (hook := self._cancel_hooks.get(request_id)) is not None:
            hook()

    @contextmanager
    def cancel_hook(self, request_id: Any, hook: Callable[[], None]) -> Iterator[None]:
        """While this lasts, cancel(request_id) also calls `hook` (a command's work that is no decode)."""
        self._cancel_hooks[request_id] = hook
        try:
            yield
        finally:
            self._cancel_hooks.pop(request_id, None)

    @property
    def active(self) -> int:
        """Requests in flight that have an id."""
        return len(self._by_id)

    def stop_all(self, reason: str) -> None:
        for request in list(self._by_id.values()):
            request.stop(reason)
