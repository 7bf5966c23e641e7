"""The CoDiLA language server: thin LSP handlers. lsp_server.engine schedules the work, lsp_server.pipeline
is the completion itself (cache -> context window -> decoding.infill -> tidy -> verify).

    textDocument/inlineCompletion   multi-line ghost text from the text before and after the cursor
    textDocument/completion         the same completion as one item with a multi-line TextEdit
    codila.infillSelection          [uri, range]: regenerate the range, applied with workspace/applyEdit
    codila.trainOnWorkspace         [] | [{"blockSize", "maxSteps", "output"}] | [folderUri, ...]
    codila/debugStats (request)     threads, memory, counters, recent request timings
    codila/status (notification)    {"state", "message", "lastLatencyMs"} to the client
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from lsprotocol import converters, types
from pygls.exceptions import JsonRpcInternalError, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.workspace import TextDocument

from lsp_server import __version__
from lsp_server.engine import Engine, NotReady
from lsp_server.text import Context, context_for_range
from lsp_server.training_job import TrainingCancelled, TrainingFailed, parse_arguments
from lsp_server.ui import EditorUI

INFILL_COMMAND = "codila.infillSelection"
TRAIN_COMMAND = "codila.trainOnWorkspace"
_converter = converters.get_converter()
log = logging.getLogger("lsp_server.server")


class CodilaProtocol(LanguageServerProtocol):
    """pygls's protocol, plus: `$/cancelRequest` for a command (infill, training) stops the command's work.

    Why a private method is overridden (pygls 2.1.1, pinned in pyproject.toml): pygls has no public hook
    for `$/cancelRequest`. `_handle_notification` consumes the method before user features are looked up,
    so a `@server.feature("$/cancelRequest")` is never called, and `_handle_cancel_notification(msg_id)`
    cancels that request's future only. For the completion handlers (async features) that future is the
    handler's own task: they get asyncio.CancelledError and Engine.complete stops the decode - pygls's
    public behaviour, this override is not needed there. For `workspace/executeCommand` the future is
    pygls's generator wrapper: the command coroutine runs as another task under a random id and is never
    told, so the override hands the id to the engine, which stops the infill's decode or the training run.
    tests/test_server_units.py::test_pygls_cancellation_is_as_this_override_expects fails when an upgrade
    changes any of this (then use the public API it offers).
    """

    def _handle_cancel_notification(self, msg_id: Any) -> None:
        self._server.engine.cancel_request(msg_id)
        super()._handle_cancel_notification(msg_id)


class CodilaServer(LanguageServer):
    def __init__(self) -> None:
        # pygls's own pool only reads stdin here (no handler runs in a thread): two threads are plenty,
        # and the thread count stays bounded however many requests arrive
        super().__init__("codila-lsp", __version__, protocol_cls=CodilaProtocol, max_workers=2)
        self.ui = EditorUI(self)
        self.engine = Engine(self.ui)
        self.initial_options: Any = None
        self.shut_down = False
        self._background: set[asyncio.Task] = set()

    def document(self, uri: str) -> TextDocument:
        """An open document; an unknown URI is a client error with a clear message."""
        if uri not in self.workspace.text_documents:
            raise JsonRpcInvalidParams(message=f"{uri} is not open (send textDocument/didOpen first)")
        return self.workspace.get_text_document(uri)

    async def pull_settings(self) -> Any:
        """The "codila" section through workspace/configuration, when the client offers it."""
        workspace = self.client_capabilities.workspace
        if workspace is None or not workspace.configuration:
            return None
        params = types.ConfigurationParams(items=[types.ConfigurationItem(section="codila")])
        try:
            return (await self.workspace_configuration_async(params))[0]
        except Exception as err:  # the client could not answer: keep the settings we have
            log.warning("workspace/configuration failed: %s", err)
            return None

    async def apply(self, context: Context, new_text: str) -> bool:
        """Replace context.range with new_text through workspace/applyEdit (versioned when the client can)."""
        edit = types.TextEdit(range=context.range, new_text=new_text)
        changes = self.client_capabilities.workspace and self.client_capabilities.workspace.workspace_edit
        if changes is not None and changes.document_changes:
            document = types.OptionalVersionedTextDocumentIdentifier(uri=context.uri, version=context.version)
            workspace_edit = types.WorkspaceEdit(document_changes=[types.TextDocumentEdit(document, [edit])])
        else:
            workspace_edit = types.WorkspaceEdit(changes={context.uri: [edit]})
        params = types.ApplyWorkspaceEditParams(edit=workspace_edit, label="CoDiLA infill")
        return (await self.workspace_apply_edit_async(params)).applied

    def in_background(self, work: Any) -> None:
        """Run a coroutine without a request waiting for it; a failure is logged and shown."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task) -> None:
        self._background.discard(task)
        if not task.cancelled() and (err := task.exception()) is not None:
            log.error("background work failed", exc_info=err)
            self.ui.status("error", f"the server failed to start: {err}", None)
            self.ui.message("error", f"CoDiLA: the server failed to start: {err}")


server = CodilaServer()


@server.feature(types.INITIALIZE)
def initialize(ls: CodilaServer, params: types.InitializeParams) -> None:
    ls.ui.loop = asyncio.get_running_loop()
    ls.initial_options = params.initialization_options


@server.feature(types.INITIALIZED)
def initialized(ls: CodilaServer, params: types.InitializedParams) -> None:
    """Settings and models load in the background; requests meanwhile get empty answers."""
    ls.in_background(ls.engine.startup(ls.initial_options, ls.pull_settings))


@server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
async def did_change_configuration(ls: CodilaServer, params: types.DidChangeConfigurationParams) -> None:
    """{"settings": {"codila": {...}}} is applied; anything else means: pull the section."""
    section = params.settings.get("codila") if isinstance(params.settings, dict) else None
    await ls.engine.apply_settings(section if section is not None else await ls.pull_settings())


@server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
async def inline_completion(ls: CodilaServer, params: types.InlineCompletionParams) -> types.InlineCompletionList:
    """Ghost text at the cursor, from the text before and after it."""
    document = ls.document(params.text_document.uri)
    invoked = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
    answer = await ls.engine.complete(document, params.position, ls.protocol.msg_id, "inlineCompletion", invoked)
    if not answer.text:
        return types.InlineCompletionList(items=[])
    cursor = types.Range(start=answer.context.position, end=answer.context.position)
    return types.InlineCompletionList(items=[types.InlineCompletionItem(insert_text=answer.text, range=cursor)])


@server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(resolve_provider=False))
async def completion(ls: CodilaServer, params: types.CompletionParams) -> types.CompletionList:
    """The same completion for clients without inline completion: one item, one multi-line TextEdit."""
    document = ls.document(params.text_document.uri)
    invoked = params.context is None or params.context.trigger_kind == types.CompletionTriggerKind.Invoked
    answer = await ls.engine.complete(document, params.position, ls.protocol.msg_id, "completion", invoked)
    items = [completion_item(answer.text, answer.context)] if answer.text else []
    return types.CompletionList(is_incomplete=True, items=items)


@server.command(INFILL_COMMAND)
async def infill_selection(ls: CodilaServer, *args: Any) -> dict[str, Any]:
    """[uri, range]: regenerate the range from its prefix and suffix, with cancellable progress."""
    uri, span = _infill_arguments(args)
    context = context_for_range(ls.document(uri), span)
    try:
        async with ls.ui.progress("CoDiLA: infilling", cancellable=True) as progress:
            completion = await ls.engine.infill(context, ls.protocol.msg_id, progress)
    except NotReady as err:
        ls.ui.message("warning", f"CoDiLA: cannot infill: {err}")
        return {"applied": False, "reason": str(err)}
    if completion is None:
        return {"applied": False, "reason": "cancelled"}
    if ls.workspace.get_text_document(uri).version != context.version:
        return {"applied": False, "reason": "the document changed while infilling", "text": completion.text}
    return {"applied": await ls.apply(context, completion.text), "text": completion.text, "verify": completion.verify}


@server.command(TRAIN_COMMAND)
async def train_on_workspace(ls: CodilaServer, *args: Any) -> dict[str, Any]:
    """Fine-tune the AR on the workspace's source files, then use it without a restart."""
    try:
        options = parse_arguments(list(args), [f.uri for f in ls.workspace.folders.values()])
    except ValueError as err:
        raise JsonRpcInvalidParams(message=f"{TRAIN_COMMAND}: {err}") from None
    try:
        async with ls.ui.progress("CoDiLA: training on the workspace", cancellable=True) as progress:
            output = await ls.engine.train(options, progress, ls.protocol.msg_id)
    except TrainingCancelled:
        return {"cancelled": True}
    except (TrainingFailed, RuntimeError) as err:
        ls.ui.message("error", f"CoDiLA: training failed: {err}")
        raise JsonRpcInternalError(message=str(err)) from None
    ls.ui.message("info", f"CoDiLA: now completing with the AR trained on this workspace ({output}). "
                          "Set codila.arPath to that folder to keep it after a restart.")
    return {"output": output}


@server.feature("codila/debugStats")
def debug_stats(ls: CodilaServer, params: Any) -> dict[str, Any]:
    """Threads, memory, counters (decodes started, cache hits, ...) and the recent request records."""
    return ls.engine.stats()


@server.feature(types.SHUTDOWN)
def shutdown(ls: CodilaServer, params: Any) -> None:
    ls.engine.close()
    ls.shut_down = True


@server.feature(types.EXIT)
def exit_now(ls: CodilaServer, params: Any) -> None:
    """Leave at once, without the interpreter's teardown: with torch loaded that takes over a second on a busy
    machine, and vscode-languageclient kills a server still running 2 s after `exit` and logs it as an error
    (every restart did). The shutdown answer is already sent and the engine stopped its work then."""
    logging.shutdown()
    os._exit(0 if ls.shut_down else 1)  # the specification's exit codes; pygls's own handler does the same


def completion_item(text: str, context: Context) -> types.CompletionItem:
    """One item whose TextEdit inserts the whole (multi-line) completion at the cursor."""
    first = text.strip().split("\n", 1)[0]
    label = first[:60] + ("…" if len(first) > 60 or "\n" in text.strip() else "")
    fence = f"```{context.language_id or ''}\n{text}\n```"
    return types.CompletionItem(
        label=label or "(whitespace)",
        kind=types.CompletionItemKind.Snippet,
        detail="CoDiLA",
        documentation=types.MarkupContent(kind=types.MarkupKind.Markdown, value=fence),
        text_edit=types.TextEdit(range=types.Range(start=context.position, end=context.position), new_text=text),
        insert_text_format=types.InsertTextFormat.PlainText,
        sort_text="0",
        preselect=True,
    )


def _infill_arguments(args: tuple[Any, ...]) -> tuple[str, types.Range]:
    try:
        uri, span = args
        if not isinstance(uri, str):
            raise TypeError("the first argument must be a document URI")
        return uri, _converter.structure(span, types.Range)
    except Exception as err:
        raise JsonRpcInvalidParams(message=f"{INFILL_COMMAND} takes [uri, range]: {err}") from None
