"""End-to-end, one fresh server per test: startup, model (re)loading and its failures, the trainer command,
the TCP transport."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcRequestCancelled

from tests.server_client import ROOT, running_server, tiny_settings

CODE = "def add(a, b):\n    return \n\nprint(add(1, 2))\n"


async def test_requests_before_the_models_are_ready_get_empty_answers_at_once(tiny_model_dirs):
    async with running_server(tiny_settings(tiny_model_dirs), wait_ready=False) as client:
        client.open("file:///w/early.py", CODE)
        started = time.monotonic()
        early = await client.inline("file:///w/early.py", 1, 11)
        waited = time.monotonic() - started
        assert not any(s["state"] == "ready" for s in client.statuses)  # answered while still loading
        assert list(early.items) == [] and waited < 2.0
        assert client.statuses and client.statuses[0]["state"] == "loading"

        await client.wait_for_state("ready")
        stats = await client.stats()
        assert [r["outcome"] for r in stats["recent"]] == ["not_ready"]
        assert len((await client.inline("file:///w/early.py", 1, 11)).items) == 1


async def test_a_failed_load_is_shown_and_a_settings_change_reloads_without_restart(tiny_model_dirs, tmp_path):
    missing = str(tmp_path / "no-such-model")
    async with running_server(tiny_settings(tiny_model_dirs, dlmPath=missing), wait_ready=False) as client:
        await client.wait_for_state("error")
        for _ in range(50):
            if client.lsp.messages:
                break
            await asyncio.sleep(0.05)
        assert client.lsp.messages[-1].type == types.MessageType.Error
        assert "no-such-model" in client.lsp.messages[-1].message
        client.open("file:///w/a.py", CODE)
        assert list((await client.inline("file:///w/a.py", 1, 11)).items) == []  # still serving, empty

        seen = len(client.statuses)
        client.configure(dlmPath=str(tiny_model_dirs[0]))
        await client.wait_for_state("ready", after=seen)
        assert len((await client.inline("file:///w/a.py", 1, 11)).items) == 1
        assert (await client.stats())["loads"] == 1


async def test_settings_are_pulled_through_workspace_configuration(tiny_model_dirs):
    async with running_server(tiny_settings(tiny_model_dirs)) as client:
        client.lsp.set_configuration({"preset": "accurate", "maxNewTokens": 4}, section="codila")
        client.lsp.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
        stats = await client.wait_until(lambda s: s["settings"]["preset"] == "accurate")
        assert stats["settings"]["maxNewTokens"] == 4 and stats["decodeConfig"]["block_size"] == 2
        assert stats["loads"] == 1  # decoding knobs do not reload the models


@pytest.mark.slow
async def test_training_on_the_workspace_switches_to_the_new_ar(tiny_model_dirs, tmp_path):
    workspace = tmp_path / "project"
    workspace.mkdir()
    for name in ("geometry.py", "strings.py"):
        (workspace / name).write_text((ROOT / "verify" / "syntax.py").read_text())
    cache = tmp_path / "cache"
    async with running_server(tiny_settings(tiny_model_dirs), workspace=workspace,
                              env={"XDG_CACHE_HOME": str(cache)}) as client:
        tokens_before = set(client.lsp.progress_reports)
        answer = await asyncio.wait_for(client.command("codila.trainOnWorkspace", {"blockSize": 4, "maxSteps": 1}), 240)

        output = Path(answer["output"])
        assert output.parent == cache / "codila-lsp" / "trained" and (output / "model.safetensors").exists()
        assert any(s["state"] == "training" and "loss" in s["message"] for s in client.statuses)
        token = next(t for t in client.lsp.progress_reports if t not in tokens_before
                     and client.lsp.progress_reports[t][0].title.startswith("CoDiLA: training"))
        reports = [v for v in client.lsp.progress_reports[token] if type(v).__name__ == "WorkDoneProgressReport"]
        assert any("loss" in r.message and "ETA" in r.message for r in reports)
        stats = await client.wait_until(lambda s: s["state"] == "ready" and s["loads"] == 2)
        assert stats["trainedAr"] == str(output)
        assert "now completing with the AR trained" in client.lsp.messages[-1].message
        client.open("file:///w/a.py", CODE)
        assert len((await client.inline("file:///w/a.py", 1, 11)).items) == 1


async def test_cancelling_training_stops_the_subprocess(tiny_model_dirs, tmp_path):
    workspace = tmp_path / "project"
    workspace.mkdir()
    (workspace / "a.py").write_text(CODE * 50)
    async with running_server(tiny_settings(tiny_model_dirs), workspace=workspace,
                              env={"XDG_CACHE_HOME": str(tmp_path / "cache")}) as client:
        pending = asyncio.ensure_future(client.lsp.protocol.send_request_async(
            types.WORKSPACE_EXECUTE_COMMAND,
            types.ExecuteCommandParams(command="codila.trainOnWorkspace", arguments=[{"maxSteps": 100000}]),
            msg_id="train-1"))
        await client.wait_until(lambda s: s["training"], interval=0.05)
        client.lsp.protocol.notify("$/cancelRequest", types.CancelParams(id="train-1"))
        with pytest.raises(JsonRpcRequestCancelled):
            await asyncio.wait_for(pending, 5)
        stats = await client.wait_until(lambda s: not s["training"], timeout=15)
        assert stats["trainedAr"] is None and stats["loads"] == 1
        assert client.statuses[-1]["state"] == "ready"


async def test_exit_ends_the_process_well_before_the_clients_kill_deadline(tiny_model_dirs):
    # vscode-languageclient kills a server still running 2 s after `exit` and logs an error: on every restart,
    # when unloading torch took that long on a busy machine.
    async with running_server(tiny_settings(tiny_model_dirs)) as client:
        process = client.lsp._server
        await client.lsp.shutdown_async(None)
        started = time.monotonic()
        client.lsp.exit(None)
        code = await asyncio.wait_for(process.wait(), 30)
        assert (code, time.monotonic() - started < 0.5) == (0, True)


async def test_tcp_transport_binds_to_loopback(tiny_model_dirs):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "lsp_server", "--tcp", "--port", str(port),
                                                   env=env, stderr=asyncio.subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                await asyncio.sleep(0.1)
        else:
            pytest.fail("the server did not listen")
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                           "params": {"processId": None, "rootUri": None, "capabilities": {}}}).encode()
        writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        header = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = int(header.split(b"Content-Length:")[1].split(b"\r\n")[0])
        reply = json.loads(await reader.readexactly(length))
        capabilities = reply["result"]["capabilities"]
        assert "inlineCompletionProvider" in capabilities and "completionProvider" in capabilities
        assert capabilities["executeCommandProvider"]["commands"] == ["codila.infillSelection", "codila.trainOnWorkspace"]
        writer.close()
        listening = [line for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                     if line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A"]
        assert listening and all(line.split()[1].startswith("0100007F") for line in listening)
    finally:
        process.terminate()
        await process.wait()


def test_the_stdio_server_says_on_stderr_that_it_waits_for_an_editor():
    """Started in a terminal, the server would otherwise seem to hang: one line on stderr says what it is doing,
    stdout (the JSON-RPC stream) stays empty, and the end of its input stops it."""
    import subprocess

    from lsp_server.__main__ import STDIO_BANNER

    result = subprocess.run([sys.executable, "-m", "lsp_server"], cwd=ROOT, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == ""
    first = result.stderr.splitlines()[0]
    assert first.endswith(STDIO_BANNER) and " INFO " in first  # a log record: editors read stderr by level
