"""benchmarks/: decoder specs, task files, metrics, context fitting, the plot."""

import gzip
import json

import pytest

from benchmarks.harness import Length
from benchmarks.infill import format_table
from benchmarks.metrics import HEADLINE, Sample, exact_match, percentile, program_syntax_ok, similarity, summarize
from benchmarks.plot import pareto_front, pareto_plot
from benchmarks.specs import parse_spec
from benchmarks.tasks import Task, load_tasks
from decoding.config import DecodeConfig
from lsp_server.settings import ServerSettings

# the example problem shipped in openai/human-eval-infilling data/example_problem.jsonl
OPENAI_EXAMPLE = {"task_id": "test/0", "prompt": "def return1():\n", "suffix": "1", "canonical_solution": "    return ",
                  "test": "def check(candidate):\n    assert candidate() == 1", "entry_point": "return1"}


# --- decoder specs -------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, expected", [
    ("dlm:k=1", dict(method="dlm", tokens_per_step=1, confidence=None)),
    ("dlm:k=4", dict(method="dlm", tokens_per_step=4)),
    ("dlm:conf=0.9", dict(method="dlm", confidence=0.9)),
    ("codila:b=4", dict(method="codila", block_size=4, mode="static")),
    ("codila:b=4,tau=0.3", dict(method="codila", block_size=4, mode="dynamic", tau=0.3)),
    ("codila-top1:b=4", dict(method="codila-top1", block_size=4, mode="static")),
    ("codila:b=4,budget_ms=300", dict(deadline_ms=300.0, mode="static")),
    ("codila:b=8,kv=dual,scope=10,eos_casting=false", dict(block_size=8, kv_cache="dual", scope=10, eos_casting=False)),
    ("codila:b=2,mode=dynamic", dict(mode="dynamic", tau=DecodeConfig().tau)),
    ("dlm:conf=none,temperature=0.2", dict(confidence=None, temperature=0.2)),
])
def test_valid_specs_set_the_config_they_name(spec, expected):
    decoder = parse_spec(spec)
    assert decoder.spec == spec
    for key, value in expected.items():
        assert getattr(decoder.config, key) == value, key


def test_a_preset_spec_is_the_editor_settings_of_that_preset():
    decoder = parse_spec("preset:fast")
    assert decoder.settings == ServerSettings(preset="fast") and not decoder.uses_length
    assert decoder.settings.decode_config() == ServerSettings(preset="fast").decode_config()
    tuned = parse_spec("preset:balanced,max_new_tokens=32,kv=none,syntax_check=off,context_tokens=1024")
    assert tuned.settings == ServerSettings(max_new_tokens=32, kv_cache="none", syntax_check="off",
                                            context_tokens=1024)
    assert tuned.settings.decode_config().kv_cache == "none"  # kv=none is the choice, not "the preset's"
    assert parse_spec("codila:b=4").uses_length


def test_an_ar_spec_names_the_plain_baseline_and_its_model():
    plain = parse_spec("ar")
    assert plain.model is None and plain.describe()["model"].startswith("the DLM's base")
    # like the editor, not like the decoder specs: no reference length, the server's budget and context
    assert not plain.uses_length and plain.settings == ServerSettings()
    assert plain.describe()["reads_suffix"] and not parse_spec("ar:prefix").describe()["reads_suffix"]
    assert parse_spec("ar:model=base:qwen2.5-coder-0.5b").model == "base:qwen2.5-coder-0.5b"
    tuned = parse_spec("ar:prefix,max_new_tokens=16,context_tokens=256")
    assert tuned.prefix_only and tuned.settings == ServerSettings(max_new_tokens=16, context_tokens=256)


def test_spec_settings_go_on_top_of_the_harness_base_config():
    assert parse_spec("codila:b=4", DecodeConfig(seed=7)).config.seed == 7
    assert parse_spec("codila:b=4,seed=3", DecodeConfig(seed=7)).config.seed == 3


@pytest.mark.parametrize("spec, message", [
    ("beam:k=1", "method must be one of auto, verified, ar, codila, codila-top1, dlm, preset"),
    ("ar:k=1", "unknown key 'k'"),
    ("ar:max_new_tokens=0", "max_new_tokens must be between 1"),
    ("ar:model=a,model=b", "model=PATH once"),
    ("ar:prefix,prefix", "ar takes [prefix]"),
    ("dlm:q=1", "unknown key 'q'; valid keys: k, conf, b, budget_ms, kv, block_size"),
    ("dlm:k=two", "tokens_per_step='two' is not a valid integer"),
    ("dlm:k", "'k' is not KEY=VALUE"),
    ("codila:b=99", "block_size must be between 1 and 16"),
    ("codila:kv=triple", "kv_cache must be one of none, prefix, dual"),
    ("dlm:max_new_tokens=5", "set for every task by --length"),
    ("dlm:k=1,tokens_per_step=2", "given twice"),
    ("codila:eos_casting=maybe", "is not a valid boolean"),
    ("preset:turbo", "preset must be one of fast, balanced, accurate"),
    ("preset:", "needs a preset name first"),
    ("preset:fast,debounce_ms=0", "unknown key 'debounce_ms'"),
    ("preset:fast,dlm_path=x", "unknown key 'dlm_path'"),
    ("preset:fast,max_new_tokens=2000", "max_new_tokens must be between 1 and 1024"),
    ("preset:fast,eos_penalty=1", "unknown key 'eos_penalty'"),
])
def test_bad_specs_fail_with_a_message_that_says_why(spec, message):
    with pytest.raises(ValueError, match="decoder spec") as err:
        parse_spec(spec)
    assert message in str(err.value)


# --- tasks ---------------------------------------------------------------------------------------------

def test_openai_task_files_load_unchanged_plain_or_gzipped(tmp_path):
    plain = tmp_path / "example_problem.jsonl"
    plain.write_text(json.dumps(OPENAI_EXAMPLE) + "\n\n")
    zipped = tmp_path / "HumanEval-Example.jsonl.gz"
    with gzip.open(zipped, "wt") as f:
        f.write(json.dumps({**OPENAI_EXAMPLE, "task_id": "test/1"}) + "\n")
    tasks = load_tasks([plain, zipped])
    assert [t.task_id for t in tasks] == ["test/0", "test/1"]
    assert tasks[0].executable and tasks[0].entry_point == "return1" and tasks[0].language == "python"


def test_a_limit_takes_the_first_tasks_of_each_file(tmp_path):
    files = []
    for name in ("a", "b"):
        files.append(tmp_path / f"{name}.jsonl")
        files[-1].write_text("".join(json.dumps({**OPENAI_EXAMPLE, "task_id": f"{name}/{i}"}) + "\n" for i in range(3)))
    assert [t.task_id for t in load_tasks(files, limit=2)] == ["a/0", "a/1", "b/0", "b/1"]
    assert len(load_tasks(files)) == 6
    with pytest.raises(ValueError, match="at least 1"):
        load_tasks(files, limit=0)


@pytest.mark.parametrize("record, message", [
    ({"task_id": "a", "prompt": "x"}, "missing suffix, canonical_solution"),
    ({**OPENAI_EXAMPLE, "entry_point": None}, "test and entry_point go together"),
    ({**OPENAI_EXAMPLE, "prompt": 3}, "prompt must be a string"),
    ({**OPENAI_EXAMPLE, "language": "cobol"}, "language 'cobol' is not one of"),
    ([1, 2], "expected a JSON object"),
])
def test_malformed_task_lines_are_reported_with_file_and_line(tmp_path, record, message):
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps(OPENAI_EXAMPLE | {"task_id": "ok"}) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(ValueError, match=f"{path.name}:2: .*{message}"):
        load_tasks([path])


def test_duplicate_task_ids_and_empty_files_are_refused(tmp_path):
    path = tmp_path / "dup.jsonl"
    path.write_text((json.dumps(OPENAI_EXAMPLE) + "\n") * 2)
    with pytest.raises(ValueError, match="already used"):
        load_tasks([path])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="no tasks"):
        load_tasks([empty])
    with pytest.raises(ValueError, match="cannot read task file"):
        load_tasks([tmp_path / "missing.jsonl"])


def test_entry_points_are_names_or_modules(tmp_path):
    path = tmp_path / "tasks.jsonl"
    for entry_point, ok in [("return1", True), ("module:fractions", True), ("module:asyncio.taskgroups", True),
                            ("module:", False), ("module:a..b", False), ("print(1); f", False)]:
        path.write_text(json.dumps(OPENAI_EXAMPLE | {"entry_point": entry_point}) + "\n")
        if ok:
            assert load_tasks([path])[0].entry_point == entry_point
        else:
            with pytest.raises(ValueError, match="entry_point"):
                load_tasks([path])


def test_public_task_sets_load_and_their_references_are_valid_python():
    tasks = load_tasks(["benchmarks/data/stdlib-single-line.jsonl", "benchmarks/data/stdlib-multi-line.jsonl"])
    assert len(tasks) >= 200
    assert all(t.executable for t in tasks)  # pass@1 is over every task of the public set
    for task in tasks:
        assert program_syntax_ok(task.prompt, task.canonical_solution, task.suffix, "python"), task.task_id
        assert task.canonical_solution.strip(), task.task_id


# --- metrics -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("middle, reference, same", [
    ("x = 1", "x = 1", True),
    ("x = 1   ", "x = 1", True),  # trailing spaces
    ("x = 1\n", "x = 1", True),  # trailing newline
    ("a = 1  \n    b = 2\t\n\n", "a = 1\n    b = 2", True),
    ("  x = 1", "x = 1", False),  # indentation is code
    ("x=1", "x = 1", False),
    ("a = 1\n\nb = 2", "a = 1\nb = 2", False),  # a blank line inside is not trailing
    ("", "x = 1", False),
])
def test_exact_match_ignores_only_trailing_whitespace(middle, reference, same):
    assert exact_match(middle, reference) is same


def test_syntax_ok_checks_the_whole_program():
    prompt, suffix = "def f(x):\n    y = ", "\n    return y\n"
    assert program_syntax_ok(prompt, "x + 1", suffix, "python")
    assert not program_syntax_ok(prompt, "x +", suffix, "python")
    assert not program_syntax_ok(prompt, "x\n      z = 1", suffix, "python")  # indentation: Python's verdict
    assert not program_syntax_ok("x = 1\n", "", "y = 2\n", "python")  # valid, but nothing was completed
    assert not program_syntax_ok("x = 1\n", " \n", "y = 2\n", "python")
    assert program_syntax_ok("int f() { return ", "1;", " }\n", "c")
    assert not program_syntax_ok("int f() { return ", "1", " }\n", "c")


def test_percentile_interpolates_between_ranks():
    values = [float(v) for v in range(1, 21)]  # 1..20: rank 0.95 * 19 = 18.05 -> 19 + 0.05
    assert percentile(values, 95) == pytest.approx(19.05)
    assert percentile(values[::-1], 95) == pytest.approx(19.05)  # order does not matter
    assert percentile([7.0], 95) == 7.0
    with pytest.raises(ValueError):
        percentile([], 95)


def _sample(decoder="d", passed=None, **kw):
    base = dict(task_id="t", decoder=decoder, middle="", syntax_ok=True, exact_match=False, passed=passed,
                exec_detail=None, latency_ms=100.0, tokens=10, committed=12, dlm_forwards=3, ar_calls=3,
                iterations=3, max_new_tokens=12, deadline_hit=False)
    return Sample(**{**base, **kw})


def test_summary_aggregates_over_tasks_not_means_of_ratios():
    samples = [_sample(latency_ms=100.0, tokens=10, committed=12, dlm_forwards=3, passed=True),
               _sample(latency_ms=300.0, tokens=30, committed=4, dlm_forwards=4, syntax_ok=False, passed=False),
               _sample(latency_ms=200.0, exact_match=True),
               _sample(decoder="other", latency_ms=1e6)]
    row = summarize("d", samples)
    assert row["n"] == 3
    assert row["syntax_ok"] == pytest.approx(2 / 3)
    assert row["exact_match"] == pytest.approx(1 / 3)
    assert (row["pass_at_1"], row["n_tested"]) == (0.5, 2)  # only tasks with tests count
    assert row["nfe_per_token"] == pytest.approx((3 + 4 + 3) / (12 + 4 + 12))
    assert row["tokens_per_second"] == pytest.approx((10 + 30 + 10) / 0.6)
    assert row["mean_latency_ms"] == pytest.approx(200.0)
    assert row["p95_latency_ms"] == pytest.approx(290.0)
    assert row["empty"] == 1.0  # every middle above is ""
    assert row["fill"] == pytest.approx((10 / 12 + 30 / 12 + 10 / 12) / 3)  # per task, then the mean
    short = [_sample(tokens=2, max_new_tokens=10), _sample(tokens=10, max_new_tokens=10)]
    assert summarize("d", short)["fill"] == pytest.approx(0.6)  # a middle that ends early fills less
    assert summarize("d", [_sample(middle="x = 1"), _sample(middle=" ")])["empty"] == 0.5
    assert summarize("d", [_sample()])["pass_at_1"] is None  # no tests anywhere: null, not 0


def test_the_headline_leads_each_result_row():
    row = summarize("d", [_sample(passed=True, exact_match=True), _sample()])
    assert list(row)[:5] == ["decoder", "pass_at_1", "n_tested", "exact_match", "n"]
    assert HEADLINE == ("pass_at_1", "exact_match")
    assert (row["pass_at_1"], row["n_tested"], row["exact_match"], row["n"]) == (1.0, 1, 0.5, 2)


def _report(*rows):
    return {"results": [summarize(name, samples) for name, samples in rows]}


def test_the_table_leads_with_the_headline_and_says_over_how_many_tasks():
    tasks = [_sample(decoder="a", passed=True, exact_match=True, syntax_ok=True),
             _sample(decoder="a", passed=False), _sample(decoder="a")]
    lines = format_table(_report(("a", tasks), ("b", [s.__class__(**{**s.__dict__, "decoder": "b"})
                                                       for s in tasks]))).splitlines()
    header = lines[0].split("  ")
    assert [cell.strip() for cell in header if cell.strip()][:4] == ["decoder", "pass@1 of 2", "exact of 3",
                                                                     "syntax_ok"]
    assert lines[2].split()[:3] == ["a", "50.0%", "33.3%"]
    assert lines[-1] == ("pass@1: share of the 2 tasks with tests whose tests pass; exact and every other "
                         "column: over all 3 tasks")


def test_the_table_names_each_rows_counts_when_rows_differ_and_says_when_nothing_has_tests():
    lines = format_table(_report(("a", [_sample(decoder="a", passed=True)]),
                                 ("b", [_sample(decoder="b", passed=True), _sample(decoder="b", passed=False),
                                        _sample(decoder="b")]))).splitlines()
    assert lines[0].split()[:3] == ["decoder", "pass@1", "exact"]
    assert lines[2].split()[:7] == ["a", "100.0%", "of", "1", "0.0%", "of", "1"]
    assert lines[3].split()[:7] == ["b", "50.0%", "of", "2", "0.0%", "of", "3"]
    assert "over all tasks" in lines[-1]
    untested = format_table(_report(("a", [_sample(decoder="a")]))).splitlines()
    assert untested[0].split()[:3] == ["decoder", "pass@1", "exact"] and untested[2].split()[1] == "-"
    assert untested[-1] == "pass@1: no task has tests; exact and every other column: over all 1 tasks"


def test_similarity_gives_partial_credit_and_ignores_layout_noise():
    assert similarity("return None\n", "    return None") == 1.0  # indentation before, blank line after
    assert similarity("x = foo(a, b)", "x = foo(a, c)") == pytest.approx(12 / 13)
    assert similarity("", "x = 1") == 0.0
    assert similarity("", "") == 1.0
    assert 0 < similarity("return None", "op2 = _WorkRep(other)") < 0.3


def test_top_middle_share_flags_one_answer_everywhere():
    # the default model's failure: a generic statement that parses anywhere, written for every task
    collapsed = [_sample(task_id=f"t{i}", middle="return None\n" if i < 3 else f"y = {i}") for i in range(4)]
    row = summarize("d", collapsed)
    assert row["top_middle_share"] == 0.75
    varied = [_sample(task_id=f"t{i}", middle=f"y = {i}") for i in range(4)]
    assert summarize("d", varied)["top_middle_share"] == 0.25
    assert summarize("d", [_sample(middle=""), _sample(middle=" ")])["top_middle_share"] == 0.0  # empty is not an answer
    assert summarize("d", [_sample(similarity=0.5), _sample(similarity=1.0)])["similarity"] == 0.75


# --- length and context --------------------------------------------------------------------------------

def test_length_parsing():
    assert Length.parse("oracle") == Length("oracle")
    assert Length.parse("fixed:48") == Length("fixed", 48)
    for bad in ("fixed", "fixed:0", "fixed:x", "oracle:3", "64"):
        with pytest.raises(ValueError, match="oracle.*fixed:N"):
            Length.parse(bad)


# --- plot ----------------------------------------------------------------------------------------------

def test_pareto_front_keeps_only_undominated_points():
    points = [(10, 50), (20, 40), (15, 30), (5, 60), (20, 35)]
    assert pareto_front(points) == [(5, 60), (10, 50), (20, 40)]


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    results = [{"decoder": "dlm:k=1", "syntax_ok": 0.5, "pass_at_1": 0.2, "tokens_per_second": 10.0},
               {"decoder": "codila:b=4", "syntax_ok": 0.6, "pass_at_1": None, "tokens_per_second": 30.0}]
    out = tmp_path / "pareto.png"
    pareto_plot(results, out, "test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_oracle_length_counts_what_a_healed_decode_must_write(tiny_model_dirs):
    """Token healing takes the prefix's last token off the canvas: the model writes it again, then the middle.
    An oracle length of the middle alone leaves the healed decode a token short, so no middle could match."""
    from decoding.models import load_tokenizer

    tok = load_tokenizer(tiny_model_dirs[0])
    task = Task("t", "def add(a, b):\n    return", "\n", " a + b")
    plain = Length("oracle").for_task(task, tok)
    healed = Length("oracle").for_task(task, tok, healing=True)
    prefix_ids = tok.encode(task.prompt, add_special_tokens=False)
    removed = tok.decode(prefix_ids[-1:])
    assert plain == len(tok.encode(task.canonical_solution, add_special_tokens=False))
    assert healed == len(tok.encode(removed + task.canonical_solution, add_special_tokens=False)) > 0
    assert tok.decode(tok.encode(removed + task.canonical_solution, add_special_tokens=False)[:healed]).endswith(
        task.canonical_solution)
    assert Length("fixed", 7).for_task(task, tok, healing=True) == 7
