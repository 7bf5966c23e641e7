"""verify/: tree-sitter + Python syntax checks of whole texts and of insertions into a file being edited."""

import math
import threading
import time

import pytest

from verify import LANGUAGES, check_insertion, insertion, language_for, parse_errors, syntax_ok

# Per language: (before, after) around a cursor inside a function body, an insertion that completes the
# statement, and one that completes it and then starts a statement it never finishes (as a decoder that
# ran out of tokens does); trimming must keep exactly the complete first line.
CASES = {
    "python": ("def f(x):\n    y = ", "\n    return y\n",
               "x + 1", "x + 1\n    z = (y,"),
    "javascript": ("function f(a) {\n  const b = ", "\n  return b;\n}\n",
                   "a.map((x) => x * 2);", "a.map((x) => x * 2);\n  const c = [b,"),
    "typescript": ("function f(a: number[]): number[] {\n  const b: number[] = ", "\n  return b;\n}\n",
                   "a.map((x: number) => x * 2);", "a.map((x: number) => x * 2);\n  const c: number = g(b,"),
    "tsx": ("export function App(props: { n: number }) {\n  const el = ", "\n  return el;\n}\n",
            "<div>{props.n}</div>;", "<div>{props.n}</div>;\n  const other = <span>{"),
    "go": ("package main\n\nfunc f(a int) int {\n\tb := ", "\n\treturn b\n}\n",
           "a * 2", "a * 2\n\tc := g(b,"),
    "rust": ("fn f(a: i32) -> i32 {\n    let b = ", "\n    b\n}\n",
             "a * 2;", "a * 2;\n    let c = g(b,"),
    "c": ("int f(int a) {\n  int b = ", "\n  return b;\n}\n",
          "a * 2;", "a * 2;\n  int c = g(b,"),
    "cpp": ("int f(std::vector<int> a) {\n  auto b = ", "\n  return b;\n}\n",
            "a.size() * 2;", "a.size() * 2;\n  auto c = std::max(b,"),
}

# A function with a syntax error, placed at the top of a file (the user is editing it).
BROKEN_ELSEWHERE = {
    "python": "def broken(:\n    pass\n\n\n",
    "javascript": "function broken( {\n}\n\n",
    "typescript": "function broken(: number {\n}\n\n",
    "tsx": "function broken( {\n}\n\n",
    "go": "func broken( {\n}\n\n",
    "rust": "fn broken( {\n}\n\n",
    "c": "int broken( {\n}\n\n",
    "cpp": "int broken( {\n}\n\n",
}


def test_every_language_has_cases():
    assert set(CASES) == set(LANGUAGES) == set(BROKEN_ELSEWHERE)


@pytest.mark.parametrize("name, expected", [
    ("python", "python"), ("typescriptreact", "tsx"), ("javascriptreact", "javascript"), ("cpp", "cpp"),
    ("src/app.py", "python"), ("file:///home/u/x/Main.TSX", "tsx"), ("lib.rs", "rust"), ("a/b/c.h", "c"),
    ("x.hpp", "cpp"), ("main.go", "go"), ("index.mjs", "javascript"), ("types.d.ts", "typescript"),
    ("C:\\proj\\util.cc", "cpp"), ("markdown", None), ("README.md", None), ("Makefile", None), ("", None),
])
def test_language_for_maps_ids_paths_and_uris(name, expected):
    assert language_for(name) == expected


@pytest.mark.parametrize("language", LANGUAGES)
def test_whole_text_checks_accept_valid_and_count_errors_in_broken_code(language):
    before, after, good, bad = CASES[language]
    assert parse_errors(before + good + after, language) == 0
    assert syntax_ok(before + good + after, language)
    assert parse_errors(before + bad + after, language) > 0
    assert not syntax_ok(before + bad + after, language)


def test_syntax_ok_for_python_also_needs_pythons_own_parser():
    misplaced = "def f():\n    return 1\nreturn 2\n"  # tree-sitter accepts a module-level return
    over_indented = "def f():\n    x = 1\n      y = 2\n"
    for text in (misplaced, over_indented):
        assert parse_errors(text, "python") == 0
        assert not syntax_ok(text, "python")


def test_parse_errors_counts_each_error_node():
    assert parse_errors("int f() { return 1 }", "c") == 1  # one MISSING ";"
    assert parse_errors("int f() { return 1 }\nint g() { return 2 }", "c") == 2


def test_whole_text_checks_refuse_unknown_language():
    with pytest.raises(ValueError, match="unsupported language 'cobol'"):
        syntax_ok("x", "cobol")


@pytest.mark.parametrize("language", LANGUAGES)
def test_valid_insertion_is_kept(language):
    before, after, good, _ = CASES[language]
    result = check_insertion(before, good, after, language, mode="trim")
    assert (result.text, result.status) == (good, "ok")
    assert result.errors_after <= result.errors_before


@pytest.mark.parametrize("language", LANGUAGES)
def test_breaking_insertion_is_trimmed_to_its_last_good_line(language):
    before, after, good, bad = CASES[language]
    result = check_insertion(before, bad, after, language, mode="trim")
    assert (result.text, result.status) == (good + "\n", "trimmed")
    assert syntax_ok(before + result.text + after, language)


@pytest.mark.parametrize("language", LANGUAGES)
def test_reject_mode_drops_a_breaking_insertion_whole(language):
    before, after, good, bad = CASES[language]
    assert check_insertion(before, bad, after, language, mode="reject").text == ""
    assert check_insertion(before, bad, after, language, mode="reject").status == "rejected"
    assert check_insertion(before, good, after, language, mode="reject").status == "ok"


@pytest.mark.parametrize("language", LANGUAGES)
def test_errors_elsewhere_in_the_file_do_not_block_a_valid_insertion(language):
    before, after, good, bad = CASES[language]
    broken = BROKEN_ELSEWHERE[language]
    if language == "go":  # the package clause stays first
        before = before.replace("package main\n\n", "package main\n\n" + broken)
    else:
        before = broken + before
    assert parse_errors(before + good + after, language) > 0
    assert check_insertion(before, good, after, language).status == "ok"
    assert check_insertion(before, bad, after, language).text == good + "\n"


def test_a_file_broken_at_the_cursor_accepts_the_completion_that_fixes_it():
    before, after = "def f(x):\n    y = foo(", "\n    return y\n"
    assert not syntax_ok(before + after, "python")
    assert check_insertion(before, "x, 2)", after, "python").status == "ok"
    # an extra bracket is a new error even though the old one is fixed: trimmed back to the fix
    assert check_insertion(before, "x, 2))", after, "python").text == "x, 2)"


def test_trim_cuts_a_single_line_at_the_last_token_boundary_that_parses():
    result = check_insertion("def f(x):\n    y = ", "compute(x, 2", "\n    return y\n", "python")
    assert (result.text, result.status) == ("compute", "trimmed")


def _count_probes(monkeypatch) -> list[str]:
    """Record every insertion `check_insertion` probes (the first probe is the whole insertion)."""
    probed, check = [], insertion._Probe.check

    def spy(self, inserted, **kwargs):
        probed.append(inserted)
        return check(self, inserted, **kwargs)

    monkeypatch.setattr(insertion._Probe, "check", spy)
    return probed


@pytest.mark.parametrize("language", LANGUAGES)
def test_junk_after_a_good_line_costs_a_bounded_number_of_probes(language, monkeypatch):
    # the decoder's worst case: a good first line, then a budget's worth of lines that open a string and
    # never close it; a probe per candidate prefix was ~40 probes (200 ms in the server benchmark)
    before, after, good, _ = CASES[language]
    junk = "".join(f'    "unterminated {i} (\n' for i in range(40))
    probed = _count_probes(monkeypatch)
    result = check_insertion(before, good + "\n" + junk, after, language, mode="trim")
    assert (result.text, result.status) == (good + "\n", "trimmed")
    lines, _ = insertion._trim_candidates(good + "\n" + junk)
    assert len(lines) > 80
    assert len(probed) <= 1 + insertion.TRIM_SCAN + math.ceil(math.log2(len(lines))) + 1
    assert result.text in probed  # what is returned was itself probed


def test_trim_keeps_the_longest_prefix_when_only_the_end_is_wrong(monkeypatch):
    # a multi-line call whose last line overshoots: every line but the last survives, found by the scan
    before, after = "def f(x):\n    y = ", "\n    return y\n"
    inserted = "compute(\n        x,\n        2,\n    )\n    z = )"
    probed = _count_probes(monkeypatch)
    result = check_insertion(before, inserted, after, "python")
    assert (result.text, result.status) == ("compute(\n        x,\n        2,\n    )\n", "trimmed")
    assert len(probed) <= 1 + insertion.TRIM_SCAN


def test_nothing_survives_when_no_prefix_parses():
    result = check_insertion("def f(x):\n    return ", ")]", "\n", "python", mode="trim")
    assert (result.text, result.status) == ("", "rejected")
    assert result.errors_after > result.errors_before


def test_python_indentation_error_is_caught_by_pythons_parser():
    before, inserted, after = "def f():\n    x = 1\n", "      y = 2\n", "    return x\n"
    assert parse_errors(before + inserted + after, "python") == 0  # tree-sitter alone would accept it
    result = check_insertion(before, inserted, after, "python", mode="trim")
    assert (result.text, result.status) == ("", "rejected")
    assert check_insertion(before, "    y = 2\n", after, "python").status == "ok"


def test_python_statement_in_the_wrong_place_is_caught():
    before, after = "def f():\n    return 1\n\n", "\ndef g():\n    return 2\n"
    assert check_insertion(before, "return 3\n", after, "python").status == "rejected"
    assert check_insertion(before, "x = 3\n", after, "python").status == "ok"


def test_multibyte_text_keeps_byte_offsets_right():
    before = "def f():\n    s = '😀 日本語'\n    t = "
    after = "\n    return s + t\n"
    assert check_insertion(before, "'ü' * 2", after, "python").status == "ok"
    result = check_insertion(before, "'é' * 2\n    u = ('中',", after, "python")
    assert result.text == "'é' * 2\n"


def test_unsupported_language_and_verification_off_pass_through_unverified():
    for language, mode in ((None, "trim"), ("python", "off")):
        result = check_insertion("x = ", "(((", "\n", language, mode=mode)
        assert (result.text, result.status) == ("(((", "unverified")


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="mode must be one of off, trim, reject"):
        check_insertion("", "x", "", "python", mode="strict")
    with pytest.raises(ValueError, match="unsupported language"):
        check_insertion("", "x", "", "brainfuck")


def test_empty_insertion_is_ok():
    assert check_insertion("x = 1\n", "", "", "python").status == "ok"


def test_checks_of_different_documents_do_not_leak_into_each_other():
    # the parser slot keeps the last tree for incremental reuse; alternating documents must not confuse it
    before, after, good, bad = CASES["python"]
    other_before, other_after = "class A:\n    def m(self):\n        return ", "\n"
    for _ in range(3):
        assert check_insertion(before, good, after, "python").status == "ok"
        assert check_insertion(other_before, "self.x", other_after, "python").status == "ok"
        assert check_insertion(before, bad, after, "python").text == good + "\n"
        assert check_insertion(other_before, "self.x)", other_after, "python").text == "self.x"


def test_concurrent_checks_give_the_same_answers():
    results: list = []

    def worker(language):
        before, after, good, bad = CASES[language]
        for _ in range(5):
            results.append(check_insertion(before, bad, after, language).text == good + "\n")

    threads = [threading.Thread(target=worker, args=(lang,)) for lang in ("python", "python", "c", "go")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 20


def _big_python_file(n_functions: int) -> str:
    return "".join(f"def f{i}(x):\n    y = x + {i}\n    return y\n\n\n" for i in range(n_functions))


def test_checks_on_a_5mb_file_are_correct_and_stay_fast():
    text = _big_python_file(120_000)  # ~5 MB
    assert len(text) > 4_500_000
    cut = text.index("def f60000(")
    cut = text.index("    return y", cut)
    before = "def broken(:\n    pass\n\n" + text[:cut]  # and an error 5 MB away
    after = text[cut:]
    first = check_insertion(before, "    z = y * 2\n", after, "python")
    assert first.status == "ok"
    started = time.perf_counter()
    result = check_insertion(before + "    w = 1\n", "    z = y * (2\n    q = 1\n", after, "python")
    took = time.perf_counter() - started
    assert (result.text, result.status) == ("", "rejected")
    result = check_insertion(before + "    w = 1\n", "    z = y * 2\n    q = (1\n", after, "python")
    assert (result.text, result.status) == ("    z = y * 2\n", "trimmed")
    # generous: a warm check is a few milliseconds (see benchmarks/verify_latency.py); a full parse of
    # the file alone takes over a second
    assert took < 1.0
