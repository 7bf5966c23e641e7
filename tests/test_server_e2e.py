"""End-to-end: one real server (`python -m lsp_server --threads 1`, tiny random models) shared by this module,
driven over stdio by pytest-lsp's client with VS Code's capabilities. Tests that change settings put them back.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import pytest_asyncio
from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams, JsonRpcRequestCancelled

from tests.server_client import advance, running_server, tiny_settings, utf16_len

pytestmark = pytest.mark.asyncio(loop_scope="module")

CODE = "def add(a, b):\n    return \n\nprint(add(1, 2))\n"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(tiny_model_dirs):
    async with running_server(tiny_settings(tiny_model_dirs)) as started:
        yield started


def record_of(stats: dict, request_id: str) -> dict:
    matches = [r for r in stats["recent"] if r["request"] == request_id]
    assert len(matches) == 1, (request_id, stats["recent"][-5:])
    return matches[0]


async def test_inline_completion_is_ghost_text_at_the_cursor(client):
    client.open("file:///w/inline.py", CODE)
    before = await client.stats()
    result = await client.inline("file:///w/inline.py", 1, 11)

    assert len(result.items) == 1
    item = result.items[0]
    assert item.insert_text
    assert item.range == types.Range(start=types.Position(line=1, character=11), end=types.Position(line=1, character=11))
    stats = await client.stats()
    assert stats["decodesStarted"] == before["decodesStarted"] + 1
    assert stats["lastContext"]["prefixTail"].endswith("def add(a, b):\n    return ")
    assert stats["lastContext"]["suffixHead"].startswith("\n\nprint(add(1, 2))")
    record = stats["recent"][-1]
    assert record["outcome"] == "ok" and record["method"] == "inlineCompletion"
    assert record["forwards"] >= 1 and record["tokens"] >= 1 and record["decodeMs"] > 0
    assert record["totalMs"] >= record["decodeMs"]
    # the status bar gets the latency of the last completion
    assert client.statuses[-1]["state"] == "ready"
    assert client.statuses[-1]["lastLatencyMs"] == pytest.approx(record["totalMs"], abs=0.2)


async def test_completion_gives_the_same_text_as_one_text_edit(client):
    client.open("file:///w/completion.py", "import os\n\nfor name in os.listdir('.'):\n    \n")
    inline = await client.inline("file:///w/completion.py", 3, 4)
    result = await client.lsp.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri="file:///w/completion.py"),
        position=types.Position(line=3, character=4),
        context=types.CompletionContext(trigger_kind=types.CompletionTriggerKind.Invoked)))

    assert len(result.items) == 1
    edit = result.items[0].text_edit
    assert edit.new_text == inline.items[0].insert_text
    assert edit.range == types.Range(start=types.Position(line=3, character=4), end=types.Position(line=3, character=4))
    assert result.items[0].insert_text_format == types.InsertTextFormat.PlainText


async def test_typing_through_a_suggestion_is_answered_from_the_cache(client):
    uri = "file:///w/cache.py"
    client.open(uri, CODE)
    first = (await client.inline(uri, 1, 11)).items[0].insert_text
    assert len(first) >= 2
    before = await client.stats()

    typed = first[0]
    client.type_text(uri, 1, 11, typed)
    line, character = advance(1, 11, typed)
    rest = await client.inline(uri, line, character)

    assert [i.insert_text for i in rest.items] == [first[1:]]
    after = await client.stats()
    assert after["decodesStarted"] == before["decodesStarted"]  # no decode
    assert after["cacheHits"] == before["cacheHits"] + 1
    # text after the cursor changed: the cache must not answer
    client.type_text(uri, 3, 0, "x = 1\n")
    await client.inline(uri, line, character)
    assert (await client.stats())["decodesStarted"] == before["decodesStarted"] + 1


async def test_utf16_positions_with_emoji_and_cjk(client):
    uri = "file:///w/unicode.py"
    line = 's = "😀中文" + x  # 😀 done'
    client.open(uri, f"{line}\nprint(s)\n")
    after_cjk = utf16_len('s = "😀中')  # 8 UTF-16 units, 7 code points

    result = await client.inline(uri, 0, after_cjk)
    context = (await client.stats())["lastContext"]
    assert context["prefixTail"].endswith('s = "😀中')
    assert context["suffixHead"].startswith('文" + x  # 😀 done\nprint(s)')
    for item in result.items:
        assert item.range.start == types.Position(line=0, character=after_cjk) == item.range.end

    # a character past the end of the line means the end of the line (LSP), in UTF-16 units
    result = await client.inline(uri, 0, 500)
    context = (await client.stats())["lastContext"]
    assert context["prefixTail"].endswith("# 😀 done") and context["suffixHead"].startswith("\nprint(s)")
    assert context["character"] == utf16_len(line)
    for item in result.items:
        assert item.range.start.character == utf16_len(line)

    # infill a selection that starts after an emoji and covers CJK: the edit lands exactly there
    start, end = utf16_len('s = "😀'), utf16_len('s = "😀中文')
    span = {"start": {"line": 0, "character": start}, "end": {"line": 0, "character": end}}
    answer = await client.command("codila.infillSelection", uri, span)
    assert answer["applied"] is True
    edit = client.applied[-1].edit.document_changes[0].edits[0]
    assert (edit.range.start.character, edit.range.end.character) == (start, end)
    assert client.texts[uri] == f's = "😀{answer["text"]}" + x  # 😀 done\nprint(s)\n'


async def test_infill_selection_applies_a_versioned_edit_with_progress(client):
    uri = "file:///w/infill.py"
    client.open(uri, "def area(r):\n    return 3.14 * r * r\n\nprint(area(2))\n")
    client.type_text(uri, 3, 0, "# two\n")  # version 2
    span = {"start": {"line": 1, "character": 11}, "end": {"line": 1, "character": 23}}
    tokens_before = set(client.lsp.progress_reports)

    answer = await client.command("codila.infillSelection", uri, span)

    assert answer["applied"] is True and isinstance(answer["text"], str)
    params = client.applied[-1]
    change = params.edit.document_changes[0]
    assert change.text_document.uri == uri and change.text_document.version == 2
    assert client.texts[uri] == f"def area(r):\n    return {answer['text']}\n\n# two\nprint(area(2))\n"
    new = [t for t in client.lsp.progress_reports if t not in tokens_before]
    assert len(new) == 1
    kinds = [type(v).__name__ for v in client.lsp.progress_reports[new[0]]]
    assert kinds[0] == "WorkDoneProgressBegin" and kinds[-1] == "WorkDoneProgressEnd"
    assert "WorkDoneProgressReport" in kinds  # tokens decoded so far


async def test_bad_settings_are_refused_by_name_and_the_old_value_stays(client):
    messages = len(client.lsp.messages)
    client.configure(blockSize=99, preset="turbo", topP=0)
    await client.wait_until(lambda s: True)  # the notification is processed before the next request
    for _ in range(50):
        if len(client.lsp.messages) > messages:
            break
        await asyncio.sleep(0.05)
    shown = client.lsp.messages[messages:]
    assert len(shown) == 1 and shown[0].type == types.MessageType.Warning
    for name in ("blockSize", "preset", "topP"):
        assert name in shown[0].message
    stats = await client.stats()
    assert stats["settings"]["blockSize"] is None and stats["settings"]["preset"] == "balanced"
    assert stats["settings"]["topP"] == 1.0

    # valid ones apply, explicit knobs override the preset, the latency budget reaches the decoder
    stats = await client.settle(preset="fast", blockSize=2, latencyBudgetMs=250)
    assert stats["decodeConfig"]["block_size"] == 2  # explicit, over fast's 8
    assert stats["decodeConfig"]["mode"] == "dynamic"  # from the fast preset
    assert stats["decodeConfig"]["tau"] is None  # no preset names one: the AR's own codila_tau applies
    assert stats["decodeConfig"]["deadline_ms"] == 250
    assert len(client.lsp.messages) == messages + 1  # nothing more to complain about
    stats = await client.settle(preset="balanced", blockSize=None, latencyBudgetMs=0)
    assert stats["decodeConfig"]["block_size"] == 4 and stats["decodeConfig"]["deadline_ms"] is None


async def test_cancel_request_stops_a_running_decode_within_an_iteration(client):
    uri = "file:///w/slow.py"
    client.open(uri, CODE)
    await client.settle(maxNewTokens=1024)  # about a minute of decoding on the tiny models
    try:
        before = await client.stats()
        pending = asyncio.ensure_future(client.lsp.protocol.send_request_async(
            types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, 1, 11), msg_id="slow-1"))
        await client.wait_until(lambda s: s["decodesStarted"] > before["decodesStarted"], interval=0.05)
        await asyncio.sleep(0.3)  # well into the decode

        cancelled_at = time.monotonic()
        client.lsp.protocol.notify("$/cancelRequest", types.CancelParams(id="slow-1"))
        with pytest.raises(JsonRpcRequestCancelled):
            await asyncio.wait_for(pending, 5)
        answered = time.monotonic() - cancelled_at
        stats = await client.wait_until(lambda s: s["decodesStopped"] > before["decodesStopped"], interval=0.02)
        stopped = time.monotonic() - cancelled_at
    finally:
        await client.settle(maxNewTokens=8)
    assert answered < 2.0
    assert stopped < 3.0  # the decode itself stopped (a tiny-model iteration takes ~0.1 s), not just the answer
    assert stats["decodesFinished"] == before["decodesFinished"]
    assert record_of(stats, "slow-1")["outcome"] == "cancelled"
    # and the worker is free again
    result = await asyncio.wait_for(client.inline(uri, 1, 11), 20)
    assert len(result.items) == 1


async def test_a_newer_request_for_the_document_supersedes_the_running_one(client):
    uri = "file:///w/supersede.py"
    client.open(uri, CODE)
    await client.settle(maxNewTokens=1024)
    before = await client.stats()
    old = asyncio.ensure_future(client.lsp.protocol.send_request_async(
        types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, 1, 11), msg_id="old-1"))
    await client.wait_until(lambda s: s["decodesStarted"] > before["decodesStarted"], interval=0.05)
    await client.settle(maxNewTokens=8)  # the running decode keeps its own settings

    started = time.monotonic()
    new = await asyncio.wait_for(client.inline(uri, 1, 11), 30)
    old_result = await asyncio.wait_for(old, 1)

    assert old_result.items == [] or old_result.items == ()
    assert len(new.items) == 1
    assert time.monotonic() - started < 20
    stats = await client.stats()
    assert record_of(stats, "old-1")["outcome"] == "superseded"
    assert stats["decodesStopped"] == before["decodesStopped"] + 1


async def test_a_storm_of_typed_requests_decodes_only_the_last(client):
    uri = "file:///w/storm.py"
    client.open(uri, "def f(x):\n    return \n")
    await client.settle(debounceMs=150)
    try:
        before = await client.stats()
        pending = []
        for i in range(50):
            client.type_text(uri, 1, 11 + i, "x")
            pending.append(asyncio.ensure_future(client.inline_request(uri, 1, 12 + i, invoked=False)))
            await asyncio.sleep(0.01)
        results = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 60)
        after = await client.stats()
    finally:
        await client.settle(debounceMs=0)

    assert not [r for r in results if isinstance(r, BaseException)]  # every request got an answer
    assert all(r.items in ([], ()) for r in results[:-1])
    assert after["requests"] - before["requests"] == 50
    assert after["decodesStarted"] - before["decodesStarted"] == 1  # only the last was computed
    outcomes = [r["outcome"] for r in after["recent"][-50:]]
    assert outcomes.count("superseded") == 49 and outcomes[-1] in ("ok", "empty")
    # threads stay flat: main, pygls's stdin pool (at most 2), the one model thread (and tqdm's monitor,
    # started by transformers' loading bars)
    names = after["threadNames"]
    assert names.count("codila-model_0") == 1 and sum(n.startswith("ThreadPoolExecutor") for n in names) <= 2
    assert set(names) - {"MainThread", "codila-model_0", "tqdm_monitor"} <= {"ThreadPoolExecutor-0_0", "ThreadPoolExecutor-0_1"}
    assert after["threads"] - before["threads"] <= 1 and after["osThreads"] - before["osThreads"] <= 1


async def test_bad_input_gets_a_clear_answer_and_the_server_keeps_serving(client):
    uri = "file:///w/bad.py"
    client.open(uri, "x = 1\n")
    with pytest.raises(JsonRpcInvalidParams, match="outside the document"):
        await client.inline(uri, 40, 0)
    with pytest.raises(JsonRpcInvalidParams, match="is not open"):
        await client.inline("file:///w/never-opened.py", 0, 0)
    with pytest.raises(JsonRpcInvalidParams, match="uri, range"):
        await client.command("codila.infillSelection", uri)
    with pytest.raises(JsonRpcInvalidParams, match="after its end"):
        await client.command("codila.infillSelection", uri,
                             {"start": {"line": 0, "character": 4}, "end": {"line": 0, "character": 1}})

    client.open("file:///w/blob.bin", "\x00\x01\x02ELF\x00\x00" * 200, language_id="plaintext")
    before = await client.stats()
    result = await client.inline("file:///w/blob.bin", 0, 50)
    assert list(result.items) == []
    stats = await client.stats()
    assert stats["recent"][-1]["outcome"] == "binary" and stats["decodesStarted"] == before["decodesStarted"]

    # still serving
    assert len((await client.inline(uri, 0, 5)).items) == 1


async def test_a_5_mb_file_is_completed_from_a_window_with_syntax_checks(client):
    uri = "file:///w/huge.py"
    block = "".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(1000))
    text = block * (5_000_000 // len(block) + 1)
    assert len(text) > 5_000_000
    client.open(uri, text)
    await client.settle(syntaxCheck="trim")
    try:
        lines = text.count("\n")
        started = time.monotonic()
        middle = await asyncio.wait_for(client.inline(uri, lines // 2 + 1, 4), 60)
        end = await asyncio.wait_for(client.inline(uri, lines, 0), 60)
        elapsed = time.monotonic() - started
        stats = await client.stats()
    finally:
        await client.settle(syntaxCheck="off")
    assert isinstance(middle.items, (list, tuple)) and isinstance(end.items, (list, tuple))
    records = stats["recent"][-2:]
    assert all(r["verify"] in ("ok", "trimmed", "rejected") for r in records)
    assert records[0]["prefixChars"] + records[0]["suffixChars"] == len(text)
    assert all(r["serverMs"] < 2000 for r in records), records
    assert elapsed < 60
    assert len((await client.inline("file:///w/bad.py", 0, 5)).items) == 1


async def test_syntax_check_rejects_breaking_completions_and_unsupported_languages_pass_unverified(client):
    uri = "file:///w/reject.py"
    client.open(uri, CODE)
    await client.settle(syntaxCheck="reject")
    try:
        result = await client.inline(uri, 1, 11)
        record = (await client.stats())["recent"][-1]
        client.open("file:///w/notes.md", "# Notes\n\nSome text\n", language_id="markdown")
        await client.inline("file:///w/notes.md", 2, 9)
        stats = await client.stats()
    finally:
        await client.settle(syntaxCheck="off")
    assert record["verify"] in ("ok", "rejected")
    if record["verify"] == "rejected":  # random weights: garbage that breaks the syntax is refused whole
        assert list(result.items) == []
    else:
        assert len(result.items) == 1
    assert stats["recent"][-1]["verify"] == "unverified" and stats["recent"][-1]["language"] is None
    assert "syntax not checked" in client.statuses[-1]["message"]


def inline_params(uri: str, line: int, character: int) -> types.InlineCompletionParams:
    return types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=line, character=character),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked))

