"""End-to-end latency of the language server: inline completions over stdio, as an editor sees them.

    python -m benchmarks.server_latency                                  # the default model, default settings
    python -m benchmarks.server_latency --tiny --threads 1 --max-new-tokens 16 --context-tokens 256
                                                                         # tiny random models (plumbing only)
    python -m benchmarks.server_latency --dlm DLM --ar AR --preset fast --threads 1 --json out.json
    python -m benchmarks.server_latency --scope 10 --mode dynamic     # any editor setting, as a flag

Every editor setting of the server is a flag here (--preset, --max-new-tokens, --context-tokens,
--syntax-check, --kv-cache, ...: the rows of lsp_server.settings.SETTINGS, read and checked as the server
reads them) and is sent as initializationOptions; a setting left out is the server's default.

Starts `python -m lsp_server`, opens a real source file of this repository and, at different cursors (mid-line
inside function bodies), plays a user typing: the rest of the cursor's line is deleted (the code being
written), one inline completion is asked for there (cold: a fresh cursor, invoked, so no debounce), then the
next character of the deleted code is typed and a completion asked for again (warm: the same document a
keystroke later; answered from the suggestion when the user typed through it, else decoded with the
prompt's cached keys and values reused). The server answers each with lsp_server.pipeline.complete, the
function the benchmark harness runs for `preset:` decoders. Reports, for cold and warm requests, p50/p95 of
- end-to-end latency: request sent -> answer received, measured by the client;
- server overhead: everything inside the server except the decoder call (queue, UTF-16 conversion, window,
  tidy, syntax check, logging), from the server's own per-request records (codila/debugStats);
- transport: end-to-end minus the server's own total (JSON-RPC encoding, pipes);
- the decoder's share: DLM, AR and verify milliseconds, forward passes and tokens per step.
The first request (warm-up) is not counted. Also the server process's resident memory (now and peak, Linux)
with the model loaded, after the requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.client import LanguageClient

from decoding.arguments import add_setting_argument
from lsp_server.settings import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILE = ROOT / "verify" / "insertion.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # models
    p.add_argument("--dlm", default=None, help="DLM folder (default: the shipped default model)")
    p.add_argument("--ar", default=None, help="AR folder (default: the shipped default model)")
    p.add_argument("--tiny", action="store_true", help="build and use the tiny random test models instead")
    # editor settings sent as initializationOptions; unset = the server's default
    editor = p.add_argument_group("editor settings (sent as initializationOptions; unset = the server's default)")
    for setting in SETTINGS:
        if setting.name not in ("dlm_path", "ar_path", "log_level"):
            add_setting_argument(editor, setting)
    p.add_argument("--threads", type=int, default=0, help="server --threads (0 = torch's default)")
    # workload
    p.add_argument("--file", type=Path, default=DEFAULT_FILE, help="source file to complete in")
    p.add_argument("--requests", type=int, default=40, help="timed requests (after one warm-up)")
    p.add_argument("--seed", type=int, default=0, help="seeds the choice of cursors")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument("--server-log", type=Path, default=Path(tempfile.gettempdir()) / "codila-server-latency.log",
                   help="the server's log (its per-request JSON lines) and stderr go here")
    return p.parse_args(argv)


def cursors(text: str, count: int, seed: int) -> list[types.Position]:
    """Mid-line cursors in indented code lines (inside bodies): after the indentation and half the code,
    the shape editors and the training data have (the rest of the line is the middle to fill).
    Distinct lines, in a seeded random order."""
    lines = text.split("\n")
    candidates = []
    for i, line in enumerate(lines):
        code = line.strip()
        if line.startswith("    ") and len(code) >= 8 and not code.startswith(("#", '"', "'")):
            column = len(line) - len(line.lstrip()) + len(code) // 2
            candidates.append(types.Position(line=i, character=len(line[:column].encode("utf-16-le")) // 2))
    random.Random(seed).shuffle(candidates)
    if len(candidates) < count:
        raise SystemExit(f"{len(candidates)} cursors in the file, {count} asked for")
    return candidates[:count]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(values, 50), 2), "p95": round(percentile(values, 95), 2),
            "mean": round(statistics.fmean(values), 2)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings: dict[str, Any] = {"dlmPath": args.dlm, "arPath": args.ar}
    settings.update({s.editor_name: getattr(args, s.name) for s in SETTINGS if hasattr(args, s.name)})
    client = LanguageClient("server-latency", "1")
    statuses: list[Any] = []
    client.feature("codila/status")(lambda params: statuses.append(params))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    await client.start_io(sys.executable, "-m", "lsp_server", "--threads", str(args.threads),
                          "--log-file", str(args.server_log), env=env)
    # pygls pipes the server's stderr: keep reading it, or the server blocks once the pipe is full
    drain = asyncio.create_task(_drain(client._server.stderr, args.server_log))
    try:
        await client.initialize_async(types.InitializeParams(
            capabilities=types.ClientCapabilities(window=types.WindowClientCapabilities(work_done_progress=False)),
            initialization_options=settings))
        client.initialized(types.InitializedParams())
        while not statuses or statuses[-1].state not in ("ready", "error"):
            await asyncio.sleep(0.05)
        if statuses[-1].state == "error":
            raise SystemExit(f"the server could not load the models: {statuses[-1].message}")
        text = args.file.read_text()
        uri = args.file.resolve().as_uri()
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)))
        version = 1

        async def ask(position: types.Position, msg_id: str) -> tuple[float, Any]:
            started = time.perf_counter()
            answer = await client.protocol.send_request_async(
                types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionParams(
                    text_document=types.TextDocumentIdentifier(uri=uri), position=position,
                    context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)),
                msg_id=msg_id)
            return (time.perf_counter() - started) * 1000, answer

        def edit(new_text: str) -> None:
            nonlocal version
            version += 1
            client.text_document_did_change(types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                content_changes=[types.TextDocumentContentChangeWholeDocument(text=new_text)]))

        lines = text.split("\n")
        end_to_end, ids, warm_ms, warm_ids, typed_through = [], [], [], [], 0
        for i, position in enumerate(cursors(text, args.requests + 1, args.seed)):
            line = lines[position.line]
            column = len(line.encode("utf-16-le")[: 2 * position.character].decode("utf-16-le"))
            written = lines[:position.line] + [line[:column]] + lines[position.line + 1:]
            edit("\n".join(written))  # the user is writing this line: its rest is not there yet
            ms, answer = await ask(position, f"bench-{i}")
            typed = lines[:position.line] + [line[:column + 1]] + lines[position.line + 1:]
            edit("\n".join(typed))  # one more character of the line
            after = types.Position(line=position.line, character=len(line[:column + 1].encode("utf-16-le")) // 2)
            warm, _ = await ask(after, f"warm-{i}")
            if i > 0:  # the first cursor warms up
                end_to_end.append(ms)
                ids.append(f"bench-{i}")
                warm_ms.append(warm)
                warm_ids.append(f"warm-{i}")
                items = getattr(answer, "items", answer) or []
                typed_through += bool(items) and items[0].insert_text.startswith(line[column:column + 1])
        edit(text)
        stats = _plain(await client.protocol.send_request_async("codila/debugStats", None))
        memory = server_memory_mb(client._server.pid)
    finally:
        try:
            await asyncio.wait_for(client.shutdown_async(None), 30)
            client.exit(None)
        finally:
            await client.stop()
            drain.cancel()

    records = {r["request"]: r for r in stats["recent"]}
    timed = [records[i] for i in ids]
    warm_records = [records[i] for i in warm_ids]
    transport = [e - r["totalMs"] for e, r in zip(end_to_end, timed)]
    return {
        "warm": {"end_to_end_ms": summary(warm_ms), "typed_through": typed_through,
                 "outcomes": {o: sum(r["outcome"] == o for r in warm_records)
                              for o in sorted({r["outcome"] for r in warm_records})},
                 "decode_ms": summary([r["decodeMs"] for r in warm_records])},
        "models": {"dlm": args.dlm or "default", "ar": args.ar or "default", "tiny": args.tiny},
        "settings": stats["settings"],
        "threads": args.threads,
        "requests": len(timed),
        "outcomes": {o: sum(r["outcome"] == o for r in timed) for o in sorted({r["outcome"] for r in timed})},
        "end_to_end_ms": summary(end_to_end),
        "server_overhead_ms": summary([r["serverMs"] for r in timed]),
        "server_overhead_excl_verify_ms": summary([r["serverMs"] - r["verifyMs"] for r in timed]),
        "transport_ms": summary(transport),
        "decode_ms": summary([r["decodeMs"] for r in timed]),
        "dlm_ms": summary([r["dlmMs"] for r in timed]),
        "ar_ms": summary([r["arMs"] for r in timed]),
        "tidy_ms": summary([r["tidyMs"] for r in timed]),
        "verify_ms": summary([r["verifyMs"] for r in timed]),
        "queue_ms": summary([r["queueMs"] for r in timed]),
        "forwards": summary([r["forwards"] for r in timed]),
        "tokens": summary([r["tokens"] for r in timed]),
        "tokens_per_step": summary([r["tokensPerStep"] for r in timed]),
        "server_memory_mb": memory,
    }


def server_memory_mb(pid: int) -> dict[str, float] | None:
    """The server process's resident memory now and at its peak (Linux /proc; None elsewhere), in MB."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if ":" in line)
        return {"rss": int(fields["VmRSS"].split()[0]) / 1024, "peak": int(fields["VmHWM"].split()[0]) / 1024}
    except (OSError, KeyError, ValueError):
        return None


async def _drain(stream: asyncio.StreamReader, log_file: Path) -> None:
    with log_file.open("ab") as out:
        while chunk := await stream.read(65536):
            out.write(chunk)


def _plain(value: Any) -> Any:
    if hasattr(value, "_asdict"):
        return {k: _plain(v) for k, v in value._asdict().items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            from training.tiny_models import build_tiny_models

            dlm, ar = build_tiny_models(Path(tmp))
            args.dlm, args.ar = str(dlm), str(ar)
        result = asyncio.run(run(args))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
