"""What the user sees besides completions: the `codila/status` notification, messages, work-done progress.

    codila/status  {"state": "loading" | "ready" | "error" | "training", "message": str, "lastLatencyMs": n | null}

Everything here may be called from the model worker thread: sends are handed to the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, Callable

from lsprotocol import types
from pygls.lsp.server import LanguageServer

log = logging.getLogger("lsp_server.ui")

STATUS_NOTIFICATION = "codila/status"
_MESSAGE_TYPES = {"error": types.MessageType.Error, "warning": types.MessageType.Warning,
                  "info": types.MessageType.Info}


class EditorUI:
    """lsp_server.editor.Editor over LSP."""

    def __init__(self, server: LanguageServer) -> None:
        self.server = server
        self.loop: asyncio.AbstractEventLoop | None = None  # set when the server starts serving

    def status(self, state: str, message: str, last_latency_ms: float | None) -> None:
        params = {"state": state, "message": message,
                  "lastLatencyMs": None if last_latency_ms is None else round(last_latency_ms, 1)}
        self._send(lambda: self.server.protocol.notify(STATUS_NOTIFICATION, params))

    def message(self, level: str, text: str) -> None:
        params = types.ShowMessageParams(type=_MESSAGE_TYPES[level], message=text)
        self._send(lambda: self.server.window_show_message(params))

    def progress(self, title: str, cancellable: bool) -> "WorkDoneProgress":
        return WorkDoneProgress(self, title, cancellable)

    def _send(self, send: Callable[[], None]) -> None:
        if self.loop is None or _on_loop(self.loop):
            send()
        else:
            self.loop.call_soon_threadsafe(send)


class WorkDoneProgress:
    """Server-initiated work-done progress (window/workDoneProgress/create); silent for clients without it."""

    def __init__(self, ui: EditorUI, title: str, cancellable: bool) -> None:
        self.ui = ui
        self.title = title
        self.cancellable = cancellable
        self.token: str | None = None
        self._callbacks: list[Callable[[], None]] = []
        self._cancelled = False

    async def __aenter__(self) -> "WorkDoneProgress":
        server = self.ui.server
        window = server.client_capabilities.window
        if window is None or not window.work_done_progress:
            return self
        token = f"codila-{uuid.uuid4()}"
        try:
            await server.work_done_progress.create_async(token)
        except Exception as err:  # the client refused: carry on without a progress bar
            log.info("window/workDoneProgress/create refused: %s", err)
            return self
        self.token = token
        # the cancellable work (infill, training) reports percentages; loading shows an endless bar
        server.work_done_progress.begin(token, types.WorkDoneProgressBegin(
            title=self.title, cancellable=self.cancellable, percentage=0 if self.cancellable else None))
        server.work_done_progress.tokens[token].add_done_callback(lambda _future: self._cancel())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.token is not None:
            message = "cancelled" if self._cancelled else ("failed" if exc[0] is not None else "done")
            self.ui.server.work_done_progress.end(self.token, types.WorkDoneProgressEnd(message=message))
            self.ui.server.work_done_progress.tokens.pop(self.token, None)

    def report(self, message: str, percentage: int | None = None) -> None:
        if self.token is None:
            return
        value = types.WorkDoneProgressReport(message=message, percentage=percentage)
        token = self.token
        self.ui._send(lambda: self.ui.server.work_done_progress.report(token, value))

    def on_cancel(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)
        if self._cancelled:
            callback()

    def _cancel(self) -> None:  # window/workDoneProgress/cancel from the client
        self._cancelled = True
        for callback in self._callbacks:
            callback()


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
