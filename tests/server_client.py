"""End-to-end helpers: the real server (`python -m lsp_server`) in a subprocess, driven over stdio by
pytest-lsp's client announcing the capabilities VS Code sends (tests/editor_vscode_client_capabilities.json).

The client answers workspace/applyEdit by applying the edit to its own copy of the document, records
`codila/status` notifications, and can ask the server for `codila/debugStats`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

from lsprotocol import converters, types
from pytest_lsp.client import LanguageClient, make_test_lsp_client

ROOT = Path(__file__).resolve().parent.parent
VSCODE_CAPABILITIES = json.loads((Path(__file__).parent / "editor_vscode_client_capabilities.json").read_text())
_converter = converters.get_converter()


def tiny_settings(tiny_model_dirs: tuple[Path, Path], **overrides: Any) -> dict[str, Any]:
    """Settings for the tiny random models: CPU, short completions, no debounce unless asked for."""
    dlm, ar = tiny_model_dirs
    return {"dlmPath": str(dlm), "arPath": str(ar), "device": "cpu", "maxNewTokens": 8, "debounceMs": 0,
            "syntaxCheck": "off", **overrides}


class Client:
    """A started server and the client talking to it."""

    def __init__(self, lsp: LanguageClient) -> None:
        self.lsp = lsp
        self.statuses: list[dict[str, Any]] = []
        self.applied: list[types.ApplyWorkspaceEditParams] = []
        self.texts: dict[str, str] = {}
        self.versions: dict[str, int] = {}

    # documents ----------------------------------------------------------------------------------
    def open(self, uri: str, text: str, language_id: str = "python") -> None:
        self.texts[uri], self.versions[uri] = text, 1
        self.lsp.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id=language_id, version=1, text=text)))

    def type_text(self, uri: str, line: int, character: int, typed: str) -> None:
        """Insert `typed` at line:character (UTF-16) with an incremental didChange."""
        self.versions[uri] += 1
        at = types.Position(line=line, character=character)
        self.texts[uri] = _apply(self.texts[uri], types.Range(start=at, end=at), typed)
        self.lsp.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=self.versions[uri]),
            content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=at, end=at), text=typed)]))

    # requests -----------------------------------------------------------------------------------
    def inline_request(self, uri: str, line: int, character: int, invoked: bool = True):
        kind = types.InlineCompletionTriggerKind.Invoked if invoked else types.InlineCompletionTriggerKind.Automatic
        return self.lsp.protocol.send_request_async(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=line, character=character),
            context=types.InlineCompletionContext(trigger_kind=kind)))

    async def inline(self, uri: str, line: int, character: int, invoked: bool = True) -> types.InlineCompletionList:
        return await self.inline_request(uri, line, character, invoked)

    async def stats(self) -> dict[str, Any]:
        return _plain(await self.lsp.protocol.send_request_async("codila/debugStats", None))

    async def command(self, command: str, *arguments: Any) -> Any:
        return _plain(await self.lsp.workspace_execute_command_async(
            types.ExecuteCommandParams(command=command, arguments=list(arguments))))

    def configure(self, **settings: Any) -> None:
        self.lsp.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"codila": settings}))

    async def settle(self, **settings: Any) -> dict[str, Any]:
        """Change settings (didChangeConfiguration) and wait until the server uses them."""
        self.configure(**settings)
        return await self.wait_until(lambda s: all(s["settings"][k] == v for k, v in settings.items()))

    # waiting ------------------------------------------------------------------------------------
    async def wait_for_state(self, *states: str, after: int = 0, timeout: float = 120.0) -> dict[str, Any]:
        """The first codila/status at index >= `after` whose state is one of `states`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for status in self.statuses[after:]:
                if status["state"] in states:
                    return status
            await asyncio.sleep(0.05)
        raise TimeoutError(f"no status in {states} within {timeout} s; got {self.statuses[after:]}")

    async def wait_until(self, predicate, timeout: float = 60.0, interval: float = 0.1) -> dict[str, Any]:
        """Poll debugStats until predicate(stats) holds; returns those stats."""
        deadline = time.monotonic() + timeout
        while True:
            stats = await self.stats()
            if predicate(stats):
                return stats
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout} s: {stats}")
            await asyncio.sleep(interval)


@asynccontextmanager
async def running_server(settings: dict[str, Any] | None, *, workspace: Path | None = None,
                         env: dict[str, str] | None = None, wait_ready: bool = True,
                         capabilities: dict[str, Any] | None = None,
                         args: tuple[str, ...] = ("--threads", "1")) -> AsyncIterator[Client]:
    """Start `python -m lsp_server`, initialize it with `settings` as initializationOptions, yield a Client."""
    lsp = make_test_lsp_client()
    client = Client(lsp)

    @lsp.feature("codila/status")
    def on_status(params: Any) -> None:
        client.statuses.append(_plain(params))

    @lsp.feature(types.WORKSPACE_APPLY_EDIT)
    def on_apply_edit(params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        client.applied.append(params)
        for change in params.edit.document_changes or []:
            uri = change.text_document.uri
            for edit in change.edits:
                client.texts[uri] = _apply(client.texts[uri], edit.range, edit.new_text)
        return types.ApplyWorkspaceEditResult(applied=True)

    server_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    await lsp.start_io(sys.executable, "-m", "lsp_server", *args, env=server_env)
    folders = [types.WorkspaceFolder(uri=workspace.as_uri(), name=workspace.name)] if workspace else None
    try:
        await lsp.initialize_session(types.InitializeParams(
            capabilities=_converter.structure(capabilities or VSCODE_CAPABILITIES, types.ClientCapabilities),
            initialization_options=settings, workspace_folders=folders))
        if wait_ready:
            status = await client.wait_for_state("ready", "error")
            assert status["state"] == "ready", status
        yield client
    finally:
        try:
            if lsp._server.returncode is None:  # unless the test ended the session itself
                await asyncio.wait_for(lsp.shutdown_session(), 30)
        finally:
            await lsp.stop()


def advance(line: int, character: int, typed: str) -> tuple[int, int]:
    """The cursor after typing `typed` at line:character (UTF-16 columns)."""
    if "\n" in typed:
        return line + typed.count("\n"), utf16_len(typed.rsplit("\n", 1)[1])
    return line, character + utf16_len(typed)


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _apply(text: str, span: types.Range, new_text: str) -> str:
    """Apply one edit to `text`, positions in UTF-16 code units (what an editor does)."""
    lines = text.split("\n")

    def offset(position: types.Position) -> int:
        before = sum(len(line) + 1 for line in lines[: position.line])
        line = lines[position.line] if position.line < len(lines) else ""
        units, chars = 0, 0
        for ch in line:
            if units >= position.character:
                break
            units += 2 if ord(ch) > 0xFFFF else 1
            chars += 1
        return before + chars

    return text[: offset(span.start)] + new_text + text[offset(span.end):]


def _plain(value: Any) -> Any:
    """pygls hands custom payloads over as namedtuples: back to dicts and lists."""
    if hasattr(value, "_asdict"):
        return {k: _plain(v) for k, v in value._asdict().items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
