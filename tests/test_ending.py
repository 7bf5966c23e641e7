"""Where a completion ends (decoding.ending): the editor's rule, the same for every decoder row.

A model that writes the reference middle and then keeps going (the suffix again, as fill-in-the-middle
models do) must come out as exactly the reference, and that middle must pass the task's tests: the defect
this guards against is a one-line rule that dropped the newline ending the line, so exact middles failed.
"""

from pathlib import Path

import pytest
from lsprotocol import types

from benchmarks.execution import check_program, run_program
from benchmarks.specs import task_context
from benchmarks.tasks import load_tasks
from decoding.ending import OPENERS, _indent
from decoding.ending import ending as ending_at
from lsp_server.text import Context, tidy, worth_showing

DATA = Path(__file__).resolve().parent.parent / "benchmarks" / "data"


def ending(context: Context):
    return ending_at(context.prefix, context.suffix)


def _ctx(prefix: str, suffix: str) -> Context:
    return Context("file:///a.py", 1, "python", "python", prefix, suffix, types.Position(line=0, character=0))


def test_one_line_inside_a_line_and_at_the_end_of_one():
    rule = ending(_ctx("    total = f(", ")\n    return total\n"))
    assert not rule.block and rule("a, b)\n    return x") == "a, b)"
    rule = ending(_ctx("    if x:\n        y = 1\n        ", "\n        return y\n"))  # continues at its indent
    assert not rule.block and rule("z = 2\n        w") == "z = 2" and rule("z = 2") is None


def test_in_front_of_code_the_line_keeps_its_newline_and_the_code_its_indentation():
    rule = ending(_ctx("def f():\n    ", "return y\n"))
    assert rule("x = 1\n    return y") == "x = 1\n    "
    rule = ending(_ctx("def f():\n    ", "    return y\n"))  # the suffix brings its own indentation
    assert rule("x = 1\n") == "x = 1\n"


def test_a_block_after_an_opener_ends_at_a_dedent_or_at_the_code_that_follows():
    rule = ending(_ctx("def f(a):\n    ", "\n\nprint(f(1))\n"))
    assert rule.block
    assert rule("if a:\n        return 1\n    return 2\n") is None  # the last line may still grow
    assert rule("if a:\n        return 1\n    return 2\nprint(f(1))\n") == "if a:\n        return 1\n    return 2"
    rule = ending(_ctx("def f(a):\n    ", "\n    return a\n\nx = 1\n"))  # continues at the indentation
    assert not rule.block


def test_a_line_that_opens_a_block_comes_with_its_body():
    """One line is the rule on a blank line before code at a lower indentation, but `with ... as f:` alone is
    not code: the body comes with it, to the first line back at the opener's indentation."""
    rule = ending(_ctx("    def read(self):\n        data = 1\n        ", "\n\n    def write(self):\n"))
    assert not rule.block
    opened = "with open(p) as f:\n            return f.read()\n\n    def write(self):\n"
    assert rule("with open(p) as f:\n") is None and rule("with open(p) as f:\n            return f.read()\n") is None
    assert rule(opened) == "with open(p) as f:\n            return f.read()\n"
    assert rule("x = f(1)\n        y") == "x = f(1)"  # not an opener: one line
    call = "x = f(\n            1,\n        )\n        y = 2\n"
    assert rule(call) == "x = f(\n            1,\n        )"  # the closing bracket belongs to it
    inside = ending(_ctx("    total = f(", ")\n    return total\n"))  # code after the cursor: one line
    assert inside("a, [\n 1]") == "a, ["


def test_blank_answers_and_repeats_of_the_suffix_are_not_shown():
    ctx = _ctx("def f():\n    ", "\n    return x\n")
    assert not worth_showing("  \n ", ctx)
    assert not worth_showing("return x", ctx)
    assert worth_showing("x = 1", ctx)


@pytest.mark.parametrize("name", ["stdlib-single-line.jsonl", "stdlib-multi-line.jsonl"])
def test_a_model_that_writes_the_reference_gets_the_reference(name):
    """Every single-line task: the reference then the suffix again (a FIM model going on) ends exactly at
    the reference. Multi-line tasks: the same wherever the rule gives a block."""
    tasks = load_tasks([DATA / name])
    for task in tasks:
        context = task_context(task)
        rule = ending(context)
        written = task.canonical_solution + task.suffix
        text = tidy(rule(written) or written, context)
        first, *body = task.canonical_solution.split("\n")
        one_block = first.rstrip().endswith(OPENERS) and all(  # the reference is one opener and its body
            not line.strip() or _indent(line) > _indent(context.prefix.rpartition("\n")[2] + "x") for line in body)
        if "single" in name or rule.block or one_block:
            assert text == task.canonical_solution, task.task_id


def test_an_exact_middle_passes_the_tests():
    task = next(t for t in load_tasks([DATA / "stdlib-single-line.jsonl"]) if t.executable)
    context = task_context(task)
    written = task.canonical_solution + task.suffix
    middle = tidy(ending(context)(written) or written, context)
    outcome = run_program(check_program(task.prompt, middle, task.suffix, task.test, task.entry_point),
                          timeout_s=120)
    assert middle == task.canonical_solution and outcome.passed, outcome.detail
