"""Cut the public infilling task set from the held-out standard-library files (never from training files).

    python -m benchmarks.make_tasks                    # rewrites benchmarks/data/*.jsonl and MANIFEST.json
    python -m benchmarks.make_tasks --split dev        # rewrites benchmarks/data/dev/ (the tuning set)
    python -m benchmarks.make_tasks --check            # runs every committed task: reference passes, `pass` fails
    python -m benchmarks.make_tasks --out /tmp/tasks --seed 1 --single 20 --multi 10 --file fractions.py

`--split dev` cuts a tuning set from the training files that no stage trains on (pretraining validates on
them, the fine-tune skips them): choose settings such as tau there, report on the held-out set.

Every task has tests, and they are the standard library's own (Lib/test, never read by training). A gap lies
inside a function body of a module that TEST_MODULES pairs with its test modules:
  - single-line: one simple statement that fills its line (assignment, return value, call, raise, ...);
  - multi-line: 2-6 consecutive statements of one block (compound statements included).
The cursor sits at the first line's indentation: the prompt ends with that indentation, the middle runs to
the end of the gap's last line, the suffix starts with its newline.

What the model sees: the enclosing function (methods get their class header) plus whole neighbouring
definitions while they fit in about 40 lines before / after the gap (about what the editor sends at its
default 512 context tokens, and no more than a benchmark canvas holds); always valid Python (`compile`).

What runs (entry_point `module:NAME`, benchmarks/execution.py): the whole module, imported with the middle in
place of the gap, under a few of its own unittest tests: those that execute the gap's first line in the
unmodified module (every test is run once alone, with those lines marked, in the same sandbox as the
benchmark), need at most MAX_TEST_CPU_SECONDS and have no skip condition; at most MAX_TESTS of them. A gap is
kept only if its tests pass with the original middle (twice: flaky tests go) and fail with `pass` in its
place, so the tests really check that gap.

Deterministic for a given Python version (the stdlib and its tests are the input) and --seed, up to the tests
whose CPU time lies at MAX_TEST_CPU_SECONDS (a rerun can put one on the other side: that changes the tasks
whose gaps it reaches, not the whole set, as every seeded order sorts by a hash of each item); MANIFEST.json
records the Python version, the seed and a hash of every file used. A task checks the hashes of its module
and test module when it runs, so it runs only on a Python with exactly those files.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import logging
import math
import statistics
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from benchmarks.execution import MODULE_ENTRY, MODULE_RUNTIME, check_program, run_program
from benchmarks.tasks import Task, load_tasks
from training.corpus import stdlib_files, stdlib_root

log = logging.getLogger("benchmarks.make_tasks")

DATA_DIR = Path(__file__).resolve().parent / "data"
KINDS = ("single-line", "multi-line")
CONTEXT_LINES = 40  # lines of context before / after the gap, in whole definitions
MAX_FUNCTION_LINES = 120
MAX_TESTS = 8  # tests per task: enough to check the gap, few enough to run in a fraction of a second
MAX_TEST_CPU_SECONDS = 0.5  # a test that needs more CPU than this (run alone) checks no task; CPU, not wall
# time: on a busy machine wall time measures the queue for a core, and the set must not depend on it
WORKERS = 2  # test programs running at once
TEST_CPU_SECONDS = 10  # limit of one task's program (they take well under a second)
MAPPING_CPU_SECONDS = 600  # limit of one run of every test of a module, one by one

# stdlib file -> the modules of the stdlib's own test suite that exercise it. Left out: the files whose tests
# need other processes or the network (multiprocessing/connection.py), run only on Windows (nturl2path.py),
# or never reach the file (xml/dom/domreg.py, json's C scanner); distutils, which setuptools replaces with its
# own copy when installed; and files without functions to cut from.
TEST_MODULES = {
    # held-out files: the public set
    "_pydecimal.py": ("test.test_decimal",),
    "asyncio/proactor_events.py": ("test.test_asyncio.test_proactor_events",),
    "asyncio/taskgroups.py": ("test.test_asyncio.test_taskgroups",),
    "compileall.py": ("test.test_compileall",),
    "email/mime/text.py": ("test.test_email.test_email",),
    "encodings/raw_unicode_escape.py": ("test.test_codecs",),
    "encodings/undefined.py": ("test.test_codecs",),
    "encodings/utf_7.py": ("test.test_codecs",),
    "fractions.py": ("test.test_fractions",),
    "glob.py": ("test.test_glob",),
    "hmac.py": ("test.test_hmac",),
    "http/client.py": ("test.test_httplib",),
    "importlib/metadata/_adapters.py": ("test.test_importlib.test_metadata_api",),
    "json/scanner.py": ("test.test_json.test_decode", "test.test_json.test_fail", "test.test_json.test_pass1"),
    "pathlib.py": ("test.test_pathlib",),
    "pickletools.py": ("test.test_pickletools",),
    "re/_compiler.py": ("test.test_re",),
    # dev files: the tuning set
    "base64.py": ("test.test_base64",),
    "code.py": ("test.test_code_module",),
    "dbm/__init__.py": ("test.test_dbm",),
    "heapq.py": ("test.test_heapq",),
    "http/cookiejar.py": ("test.test_http_cookiejar",),
    "importlib/metadata/_functools.py": ("test.test_importlib.test_metadata_api",),
    "importlib/resources/readers.py": ("test.test_importlib.test_reader",),
    "profile.py": ("test.test_profile",),
    "wsgiref/validate.py": ("test.test_wsgiref",),
    "xml/sax/__init__.py": ("test.test_sax",),
}

SIMPLE_STATEMENTS = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Return, ast.Expr, ast.Raise, ast.Assert,
                     ast.Delete, ast.Import, ast.ImportFrom)


@dataclass(frozen=True)
class Gap:
    """A gap inside a function: lines first..last (1-based, inclusive) of the source file."""

    kind: str  # "single-line" or "multi-line"
    first: int
    last: int


@dataclass
class Definition:
    """A function directly in a module or in a top-level class, with what the context needs."""

    rel: str  # source file, relative to the stdlib root
    lines: list[str]  # the file's lines, with line ends
    node: ast.FunctionDef | ast.AsyncFunctionDef
    siblings: list[ast.stmt]  # the body it belongs to (module or class)
    header: str  # class header text for methods, "" for module-level functions
    qualname: str


@dataclass(frozen=True)
class SuiteRun:
    """One test of the stdlib's suite, run alone on the unmodified module (its gap lines marked)."""

    module: str  # the test module, e.g. "test.test_fractions"
    name: str  # "Class.test_method"
    passed: bool  # ran, neither failed nor was skipped, and has no decorator that may skip it elsewhere
    cpu_seconds: float
    lines: frozenset[int]  # the candidate gap lines of the module under test that it executed


@dataclass(frozen=True)
class Candidate:
    """A gap with its context (prompt, middle, suffix) and the tests that check it (from one test module)."""

    definition: Definition
    gap: Gap
    context: tuple[str, str, str]
    tests: tuple[SuiteRun, ...]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.make_tasks", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--split", choices=("heldout", "dev"), default="heldout",
                        help="files to cut from: the held-out benchmark files, or the dev files for tuning")
    parser.add_argument("--out", type=Path, help=f"output folder (default {DATA_DIR}, or its dev/ for --split dev)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--single", type=int, default=None,
                        help="single-line tasks (default 140; 60 for --split dev)")
    parser.add_argument("--multi", type=int, default=None, help="multi-line tasks (default 100; 40 for --split dev)")
    parser.add_argument("--file", action="append", dest="files", metavar="REL",
                        help="cut only from this file of the split (relative to the stdlib, e.g. fractions.py); "
                             "repeatable (default: every file of the split that TEST_MODULES names)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing: run every task of --out (default: the split's committed set) with "
                             "its reference middle and with `pass`, and report the ones that do not pass / fail")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    out = args.out or (DATA_DIR / "dev" if args.split == "dev" else DATA_DIR)
    if args.check:
        return 0 if check_task_files(sorted(out.glob("*.jsonl"))) else 1
    dev = args.split == "dev"
    n_single = args.single if args.single is not None else (60 if dev else 140)
    n_multi = args.multi if args.multi is not None else (40 if dev else 100)
    if n_single < 0 or n_multi < 0:
        parser.error("--single and --multi must be >= 0")
    try:
        sets = build_task_sets(args.seed, n_single, n_multi, split=args.split, files=args.files)
    except ValueError as err:
        parser.error(str(err))
    write_task_sets(sets, out, args.seed, args.split)
    for name, tasks in sets.items():
        print(f"{out / (name + '.jsonl')}: {len(tasks)} tasks")
    return 0


def build_task_sets(seed: int, n_single: int, n_multi: int, split: str = "heldout",
                    files: list[str] | None = None) -> dict[str, list[dict]]:
    """{"stdlib-single-line": [...], "stdlib-multi-line": [...]}: task dicts, deterministic in `seed`.

    split: "heldout" (the public set) or "dev" (the tuning set: names "stdlib-dev-..."). files: only these
    files of the split (default: all that TEST_MODULES names). Fewer tasks than asked when too few gaps pass
    the checks (logged).
    """
    chosen = tested_files(split, files)
    definitions = [d for d in definitions_in(split) if d.rel in chosen]
    gap_lines = {rel: {g.first for d in definitions if d.rel == rel for kind in KINDS for g in gaps(d, kind)}
                 for rel in chosen}
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        runs = dict(zip(chosen, pool.map(lambda rel: map_tests(rel, gap_lines[rel]), chosen)))
    sets = {}
    for kind, count in (("single-line", n_single), ("multi-line", n_multi)):
        pool = [c for d in definitions for g in gaps(d, kind) if (c := candidate(d, g, runs[d.rel], seed))]
        tasks = select_checked(spread_order(pool, seed), count)
        if len(tasks) < count:
            log.warning("%s: only %d of %d tasks: too few gaps whose tests check them, at most a quarter "
                        "of them from one file", kind, len(tasks), count)
        name = f"stdlib-dev-{kind}" if split == "dev" else f"stdlib-{kind}"
        sets[name] = mixed_order(tasks, seed)
    return sets


def tested_files(split: str, files: list[str] | None = None) -> list[str]:
    """The files of `split` that TEST_MODULES names (all, or those of `files`; ValueError for any other)."""
    available = {p.relative_to(stdlib_root()).as_posix() for p in stdlib_files(split)}
    tested = sorted(available & set(TEST_MODULES))
    if files is None:
        return tested
    wrong = sorted(set(files) - set(tested))
    if wrong:
        raise ValueError(f"not a {split} file with tests: {', '.join(wrong)} (choose from {', '.join(tested)})")
    return sorted(set(files))


def mixed_order(tasks: list[dict], seed: int) -> list[dict]:
    """Tasks in a seeded random order (by a hash of their ids), so `--limit N` takes a representative N."""
    return sorted(tasks, key=lambda t: _rank(seed, t["task_id"]))


def _rank(seed: int, key: str) -> str:
    """A seeded pseudo-random sort key of one item. Sorting by it, unlike shuffling the whole list, leaves the
    other items' order alone when one item comes or goes (a test near the CPU limit that falls on the other
    side of it on a rerun changes the tasks that it reaches, not the whole set)."""
    return hashlib.sha256(f"{seed}/{key}".encode()).hexdigest()


def definitions_in(split: str = "heldout"):
    """Every function directly in a module or in a top-level class of the stdlib files of `split`."""
    if split not in ("heldout", "dev"):
        raise ValueError(f"tasks are cut from the heldout or dev files, not {split!r}")
    root = stdlib_root()
    for path in stdlib_files(split):
        rel = path.relative_to(root).as_posix()
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines(keepends=True)
        tree = ast.parse(source)
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield Definition(rel, lines, node, tree.body, "", node.name)
            elif isinstance(node, ast.ClassDef):
                header = "".join(lines[_start(node) - 1:_start(node.body[0]) - 1])
                for member in node.body:
                    if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        yield Definition(rel, lines, member, node.body, header, f"{node.name}.{member.name}")


def gaps(d: Definition, kind: str) -> list[Gap]:
    """Candidate gaps of one kind inside a function, in source order."""
    if d.node.end_lineno - _start(d.node) + 1 > MAX_FUNCTION_LINES:
        return []
    out = []
    for body in _bodies(d.node):
        stmts = body[1:] if _is_docstring(body[0]) else body
        for i, stmt in enumerate(stmts):
            if kind == "single-line":
                if isinstance(stmt, SIMPLE_STATEMENTS) and stmt.lineno == stmt.end_lineno and \
                        _owns_lines(d.lines, stmt, stmt) and _interesting_line(d.lines[stmt.lineno - 1], stmt):
                    out.append(Gap(kind, stmt.lineno, stmt.lineno))
            else:
                for last in stmts[i:]:
                    span = last.end_lineno - _start(stmt) + 1
                    if span > 6:
                        break
                    if span >= 2 and _start(stmt) == stmt.lineno and _owns_lines(d.lines, stmt, last):
                        out.append(Gap(kind, stmt.lineno, last.end_lineno))
    return out


def _bodies(node: ast.AST):
    """Every statement list inside a function (its body, loop/if/try/with bodies, nested functions)."""
    for child in ast.walk(node):
        for field in ("body", "orelse", "finalbody"):
            body = getattr(child, field, None)
            if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
                yield body
        for handler in getattr(child, "handlers", []):
            yield handler.body


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _interesting_line(line: str, stmt: ast.stmt) -> bool:
    """Not trivial (pass, bare return, a docstring) and readable: 10..100 characters, no comment."""
    text = line.strip()
    if _is_docstring(stmt) or "#" in text or text.endswith("\\") or not 10 <= len(text) <= 100:
        return False
    return not (isinstance(stmt, ast.Return) and stmt.value is None)


def _owns_lines(lines: list[str], first: ast.stmt, last: ast.stmt) -> bool:
    """The statements start their first line and end their last line (nothing else shares those lines)."""
    head = lines[first.lineno - 1]
    tail = lines[last.end_lineno - 1]
    return head[:first.col_offset].strip() == "" and tail[last.end_col_offset:].strip() == "" and \
        "\\" not in "".join(lines[first.lineno - 1:last.end_lineno])


def _start(node: ast.stmt) -> int:
    """First line of a statement, decorators included."""
    return min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])


def _split(d: Definition, gap: Gap, before: str, after_lines: list[str]) -> tuple[str, str, str]:
    """(prompt, middle, suffix) around a gap: `before` is the text preceding the gap's first line."""
    first = d.lines[gap.first - 1]
    indent = first[:len(first) - len(first.lstrip())]
    body = "".join(d.lines[gap.first - 1:gap.last])
    middle = body[len(indent):].rstrip("\n")
    return before + indent, middle, "\n" + "".join(after_lines)


def _context(d: Definition, gap: Gap) -> tuple[str, str, str] | None:
    """(prompt, middle, suffix): the function and its neighbours (whole definitions, about CONTEXT_LINES each
    side), or None if that is not valid Python."""
    index = next(i for i, s in enumerate(d.siblings) if s is d.node)
    start = _start(d.node)
    for sibling in reversed(d.siblings[:index]):
        if gap.first - _start(sibling) > CONTEXT_LINES:
            break
        start = _start(sibling)
    end = d.node.end_lineno
    for sibling in d.siblings[index + 1:]:
        if sibling.end_lineno - gap.last > CONTEXT_LINES:
            break
        end = sibling.end_lineno
    before = d.header + "".join(d.lines[start - 1:gap.first - 1])
    prompt, middle, suffix = _split(d, gap, before, d.lines[gap.last:end])
    return (prompt, middle, suffix) if _compiles(prompt + middle + suffix) else None


# --- the tests that check a gap -------------------------------------------------------------------------

# Runs every test of a module's test modules alone, on the unmodified module, recording which candidate gap
# lines each one executes; writes [[test module, "Class.test", passed, guarded, CPU seconds, [lines]], ...] as
# JSON. The module is compiled with `__codila_hits__.add(LINE)` before each statement that starts a candidate
# gap (same line numbers; a line tracer would slow big suites down tenfold). guarded: the test method or a
# class of the test module it belongs to has a decorator that can skip it elsewhere (a platform, a resource,
# a build option): such a test may check nothing on another machine.
_MAPPING_PROGRAM = MODULE_RUNTIME + r'''
import ast, inspect, json, os, re, time, unittest

_GUARD = re.compile(r"skip|requires|platform|cpython_only|bigmem|impl_detail", re.IGNORECASE)
_HITS = set()


class _Instrumented(_Source):
    def __init__(self, name, path, source, lines):
        super().__init__(name, path, source)
        self.lines = lines

    def exec_module(self, module):
        tree = ast.parse(self.source)
        for node in ast.walk(tree):
            for field in ("body", "orelse", "finalbody"):
                body = getattr(node, field, None)
                if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
                    setattr(node, field, self._marked(body))
        module.__file__, module.__codila_hits__ = self.path, _HITS
        exec(compile(ast.fix_missing_locations(tree), self.path, "exec"), module.__dict__)

    def _marked(self, body):
        out = []
        for stmt in body:
            if stmt.lineno in self.lines:
                mark = ast.parse(f"__codila_hits__.add({stmt.lineno})").body[0]
                out.append(ast.copy_location(mark, stmt))
            out.append(stmt)
        return out


def _decorators(obj):
    try:
        lines, _ = inspect.getsourcelines(obj)
    except (OSError, TypeError):
        return ""
    text = []
    for line in lines:
        if line.lstrip().startswith(("def ", "async def ", "class ")):
            break
        text.append(line)
    return "".join(text)


def _guarded(case, method, test_name):
    owners = [getattr(case, method)] + [c for c in case.__mro__ if c.__module__ == test_name]
    return any(_GUARD.search(_decorators(owner)) for owner in owners)


def map_tests(name, file, sha256, test_modules, gap_lines, out):
    out = os.path.abspath(out)  # tests may change the working directory
    path, source = _stdlib_file(file, sha256, "module")
    sys.meta_path.insert(0, _Instrumented(name, path, source, set(gap_lines)))
    sys.modules.pop(name, None)
    _importlib.import_module(name)
    report = []
    for test_name, test_file, test_sha256 in test_modules:
        tests = import_tests(test_name, test_file, test_sha256)
        for attribute, case in sorted(vars(tests).items()):
            if not (isinstance(case, type) and issubclass(case, unittest.TestCase)
                    and case.__module__ == test_name and case.__name__ == attribute):
                continue
            for method in unittest.TestLoader().getTestCaseNames(case):
                _HITS.clear()
                result = unittest.TestResult()
                started = time.process_time()
                unittest.TestSuite([case(method)]).run(result)
                seconds = time.process_time() - started
                passed = result.testsRun == 1 and result.wasSuccessful() and not (
                    result.skipped or result.expectedFailures)
                report.append([test_name, f"{attribute}.{method}", passed, _guarded(case, method, test_name),
                               seconds, sorted(_HITS)])
    with open(out, "w") as f:
        json.dump(report, f)
'''


def map_tests(rel: str, gap_lines: set[int]) -> list[SuiteRun]:
    """Every test of `rel`'s test modules, run alone in the benchmark's sandbox on the unmodified module."""
    modules = [(name, test_module_file(name), sha256_of(test_module_file(name))) for name in TEST_MODULES[rel]]
    program = _MAPPING_PROGRAM + (f"map_tests({module_name(rel)!r}, {rel!r}, {sha256_of(rel)!r}, {modules!r}, "
                                  f"{sorted(gap_lines)!r}, 'tests.json')\n")
    result = run_program(program, timeout_s=MAPPING_CPU_SECONDS, memory_mb=2048, output_file="tests.json")
    if not result.output:
        log.warning("%s: running its tests failed (%s): no tasks from it", rel, result.detail)
        return []
    runs = [SuiteRun(module, name, passed and not guarded, seconds, frozenset(lines))
            for module, name, passed, guarded, seconds, lines in json.loads(result.output)]
    log.info("%s: %d of %d tests pass alone in the sandbox and have no skip conditions (%.1f CPU s)", rel,
             sum(r.passed for r in runs), len(runs), sum(r.cpu_seconds for r in runs))
    return runs


def candidate(d: Definition, gap: Gap, runs: list[SuiteRun], seed: int) -> Candidate | None:
    """The gap with up to MAX_TESTS fast passing tests that execute its first line, from the test module that
    has most of them (a seeded choice), or None if no test reaches it or its context is not valid Python."""
    covering = [r for r in runs if r.passed and r.cpu_seconds <= MAX_TEST_CPU_SECONDS and gap.first in r.lines]
    context = _context(d, gap)
    if not covering or context is None:
        return None
    counts = Counter(r.module for r in covering)
    module = min(counts, key=lambda m: (-counts[m], m))
    tests = [r for r in covering if r.module == module]
    chosen = sorted(tests, key=lambda r: _rank(seed, f"{d.rel}/{gap}/{r.name}"))[:MAX_TESTS]
    return Candidate(d, gap, context, tuple(r for r in tests if r in chosen))


def spread_order(pool: list[Candidate], seed: int) -> list[Candidate]:
    """The candidates in a seeded order that visits every function once before any function twice."""
    def key(c: Candidate) -> str:
        return _rank(seed, f"{c.definition.rel}/{c.definition.qualname}/{c.gap}")

    order = sorted(pool, key=key)
    seen: Counter = Counter()
    ranked = []
    for c in order:
        function = (c.definition.rel, c.definition.qualname)
        ranked.append((seen[function], key(c), c))
        seen[function] += 1
    return [c for _, _, c in sorted(ranked, key=lambda r: r[:2])]


def select_checked(order: list[Candidate], count: int) -> list[dict]:
    """The first `count` candidates of `order` whose tests check their gap, at most a quarter from one file."""
    per_file = max(1, math.ceil(count / 4))
    accepted: list[dict] = []
    files: Counter = Counter()
    rejected: Counter = Counter()
    position = 0
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        while len(accepted) < count and position < len(order):
            batch: list[dict] = []
            pending = Counter(files)
            while position < len(order) and len(batch) < count - len(accepted):
                c = order[position]
                position += 1
                if pending[c.definition.rel] < per_file:
                    pending[c.definition.rel] += 1
                    batch.append(module_task(c))
            for task, check in zip(batch, pool.map(check_task, batch)):
                if not check.ok:
                    log.debug("%s: %s", task["task_id"], check.why)
                    rejected[check.why.split(":")[0]] += 1
                else:  # the batch kept each file within its share
                    accepted.append(task)
                    files[_file_of(task)] += 1
    log.info("%d tasks; gaps rejected: %s", len(accepted),
             ", ".join(f"{n} {why}" for why, n in sorted(rejected.items())) or "none")
    return accepted


def module_task(c: Candidate) -> dict:
    """The task record of a candidate: the editor's context, the reference middle and the tests."""
    d, gap = c.definition, c.gap
    prompt, middle, suffix = c.context
    test_name = c.tests[0].module
    test_rel = test_module_file(test_name)
    names = "".join(f"        {r.name!r},\n" for r in c.tests)
    test = (f"install_module({module_name(d.rel)!r}, {d.rel!r}, {sha256_of(d.rel)!r}, {gap.first}, {gap.last})\n"
            f"tests = import_tests({test_name!r}, {test_rel!r}, {sha256_of(test_rel)!r})\n"
            f"\n\ndef check(candidate):\n    run_tests(tests, [\n{names}    ])\n")
    span = f"L{gap.first}" if gap.first == gap.last else f"L{gap.first}-{gap.last}"
    return {"task_id": f"stdlib/{gap.kind}/{d.rel}/{d.qualname}/{span}", "prompt": prompt, "suffix": suffix,
            "canonical_solution": middle, "test": test, "entry_point": MODULE_ENTRY + module_name(d.rel),
            "language": "python", "source": f"{d.rel}:{gap.first}"}


@dataclass(frozen=True)
class TaskCheck:
    """Whether a task's tests check its gap; the time of one run of them with the reference middle (the
    faster of two), wall and CPU."""

    ok: bool
    why: str  # "" when ok
    seconds: float = 0.0
    cpu_seconds: float = 0.0


def check_task(task: dict | Task) -> TaskCheck:
    """The task's tests pass with its reference middle, twice, and fail with `pass` in its place."""
    t = task if isinstance(task, Task) else Task(task["task_id"], task["prompt"], task["suffix"],
                                                 task["canonical_solution"], task["test"], task["entry_point"])

    def run(middle: str):
        return run_program(check_program(t.prompt, middle, t.suffix, t.test, t.entry_point),
                           timeout_s=TEST_CPU_SECONDS)

    reference = run(t.canonical_solution)
    if not reference.passed:
        return TaskCheck(False, f"fails with its reference: {reference.detail}")
    if run("pass").passed:
        return TaskCheck(False, "passes with `pass` in place of the middle")
    again = run(t.canonical_solution)
    if not again.passed:
        return TaskCheck(False, f"fails with its reference the second time: {again.detail}")
    faster = min(reference, again, key=lambda r: r.seconds)
    return TaskCheck(True, "", faster.seconds, faster.cpu_seconds)


def check_task_files(paths: list[Path]) -> bool:
    """Run every task of `paths` through check_task; log what fails and how long one test run takes."""
    tasks = [t for t in load_tasks(paths) if t.executable] if paths else []
    if not tasks:
        log.error("no tasks with tests in %s", ", ".join(map(str, paths)) or "an empty folder")
        return False
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        checks = list(pool.map(check_task, tasks))
    for task, check in zip(tasks, checks):
        if not check.ok:
            log.error("%s: %s", task.task_id, check.why)
    good = [c for c in checks if c.ok]
    if good:
        wall, cpu = [c.seconds for c in good], [c.cpu_seconds for c in good]
        log.info("%d of %d tasks pass with their reference and fail with `pass`; one run of a task's tests: "
                 "median %.2f s wall, %.2f s CPU; all %d tasks once: %.0f s wall, %.0f s CPU", len(good),
                 len(tasks), statistics.median(wall), statistics.median(cpu), len(good), sum(wall), sum(cpu))
    return len(good) == len(tasks)


def _file_of(task: dict) -> str:
    return task["source"].rsplit(":", 1)[0]


def module_name(rel: str) -> str:
    """fractions.py -> fractions; asyncio/taskgroups.py -> asyncio.taskgroups; xml/sax/__init__.py -> xml.sax."""
    parts = rel.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_module_file(name: str) -> str:
    """The file of a test module, relative to the stdlib root (a module or a package's __init__.py)."""
    rel = name.replace(".", "/")
    return f"{rel}.py" if (stdlib_root() / f"{rel}.py").is_file() else f"{rel}/__init__.py"


def sha256_of(rel: str) -> str:
    return hashlib.sha256((stdlib_root() / rel).read_bytes()).hexdigest()


def _compiles(source: str) -> bool:
    try:
        compile(source, "<task>", "exec", dont_inherit=True)
    except SyntaxError:
        return False
    return True


def write_task_sets(sets: dict[str, list[dict]], out: Path, seed: int, split: str = "heldout") -> None:
    """One .jsonl per set plus MANIFEST.json (Python version, seed, hashes of the modules and test modules)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, tasks in sets.items():
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for task in tasks:
                f.write(json.dumps(task, ensure_ascii=False) + "\n")
    sources = sorted({_file_of(t) for tasks in sets.values() for t in tasks})
    tests = sorted({test_module_file(m) for rel in sources for m in TEST_MODULES[rel]})
    manifest = {
        "generator": "python -m benchmarks.make_tasks" + (" --split dev" if split == "dev" else ""),
        "split": split,
        "python": sys.version.split()[0],
        "seed": seed,
        "sets": {name: {"tasks": len(tasks), "with_tests": sum("test" in t for t in tasks)}
                 for name, tasks in sets.items()},
        "sources": {rel: sha256_of(rel) for rel in sources},
        "tests": {rel: sha256_of(rel) for rel in tests},
    }
    if split == "dev":  # the split hashes absolute paths (training.corpus.split_validation): record it
        manifest["dev_files"] = [p.relative_to(stdlib_root()).as_posix() for p in stdlib_files("dev")]
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
