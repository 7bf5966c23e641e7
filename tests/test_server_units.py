"""The server's stages in-process: settings validation, text stages, the suggestion cache, trainer arguments,
and the engine's behaviour when decoding crashes."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pygls.protocol import LanguageServerProtocol
from pygls.workspace import TextDocument

from lsp_server.engine import Engine
from lsp_server.pipeline import SuggestionCache
from lsp_server.server import completion_item
from lsp_server.settings import ServerSettings, merge
from lsp_server.text import (ANCHOR_CHARS, context_at, context_for_range, indent_unit, looks_binary,
                             match_indentation, strip_overlap, tidy, window)
from lsp_server.training_job import finetune_command, parse_arguments
from decoding.context import split_context


# ---------------------------------------------------------------------------------------------- settings
def test_a_bad_value_is_refused_by_name_and_the_rest_applies():
    settings, problems = merge(ServerSettings(), {"blockSize": 0, "maxNewTokens": 32, "device": "gpu",
                                                  "syntaxCheck": "reject", "colour": "red"})
    assert settings.block_size is None and settings.device == "auto"  # kept
    assert settings.max_new_tokens == 32 and settings.syntax_check == "reject"  # applied
    assert [p.split(" ")[0].rstrip(":") for p in problems] == ["blockSize", "device", "colour"]
    assert "between 1 and 16" in problems[0] and "keeping the preset value" in problems[0]
    assert "keeping 'auto'" in problems[1]


@pytest.mark.parametrize("name, value", [
    ("preset", "turbo"), ("tau", -1), ("topP", 0), ("topP", 1.5), ("maxNewTokens", 2000), ("maxNewTokens", 8.5),
    ("contextTokens", 4), ("latencyBudgetMs", -5), ("debounceMs", True), ("kvCache", "full"), ("mode", "greedy"),
    ("method", "beam"), ("dtype", "int4"), ("arBackend", "onnx"), ("trustRemoteCode", "yes"), ("dlmPath", ""),
    ("logLevel", "loud"), ("scope", 0), ("temperature", -0.1)])
def test_every_setting_is_validated(name, value):
    old = ServerSettings()
    settings, problems = merge(old, {name: value})
    assert settings == old and len(problems) == 1 and problems[0].startswith(f"{name} = ")


def test_presets_fill_unset_knobs_and_explicit_knobs_win():
    assert ServerSettings(preset="fast").decode_config().block_size == 8
    assert ServerSettings(preset="fast", block_size=2).decode_config().block_size == 2
    assert ServerSettings(preset="accurate").decode_config().kv_cache == "none"
    # the editor presets decode left to right (scope 1); accurate keeps the paper's any-order scope
    assert ServerSettings().decode_config().scope == 1
    assert ServerSettings(preset="accurate").decode_config().scope == 10
    assert ServerSettings(scope=4).decode_config().scope == 4
    assert ServerSettings().decode_config().tau is None  # no preset names a tau: the AR's own applies
    config = ServerSettings(latency_budget_ms=300, max_new_tokens=16, top_p=0.9).decode_config()
    assert (config.deadline_ms, config.max_new_tokens, config.top_p) == (300.0, 16, 0.9)
    assert ServerSettings().decode_config().deadline_ms is None  # 0 = no budget


def test_merging_nothing_or_garbage_keeps_everything():
    settings = ServerSettings(preset="fast")
    assert merge(settings, None) == (settings, [])
    assert merge(settings, {}) == (settings, [])
    same, problems = merge(settings, ["preset", "fast"])
    assert same == settings and "must be an object" in problems[0]


# ------------------------------------------------------------------------------------------ text stages
def doc(text: str, uri: str = "file:///w/x.py", language_id: str | None = "python") -> TextDocument:
    return TextDocument(uri, text, version=3, language_id=language_id)


def test_context_splits_at_utf16_positions():
    document = doc('a = "😀中文"\nb = 2\n')
    context = context_at(document, types.Position(line=0, character=8))  # a = " (5) + 😀 (2) + 中 (1)
    assert context.prefix == 'a = "😀中' and context.suffix == '文"\nb = 2\n'
    assert context.language == "python" and context.version == 3


def test_a_negotiated_utf8_or_utf32_encoding_is_honoured():
    from pygls.workspace.position_codec import PositionCodec

    line = 'a = "😀中"\n'
    utf8 = TextDocument("file:///w/x.py", line, position_codec=PositionCodec(types.PositionEncodingKind.Utf8))
    assert context_at(utf8, types.Position(line=0, character=12)).prefix == 'a = "😀中'  # 5 + 4 + 3 bytes
    assert context_at(utf8, types.Position(line=0, character=99)).position.character == 13
    utf32 = TextDocument("file:///w/x.py", line, position_codec=PositionCodec(types.PositionEncodingKind.Utf32))
    assert context_at(utf32, types.Position(line=0, character=7)).prefix == 'a = "😀中'
    assert context_at(utf32, types.Position(line=0, character=99)).position.character == 8


def test_positions_past_the_line_clamp_and_past_the_document_fail():
    document = doc("ab😀\nx")
    assert context_at(document, types.Position(line=0, character=99)).prefix == "ab😀"
    assert context_at(document, types.Position(line=1, character=99)).suffix == ""
    with pytest.raises(JsonRpcInvalidParams, match="outside the document"):
        context_at(document, types.Position(line=2, character=0))
    # after a final newline, the empty last line exists
    assert context_at(doc("x\n"), types.Position(line=1, character=0)).prefix == "x\n"
    assert context_at(doc(""), types.Position(line=0, character=0)).prefix == ""


def test_range_context_and_reversed_ranges():
    document = doc("one 😀 two\n")
    span = types.Range(start=types.Position(line=0, character=4), end=types.Position(line=0, character=6))
    context = context_for_range(document, span)
    assert (context.prefix, context.suffix) == ("one ", " two\n")
    with pytest.raises(JsonRpcInvalidParams, match="after its end"):
        context_for_range(document, types.Range(start=span.end, end=span.start))


def test_window_cuts_characters_before_tokens_and_counts_only_short_sides():
    counted = []

    def starts(text):  # one token per character, and remember what was tokenized
        counted.append(len(text))
        return list(range(len(text)))

    context = context_at(doc("p" * 100_000 + "s" * 100_000), types.Position(line=0, character=100_000))
    gap = window(context, 1000, starts)
    assert (gap.prefix_tokens, gap.suffix_tokens) == (750, 250)  # both sides long: 3/4 before, 1/4 after
    assert gap.suffix == "s" * 2000
    assert set(gap.prefix) == {"p"} and 750 - ANCHOR_CHARS <= len(gap.prefix) <= 750  # anchored, within budget
    assert counted == [750 * 8]  # a 5 MB file is never tokenized: only the window's last characters

    counted.clear()
    end_of_file = context_at(doc("p" * 100_000 + "s" * 30), types.Position(line=0, character=100_000))
    gap = window(end_of_file, 1000, starts)
    assert (gap.prefix_tokens, gap.suffix_tokens) == (970, 30)  # the short suffix leaves the rest to the prefix
    assert gap.suffix == "s" * 30 and counted == [30, 970 * 8]

    start_of_file = context_at(doc("p" * 100 + "s" * 100_000), types.Position(line=0, character=100))
    gap = window(start_of_file, 1000, starts)
    assert (gap.prefix_tokens, gap.suffix_tokens) == (100, 900)
    assert gap.prefix == "p" * 100 and len(gap.suffix) == 900 * 8


def test_a_long_prefix_window_starts_at_the_same_line_while_the_user_types():
    """The decoder reuses the cached keys and values of the prompt's common start: a window that moved with
    every keystroke would cost a full prefill per keystroke."""
    def starts(text):  # one token per 3 characters
        return list(range(0, len(text), 3))

    lines = "".join(f"    value_{i} = compute({i}, other_{i})\n" for i in range(400))
    typed = "    result = combine(value_1, value_2)\n"
    windows = []
    for n in range(len(typed) + 1):
        prefix = lines + typed[:n]
        cursor = types.Position(line=prefix.count("\n"), character=len(prefix) - prefix.rfind("\n") - 1)
        gap = window(context_at(doc(prefix + "\n"), cursor), 512, starts)
        assert prefix.endswith(gap.prefix)
        assert len(starts(gap.prefix)) <= gap.prefix_tokens  # the decoder never cuts it again
        assert gap.prefix.startswith("    value_")  # a whole line
        windows.append(len(prefix) - len(gap.prefix))
    assert len(set(windows)) <= 2  # the start moves at most once in a line of typing (crossing an anchor)
    assert max(windows) - min(windows) <= ANCHOR_CHARS + 100


@pytest.mark.parametrize("prefix, suffix, budget, kept", [
    (100, 50, 1000, (100, 50)),  # everything fits
    (2000, 2000, 900, (675, 225)),  # both long: 3/4 before, 1/4 after
    (100, 2000, 900, (100, 800)),  # a short prefix leaves room to the suffix
    (2000, 10, 900, (890, 10)),  # and a short suffix to the prefix
    (5, 5, 0, (0, 0)),
])
def test_one_context_policy(prefix, suffix, budget, kept):
    assert split_context(prefix, suffix, budget) == kept


def test_a_context_budget_below_zero_is_an_error():
    with pytest.raises(ValueError, match="no room for context"):
        split_context(1, 1, -1)


@pytest.mark.parametrize("text, suffix, expected", [
    ("a, b)", ")\n", "a, b"),  # the closing bracket is already there
    ("f(a)", ")\n", "f(a)"),  # ...but this one closes the completion's own call
    ("x = 1\n", "\nprint(x)", "x = 1"),
    ("1\nprint(x)", "\nprint(x)\n", "1"),
    ("total = 0\n    return total", "\n    return total\n", "total = 0"),
    ("total = 0\nreturn total", "\n    return total\n", "total = 0"),  # same line, other indentation
    ("if x {\n    y()\n}", "\n}\n", "if x {\n    y()\n}"),  # its own brace stays
    ("value   ", "\nnext", "value"),
    ("abc", "", "abc"),
    ("abc", "xyz", "abc"),
])
def test_strip_overlap(text, suffix, expected):
    assert strip_overlap(text, suffix) == expected


def test_indentation_follows_the_file():
    assert indent_unit("def f():\n\tif x:\n\t\treturn 1\n") == "\t"
    assert indent_unit("def f():\n  if x:\n    return 1\n") == "  "
    assert indent_unit("x = 1\n") == "    "
    assert match_indentation("a\n    b\n        c", "\t") == "a\n\tb\n\t\tc"
    assert match_indentation("a\n\tb\n\t\tc", "  ") == "a\n  b\n    c"
    assert match_indentation("    keep first\n    b", "\t") == "    keep first\n\tb"
    context = context_at(doc("def f():\n\tx = 1\n\t\n"), types.Position(line=2, character=1))
    assert tidy("y = 2\n    return y", context) == "y = 2\n\treturn y"


def test_binary_content_is_recognised():
    assert looks_binary("ELF\x00\x01")
    assert looks_binary("\x01\x02\x03\x04abc")
    assert not looks_binary("def f():\n\treturn 1\r\n")


def test_completion_item_is_one_multiline_text_edit():
    context = context_at(doc("x = \n"), types.Position(line=0, character=4))
    item = completion_item("compute(\n    1,\n)", context)
    assert item.text_edit.new_text == "compute(\n    1,\n)"
    assert item.text_edit.range.start == item.text_edit.range.end == types.Position(line=0, character=4)
    assert item.label == "compute(…"


# ---------------------------------------------------------------------------------------------- cache
def test_cache_serves_the_rest_of_a_suggestion_being_typed():
    cache = SuggestionCache()
    document = doc("def f(x):\n    return \n\nprint(f(1))\n")
    at = context_at(document, types.Position(line=1, character=11))
    cache.store(at, "x + 1")
    assert cache.lookup(at) == "x + 1"

    typed = doc("def f(x):\n    return x +\n\nprint(f(1))\n")
    assert cache.lookup(context_at(typed, types.Position(line=1, character=14))) == " 1"
    other = doc("def f(x):\n    return y\n\nprint(f(1))\n")
    assert cache.lookup(context_at(other, types.Position(line=1, character=12))) is None  # typed something else
    done = doc("def f(x):\n    return x + 1\n\nprint(f(1))\n")
    assert cache.lookup(context_at(done, types.Position(line=1, character=16))) is None  # nothing left
    changed_after = doc("def f(x):\n    return x\n\nprint(f(2))\n")
    assert cache.lookup(context_at(changed_after, types.Position(line=1, character=12))) is None
    cache.forget(document.uri)
    assert cache.lookup(at) is None


# ------------------------------------------------------------------------------------------- training
def test_trainer_arguments(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "my project"
    folder.mkdir()
    options = parse_arguments([], [folder.as_uri()])
    assert options.folders == (folder,) and options.block_size == 4
    assert options.output.parent == tmp_path / "cache" / "codila-lsp" / "trained"
    options = parse_arguments([folder.as_uri(), {"blockSize": 8, "maxSteps": 5, "output": str(tmp_path / "o")}], [])
    assert (options.block_size, options.max_steps, options.output) == (8, 5, tmp_path / "o")
    command = finetune_command(options, "DLM", "AR", "cpu")
    assert command[1:3] == ["-m", "training.finetune"]
    for flag, value in [("--dlm", "DLM"), ("--ar", "AR"), ("--data", str(folder)), ("--block-size", "8"),
                        ("--max-steps", "5"), ("--output", str(tmp_path / "o")), ("--device", "cpu")]:
        assert command[command.index(flag) + 1] == value
    assert "--json-progress" in command
    with pytest.raises(ValueError, match="blockSize"):
        parse_arguments([{"blockSize": 32}], [folder.as_uri()])
    with pytest.raises(ValueError, match="unknown option"):
        parse_arguments([{"steps": 3}], [folder.as_uri()])
    with pytest.raises(ValueError, match="open a folder"):
        parse_arguments([], [])
    with pytest.raises(ValueError, match="only local folders"):
        parse_arguments(["https://example.com/repo"], [])


def test_trainer_learning_rate(tmp_path):
    """An explicit learningRate wins; else the rate recorded by the AR's last fine-tune; else the trainer's."""
    folder, ar = tmp_path / "src", tmp_path / "ar"
    folder.mkdir()
    ar.mkdir()
    (ar / "config.json").write_text('{"model_type": "qwen3"}')
    plain = parse_arguments([{"output": str(tmp_path / "o")}], [folder.as_uri()])
    assert "--lr" not in finetune_command(plain, "DLM", str(ar), "cpu")
    (ar / "config.json").write_text('{"model_type": "qwen3", "codila_finetune_lr": 0.0005}')
    command = finetune_command(plain, "DLM", str(ar), "cpu")
    assert float(command[command.index("--lr") + 1]) == 5e-4
    given = parse_arguments([{"learningRate": 2e-5, "output": str(tmp_path / "o")}], [folder.as_uri()])
    command = finetune_command(given, "DLM", str(ar), "cpu")
    assert float(command[command.index("--lr") + 1]) == 2e-5
    for bad in (0, 1.5, "fast", True):
        with pytest.raises(ValueError, match="learningRate"):
            parse_arguments([{"learningRate": bad}], [folder.as_uri()])


# ---------------------------------------------------------------------------------------------- engine
class FakeEditor:
    def __init__(self):
        self.statuses, self.messages = [], []

    def status(self, state, message, last_latency_ms):
        self.statuses.append((state, message, last_latency_ms))

    def message(self, level, text):
        self.messages.append((level, text))

    def progress(self, title, cancellable):
        raise AssertionError("no progress expected")


def test_a_crash_in_decoding_fails_that_request_only(tiny_models, monkeypatch):
    async def scenario():
        engine = Engine(FakeEditor())
        engine.lifecycle.settings = ServerSettings(max_new_tokens=4, debounce_ms=0, syntax_check="off")
        engine.lifecycle.models = tiny_models
        document = doc("def f(x):\n    return \n")
        cursor = types.Position(line=1, character=11)

        import decoding

        real = decoding.infill
        calls = []

        def crash_once(*args, **kwargs):
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("CUDA error: device-side assert")
            return real(*args, **kwargs)

        monkeypatch.setattr(decoding, "infill", crash_once)
        with pytest.raises(RuntimeError, match="device-side assert"):
            await engine.complete(document, cursor, "r1", "inlineCompletion", invoked=True)
        text = (await engine.complete(document, cursor, "r2", "inlineCompletion", invoked=True)).text
        engine.close()
        return engine, text

    engine, text = asyncio.run(scenario())
    assert text  # the next request is served
    assert engine.ledger.counters["decodes_failed"] == 1 and engine.ledger.counters["decodes_finished"] == 1
    assert [r["outcome"] for r in engine.ledger.recent] == ["error", "ok"]
    assert "device-side assert" in engine.ledger.recent[0]["error"]


def test_a_newer_request_for_the_document_stops_the_older_in_its_debounce(tiny_models):
    """A request superseded while it waits out debounceMs answers empty without reaching the model thread."""
    async def scenario():
        engine = Engine(FakeEditor())
        engine.lifecycle.settings = ServerSettings(max_new_tokens=4, debounce_ms=300, syntax_check="off")
        engine.lifecycle.models = tiny_models
        document, cursor = doc("def f(x):\n    return \n"), types.Position(line=1, character=11)
        typed = asyncio.ensure_future(engine.complete(document, cursor, "r1", "inlineCompletion", invoked=False))
        await asyncio.sleep(0.05)  # r1 is in its debounce
        newer = await engine.complete(document, cursor, "r2", "inlineCompletion", invoked=True)
        older = await typed
        stats = engine.stats()
        engine.close()
        return older.text, newer.text, stats

    older, newer, stats = asyncio.run(scenario())
    assert older == "" and newer
    records = {r["request"]: r for r in stats["recent"]}
    assert records["r1"]["outcome"] == "superseded" and records["r1"]["debounceMs"] >= 250
    assert records["r2"]["outcome"] == "ok"
    assert (stats["decodesStarted"], stats["decodesFinished"], stats["decodesStopped"]) == (1, 1, 0)
    assert stats["activeJobs"] == 0


def test_a_request_cancelled_while_it_waits_for_the_model_thread_never_decodes(tiny_models, monkeypatch):
    """$/cancelRequest for a request queued behind another: it answers empty and counts as stopped without a
    decode; the running one is untouched."""
    import decoding

    real, running, release = decoding.infill, threading.Event(), threading.Event()

    def held_infill(*args, **kwargs):  # the first decode holds the model thread until released
        running.set()
        release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(decoding, "infill", held_infill)

    async def scenario():
        engine = Engine(FakeEditor())
        engine.lifecycle.settings = ServerSettings(max_new_tokens=4, debounce_ms=0, syntax_check="off")
        engine.lifecycle.models = tiny_models
        cursor = types.Position(line=1, character=11)
        code = "def f(x):\n    return \n"
        first = asyncio.ensure_future(engine.complete(doc(code, "file:///w/a.py"), cursor, "r1", "completion", True))
        await asyncio.to_thread(running.wait, 10)
        queued = asyncio.ensure_future(engine.complete(doc(code, "file:///w/b.py"), cursor, "r2", "completion", True))
        await asyncio.sleep(0.05)  # r2 waits behind r1
        engine.cancel_request("r2")
        release.set()
        answers = await asyncio.gather(first, queued)
        engine.close()
        return [a.text for a in answers], engine.stats()

    (first, queued), stats = asyncio.run(scenario())
    assert first and queued == ""
    records = {r["request"]: r for r in stats["recent"]}
    assert records["r1"]["outcome"] == "ok" and records["r2"]["outcome"] == "cancelled"
    assert records["r2"]["queueMs"] > 0 and records["r2"]["decodeMs"] == 0
    assert (stats["decodesStarted"], stats["decodesFinished"], stats["decodesStopped"]) == (1, 1, 1)


def test_importing_the_server_does_not_import_torch():
    """The server answers `initialize` at once: torch is imported on the model thread when the models load
    (the models' type is named for type checkers only)."""
    probe = "import sys, lsp_server.server; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.stdout.strip() == "[]"



# ------------------------------------------------------------------------------------------ cancellation
def test_pygls_cancellation_is_as_this_override_expects():
    """lsp_server.server.CodilaProtocol overrides pygls's private `_handle_cancel_notification` because
    pygls (2.1.1) offers no public way for a command to learn of its `$/cancelRequest`. This test pins the
    three facts that make the override necessary and sufficient; when an upgrade changes one, it fails:
    then drop the override for the public API the new pygls offers."""
    from pygls.lsp.server import LanguageServer

    from lsp_server.server import CodilaProtocol

    async def scenario() -> dict[str, object]:
        ls = LanguageServer("probe", "1")
        seen: dict[str, object] = {"feature": False, "command": "running", "handler": "running"}

        @ls.feature(types.CANCEL_REQUEST)
        def on_cancel(params):  # 1. never called: pygls consumes $/cancelRequest itself
            seen["feature"] = True

        async def wait(key: str) -> None:
            try:
                await asyncio.sleep(0.5)
                seen[key] = "finished"
            except asyncio.CancelledError:
                seen[key] = "cancelled"
                raise

        @ls.command("probe.wait")
        async def command(*args):  # 2. a command's own task is not cancelled
            await wait("command")

        @ls.feature("probe/wait")
        async def handler(params):  # 3. an async feature handler's task is: Engine.complete relies on that
            await wait("handler")

        sent = []
        ls.protocol.set_writer(type("Writer", (), {"write": lambda self, data: sent.append(data),
                                                   "close": lambda self: None})(), include_headers=False)

        def message(payload: dict) -> None:
            ls.protocol.handle_message(ls.protocol.structure_message({"jsonrpc": "2.0", **payload}))

        message({"id": 1, "method": "workspace/executeCommand", "params": {"command": "probe.wait", "arguments": []}})
        message({"id": 2, "method": "probe/wait", "params": {}})
        await asyncio.sleep(0.05)
        message({"method": "$/cancelRequest", "params": {"id": 1}})
        message({"method": "$/cancelRequest", "params": {"id": 2}})
        await asyncio.sleep(0.7)
        seen["answers"] = sent
        return seen

    seen = asyncio.run(scenario())
    assert seen["feature"] is False
    assert seen["command"] == "finished"
    assert seen["handler"] == "cancelled"
    assert sum(b"RequestCancelled" in a or b"-32800" in a for a in seen["answers"]) == 2
    # the hook the override uses: called with the request id of every $/cancelRequest
    assert "_handle_cancel_notification" in vars(CodilaProtocol)
    assert list(inspect.signature(LanguageServerProtocol._handle_cancel_notification).parameters) == ["self", "msg_id"]


def test_typing_through_a_suggestion_skips_the_debounce(tiny_models):
    """An automatic request the suggestion cache can answer does not wait debounceMs: it is answered from
    the cache by the pipeline at once; one it cannot answer waits."""
    async def scenario():
        engine = Engine(FakeEditor())
        engine.lifecycle.settings = ServerSettings(max_new_tokens=4, debounce_ms=200, syntax_check="off")
        engine.lifecycle.models = tiny_models
        first = await engine.complete(doc("x = \n"), types.Position(line=0, character=4), "r1", "inlineCompletion",
                                      invoked=True)
        typed = doc(f"x = {first.text[0]}\n")
        rest = await engine.complete(typed, types.Position(line=0, character=5), "r2", "inlineCompletion",
                                     invoked=False)
        other = await engine.complete(doc("y = \n"), types.Position(line=0, character=4), "r3", "inlineCompletion",
                                      invoked=False)
        engine.close()
        return first.text, rest.text, list(engine.ledger.recent)

    first, rest, records = asyncio.run(scenario())
    assert len(first) >= 2 and rest == first[1:]
    assert [(r["outcome"], r["debounceMs"] > 0) for r in records] == [("ok", False), ("cache", False), ("ok", True)]
