"""The server as VS Code sees it: started like the extension starts it (`python -m lsp_server`), initialized
with the exact ClientCapabilities the extension's pinned vscode-languageclient sends
(tests/editor_vscode_client_capabilities.json, checked against the library by the extension's unit tests) and
the initializationOptions the extension builds from package.json (every server setting; `null` where the
preset or the default model decides). VS Code itself is not run here.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
import pytest_asyncio
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

ROOT = Path(__file__).resolve().parent.parent
CAPABILITIES = Path(__file__).with_name("editor_vscode_client_capabilities.json")
PACKAGE_JSON = ROOT / "editors" / "vscode" / "package.json"
CLIENT_ONLY = {"pythonPath", "serverArgs", "serverEnv", "languages", "trace.server"}
READY_TIMEOUT_S = float(os.environ.get("CODILA_TEST_READY_S", "240"))  # model load on a busy CI machine

# One server for the module (the model loads once), on one event loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")


def extension_settings(**overrides) -> dict:
    """What the extension sends with nothing configured (package.json defaults), plus `overrides`."""
    properties = json.loads(PACKAGE_JSON.read_text())["contributes"]["configuration"]["properties"]
    settings = {name.removeprefix("codila."): schema["default"] for name, schema in properties.items()
                if name.removeprefix("codila.") not in CLIENT_ONLY}
    return {**settings, **overrides}


def test_settings(tiny_model_dirs) -> dict:
    # the tiny models always answer with text; the shipped default model may answer nothing (EOS collapse)
    dlm_dir, ar_dir = tiny_model_dirs
    return extension_settings(device="cpu", dtype="float32", maxNewTokens=12, syntaxCheck="off", debounceMs=0,
                              dlmPath=str(dlm_dir), arPath=str(ar_dir))


test_settings.__test__ = False  # a helper, not a test


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vscode(tiny_model_dirs, tmp_path_factory):
    """(client, initialize result, received codila/status params, received applyEdit params)."""
    config = ClientServerConfig(server_command=[sys.executable, "-m", "lsp_server", "--threads", "1"],
                                server_env={"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    client: LanguageClient = await config.start()
    statuses: list[dict] = []
    applied: list[types.ApplyWorkspaceEditParams] = []
    settings = test_settings(tiny_model_dirs)
    workspace = tmp_path_factory.mktemp("vscode_workspace")
    client.set_configuration(settings, section="codila")

    @client.feature("codila/status")
    def on_status(params):  # a custom notification: pygls hands over a namedtuple-like object
        statuses.append({key: getattr(params, key, None) for key in ("state", "message", "lastLatencyMs")})

    @client.feature(types.WORKSPACE_APPLY_EDIT)
    def on_apply_edit(params: types.ApplyWorkspaceEditParams):
        applied.append(params)
        return types.ApplyWorkspaceEditResult(applied=True)

    capabilities = client.protocol._converter.structure(json.loads(CAPABILITIES.read_text()),
                                                        types.ClientCapabilities)
    result = await client.initialize_session(types.InitializeParams(
        process_id=None, capabilities=capabilities, initialization_options=settings,
        root_uri=workspace.as_uri(), workspace_folders=[types.WorkspaceFolder(uri=workspace.as_uri(), name="w")]))
    try:
        yield client, result, statuses, applied
    finally:
        await client.shutdown_session()


async def wait_ready(statuses: list) -> None:
    async def ready():
        while not any(s["state"] == "ready" for s in statuses):
            assert not any(s["state"] == "error" for s in statuses), statuses
            await asyncio.sleep(0.05)
    await asyncio.wait_for(ready(), READY_TIMEOUT_S)


def open_document(client: LanguageClient, path: Path, text: str) -> str:
    uri = path.as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
    return uri


async def test_server_advertises_what_the_vscode_client_needs(vscode):
    client, result, _, _ = vscode
    caps = result.capabilities
    assert caps.inline_completion_provider, "vscode-languageclient registers inline completion only if advertised"
    assert caps.completion_provider is not None
    assert {"codila.infillSelection", "codila.trainOnWorkspace"} <= set(caps.execute_command_provider.commands)
    assert client.messages == [], "the extension's default settings must not produce a warning"


async def test_inline_completion_answers_at_the_cursor_once_ready(vscode, tmp_path):
    client, _, statuses, _ = vscode
    await wait_ready(statuses)
    text = "def add(a, b):\n    return \n\nprint(add(1, 2))\n"
    uri = open_document(client, tmp_path / "a.py", text)
    position = types.Position(line=1, character=len("    return "))
    answer = await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=position,
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
    items = answer.items if isinstance(answer, types.InlineCompletionList) else answer
    assert items, "a ready server answers an invoked inline completion"
    item = items[0]
    assert isinstance(item.insert_text, str) and item.insert_text
    if item.range is not None:  # VS Code replaces the range with insertText: it must start at or before the cursor
        assert (item.range.start.line, item.range.start.character) <= (position.line, position.character)
        assert item.range.end == position or item.range.end.line >= position.line
    latencies = [s["lastLatencyMs"] for s in statuses if s.get("lastLatencyMs") is not None]
    assert latencies, "the status bar shows the last completion's latency from codila/status"


async def test_infill_selection_command_edits_the_selected_range(vscode, tmp_path):
    client, _, statuses, applied = vscode
    await wait_ready(statuses)
    text = 'def greet(name):\n    s = "😀 " + name\n    return s\n'
    uri = open_document(client, tmp_path / "b.py", text)
    start = len('    s = "😀 " + '.encode("utf-16-le")) // 2  # UTF-16 columns, as VS Code sends them
    selection = {"start": {"line": 1, "character": start}, "end": {"line": 1, "character": start + 4}}
    await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="codila.infillSelection", arguments=[uri, selection]))
    (params,) = applied
    edits = edits_for(params.edit, uri)
    assert len(edits) == 1
    rng = edits[0].range
    assert (rng.start.line, rng.start.character, rng.end.line, rng.end.character) == (1, start, 1, start + 4)


def edits_for(edit: types.WorkspaceEdit, uri: str) -> list[types.TextEdit]:
    if edit.changes:
        return list(edit.changes[uri])
    return [e for change in edit.document_changes or [] if change.text_document.uri == uri for e in change.edits]
