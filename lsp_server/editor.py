"""The engine's side of the editor: what it needs from it (Editor, Progress: lsp_server.ui implements them
over LSP), and the status bar it keeps there.

    StatusBar   the `codila/status` line: the models' state, "training" over it while a run goes on, the
                last answered request's latency and its note
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Protocol

from lsp_server.records import Ledger, Record, status_note

log = logging.getLogger("lsp_server.editor")


class Editor(Protocol):
    """What the engine needs from the editor (lsp_server.ui implements it with LSP messages)."""

    def status(self, state: str, message: str, last_latency_ms: float | None) -> None: ...

    def message(self, level: str, text: str) -> None: ...

    def progress(self, title: str, cancellable: bool) -> "Progress": ...


class Progress(Protocol):
    """Work-done progress; `report` may be called from any thread."""

    async def __aenter__(self) -> "Progress": ...

    async def __aexit__(self, *exc: Any) -> None: ...

    def report(self, message: str, percentage: int | None = None) -> None: ...

    def on_cancel(self, callback: Callable[[], None]) -> None: ...


class StatusBar:
    """The status line the editor shows: the models' state (loading | ready | error), shown as "training"
    while a training run goes on, with a message and the last answered request's latency."""

    def __init__(self, editor: Editor, ledger: Ledger) -> None:
        self.editor = editor
        self.ledger = ledger
        self.state = "loading"
        self.training = False
        self._unverified_languages: set[str] = set()

    def show(self, message: str, state: str | None = None) -> None:
        """`message`, with the models' new `state` (None: the state stays)."""
        if state is not None:
            self.state = state
        self.editor.status("training" if self.training else self.state, message, self.ledger.last_latency_ms)

    def answered(self, record: Record, syntax_checked: bool) -> None:
        """The note after an answered request (`syntax_checked`: the syntaxCheck setting is not off)."""
        if syntax_checked and record.verify == "unverified" and record.language not in self._unverified_languages:
            self._unverified_languages.add(record.language)
            log.info("syntax check unavailable for %s: completions pass unverified", record.doc)
        self.show(status_note(record, syntax_checked))
