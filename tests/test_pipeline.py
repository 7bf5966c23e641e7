"""One completion pipeline (lsp_server.pipeline.complete): the benchmark's `preset:` decoders run exactly what
the language server answers, and the pipeline's own stages (cache, binary check, window, stop) behave."""

from __future__ import annotations

import asyncio

import pytest
from lsprotocol import types
from pygls.workspace import TextDocument

from benchmarks.harness import Length, run_benchmark
from benchmarks.specs import parse_spec, task_context
from benchmarks.tasks import Task
from lsp_server import pipeline
from lsp_server.settings import ServerSettings
from lsp_server.text import context_at
from tests.server_client import running_server, tiny_settings, utf16_len

TASKS = [
    Task("t/add", "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n", "a + b"),
    Task("t/call", "values = [1, 2, 3]\nprint(sum(", "))\n", "values"),
    Task("t/unicode", 'label = "😀中文"\nname = ', '\nprint(label, name)\n', '"x"'),
    Task("t/indent", "class Point:\n    def __init__(self, x, y):\n        ", "\n        self.y = y\n",
         "self.x = x"),
]


@pytest.mark.parametrize("syntax_check", ["off", "trim"])
def test_the_benchmark_middle_is_the_servers_inline_completion(tiny_models, tiny_model_dirs, syntax_check):
    """The acceptance check of one pipeline: the same document and cursor give the same text in the
    benchmark (preset: spec, in-process) and from the real server over stdio."""
    decoder = parse_spec(f"preset:balanced,max_new_tokens=8,syntax_check={syntax_check}")
    run = run_benchmark(tiny_models, TASKS, [decoder], Length.parse("oracle"), max_context=2048, exec_timeout_s=5)
    benchmark = {sample.task_id: sample.middle for sample in run.samples}

    async def served() -> dict[str, str]:
        answers = {}
        settings = tiny_settings(tiny_model_dirs, maxNewTokens=8, syntaxCheck=syntax_check)
        async with running_server(settings) as client:
            for i, task in enumerate(TASKS):
                uri = f"file:///w/task{i}.py"
                client.open(uri, task.prompt + task.suffix)
                lines = task.prompt.split("\n")
                result = await client.inline(uri, len(lines) - 1, utf16_len(lines[-1]))
                answers[task.task_id] = result.items[0].insert_text if result.items else ""
        return answers

    assert asyncio.run(served()) == benchmark
    if syntax_check == "off":  # the tiny random models write something; the check may trim it all away
        assert all(benchmark.values())


def test_a_task_is_the_document_the_editor_has_with_the_cursor_at_the_gap():
    task = TASKS[2]
    context = task_context(task)
    assert (context.prefix, context.suffix) == (task.prompt, task.suffix)
    assert context.position == types.Position(line=1, character=7) and context.language == "python"


def _context(text: str, line: int, character: int):
    return context_at(TextDocument("file:///w/p.py", text, language_id="python"), types.Position(line=line,
                                                                                                  character=character))


def test_the_cache_answers_before_any_model_work_and_keeps_what_was_offered(tiny_models):
    cache = pipeline.SuggestionCache()
    settings = ServerSettings(max_new_tokens=4, syntax_check="off")
    first = pipeline.complete(tiny_models, _context("x = \n", 0, 4), settings, cache=cache)
    assert first.outcome == "ok" and first.stats["tokens"] >= 1 and len(first.text) >= 2
    typed = first.text[0]
    decodes = []
    hit = pipeline.complete(tiny_models, _context(f"x = {typed}\n", 0, 5), settings, cache=cache,
                            on_decode=lambda: decodes.append(1))
    assert (hit.outcome, hit.text, hit.stats, decodes) == ("cache", first.text[1:], None, [])


def test_binary_content_is_not_decoded(tiny_models):
    decodes = []
    completion = pipeline.complete(tiny_models, _context("\x00\x01\x02ELF", 0, 3), ServerSettings(),
                                   on_decode=lambda: decodes.append(1))
    assert (completion.text, completion.outcome, decodes) == ("", "binary", [])


def test_a_stop_before_the_first_iteration_decodes_nothing(tiny_models):
    completion = pipeline.complete(tiny_models, _context("x = \n", 0, 4), ServerSettings(max_new_tokens=4),
                                   cancel=lambda: True)
    assert (completion.text, completion.outcome, completion.stats) == ("", "stopped", None)


def test_the_context_budget_fits_the_dlm_positions(tiny_models):
    positions = tiny_models.dlm.model.config.max_position_embeddings  # 2048 for the tiny DLM
    assert pipeline.context_budget(tiny_models, ServerSettings(context_tokens=512, max_new_tokens=64)) == 512
    assert pipeline.context_budget(tiny_models, ServerSettings(context_tokens=10**6, max_new_tokens=64)) \
        == positions - 64


def test_dlm_middles_keeps_the_context_the_server_would(tiny_model_dirs, monkeypatch):
    import torch

    import benchmarks.dlm_middles as ev
    from decoding.context import split_context
    from decoding.models import load_dlm

    dlm = load_dlm(tiny_model_dirs[0], device="cpu", dtype="float32")
    encode = lambda text: dlm.tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    task = Task("long", "x = 1\n" * 40, "y = 2\n" * 40, "z = 3")
    seen = []

    def record(_, ids):
        seen.append(ids[0].tolist())
        return torch.zeros(*ids.shape, dlm.model.config.vocab_size)

    monkeypatch.setattr(ev, "dlm_logits", record)
    ev.middle_scores(dlm, [task], max_context=64)
    prefix, middle, suffix = encode(task.prompt), encode(task.canonical_solution), encode(task.suffix)
    keep_prefix, keep_suffix = split_context(len(prefix), len(suffix), 64 - len(middle))
    assert keep_suffix == (64 - len(middle)) // 4 and keep_prefix + keep_suffix == 64 - len(middle)
    assert seen == [prefix[-keep_prefix:] + [dlm.mask_id] * len(middle) + suffix[:keep_suffix]]
