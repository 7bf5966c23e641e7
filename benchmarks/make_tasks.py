"""Cut the public infilling task set from the held-out standard-library files (never from training files).

    python -m benchmarks.make_tasks                    # rewrites benchmarks/data/*.jsonl and MANIFEST.json
    python -m benchmarks.make_tasks --split dev        # rewrites benchmarks/data/dev/ (the tuning set)
    python -m benchmarks.make_tasks --out /tmp/tasks --seed 1 --single 20 --multi 10

`--split dev` cuts a tuning set from the training files that no stage trains on (pretraining validates on
them, the fine-tune skips them): choose settings such as tau there, report on the held-out set. It has no
tasks with tests (the curated functions all live in held-out files).

Tasks are HumanEval-Infilling JSON lines. A gap lies inside a function body:
  - single-line: one simple statement that fills its line (assignment, return value, call, raise, ...);
  - multi-line: 2-6 consecutive statements of one block (compound statements included).
The cursor sits at the first line's indentation: the prompt ends with that indentation, the middle runs to
the end of the gap's last line, the suffix starts with its newline.

Context: the enclosing function (methods get their class header) plus whole neighbouring definitions while
they fit in about 40 lines before / after the gap; always valid Python (checked with `compile`).

Executable tasks (with `test` + `entry_point`): self-contained module-level functions from a curated list.
The prompt is the function's module-level dependencies (imports, constants, helpers; found from the names it
uses) followed by the function up to the gap. The tests call it on curated inputs; expected values come from
running the original function. A gap is kept only if the tests pass with the original middle and fail
with `pass` in its place, so the tests really check that gap.

Deterministic for a given Python version (the stdlib is the input) and --seed; MANIFEST.json records the
Python version, the seed and a hash of every source file.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import functools
import hashlib
import io
import json
import math
import random
import symtable
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from benchmarks.execution import check_program, run_program
from training.corpus import stdlib_files, stdlib_root

DATA_DIR = Path(__file__).resolve().parent / "data"
CONTEXT_LINES = 40  # lines of context before / after the gap, in whole definitions
MAX_FUNCTION_LINES = 120
MAX_DEPENDENCY_LINES = 160  # executable tasks: helpers the function calls come along

# file -> function -> argument lists (Python source) to call it with. Curated: deterministic, cheap,
# platform-independent, every result a literal that round-trips through repr.
EXECUTABLE = {
    "_pydecimal.py": {
        "_decimal_lshift_exact": ["12345, 2", "12300, -2", "12345, -2", "0, 5", "10**20, -20"],
        "_sqrt_nearest": ["100, 1", "2, 1", "10**20, 7", "99, 3", "10**30, 10**14"],
        "_rshift_nearest": ["100, 3", "-100, 3", "7, 1", "12, 2", "2**70 + 5, 64"],
        "_div_nearest": ["7, 2", "-7, 2", "100, 7", "5, 10", "-15, 4"],
        "_ilog": ["2 * 10**8, 10**8", "10**8 * 15 // 10, 10**8", "10**8 // 3, 10**8, 10", "10**12, 10**8"],
        "_dlog10": ["2, 0, 10", "12345, -3, 12", "7, 5, 8", "10, 0, 6"],
        "_dlog": ["2, 0, 10", "12345, -3, 12", "7, 5, 8", "1, 0, 5"],
        "_iexp": ["10**7, 10**8", "-5 * 10**6, 10**8", "3 * 10**7, 10**8, 10", "0, 10**8"],
        "_dexp": ["1, 0, 10", "12, -1, 12", "-23, -1, 8", "5, 1, 6"],
        "_dpower": ["2, 0, 5, -1, 10", "3, 0, 2, 0, 8", "15, -1, -3, 0, 12", "7, 0, 1, -2, 9"],
        "_log10_lb": ["12345", "7", "10**10", "1"],
        "_format_sign": ["True, {'sign': '-'}", "False, {'sign': '+'}", "False, {'sign': ' '}",
                         "False, {'sign': '-'}", "True, {'sign': ' '}"],
        "_format_align": [
            "'-', '123', {'minimumwidth': 8, 'fill': '*', 'align': '>', 'zeropad': False}",
            "'', 'ab', {'minimumwidth': 6, 'fill': ' ', 'align': '^', 'zeropad': False}",
            "'+', '7', {'minimumwidth': 4, 'fill': '0', 'align': '=', 'zeropad': False}",
            "'', 'xyz', {'minimumwidth': 5, 'fill': '.', 'align': '<', 'zeropad': False}",
            "'-', '5', {'minimumwidth': 3, 'fill': ' ', 'align': '^', 'zeropad': False}"],
        "_insert_thousands_sep": [
            "'1234567', {'thousands_sep': ',', 'grouping': [3, 0]}",
            "'12', {'thousands_sep': ',', 'grouping': [3, 0]}, 5",
            "'123456789', {'thousands_sep': '.', 'grouping': [3, 2, 0]}",
            "'1234', {'thousands_sep': '', 'grouping': [3, 0]}"],
        "_parse_format_specifier": ["''", "'>10.3f'", "'+,d'", "'*^20,.2%'", "'_x'", "'010.4e'"],
    },
    "glob.py": {
        "has_magic": ["'*.py'", "'abc'", "b'a[b'", "'x?'", "b'plain'"],
        "escape": ["'a[b]*?'", "'plain'", "b'*x'", "'[]'"],
        "_isrecursive": ["'**'", "b'**'", "'*'"],
    },
    "nturl2path.py": {
        "url2pathname": ["'///C:/foo/bar/spam.foo'", "'//host/share/dir/file.txt'", "'C|/x/y'",
                         "'foo/bar%20baz'", "'///C|/a%20b'"],
        "pathname2url": ["r'C:\\foo\\bar\\spam.foo'", "r'\\\\host\\share\\dir'", "r'rel\\path x'", "'C:'",
                         "r'C:\\a b'"],
    },
    "re/_compiler.py": {
        "_generate_overlap_table": ["[1, 2, 3, 1, 2, 4]", "[1, 1, 1, 1]", "[5]", "[1, 2, 1, 2, 1, 3]", "[]"],
    },
    "http/client.py": {
        "_strip_ipv6_iface": ["b'[fe80::1%eth0]'", "b'example.com'", "b'[::1]'"],
        "_encode": ["'abc'", "'caf\\xe9'", "'snow \\u2603'"],
    },
    "xml/dom/domreg.py": {
        "_parse_feature_string": ["'core 2.0 xml'", "'core xml 1.0'", "''", "'2.0 core'", "'a b c'"],
    },
    "pickletools.py": {
        "read_uint1": ["io.BytesIO(b'\\xff')", "io.BytesIO(b'')"],
        "read_uint2": ["io.BytesIO(b'\\xff\\x00')", "io.BytesIO(b'\\xff\\xff')", "io.BytesIO(b'\\x01')"],
        "read_int4": ["io.BytesIO(b'\\xff\\x00\\x00\\x00')", "io.BytesIO(b'\\x00\\x00\\x00\\x80')",
                      "io.BytesIO(b'\\x00')"],
        "read_stringnl": ["io.BytesIO(b\"'abcd'\\nefg\\n\")", "io.BytesIO(b'\\n')",
                          "io.BytesIO(b'\\n'), True, False", "io.BytesIO(b\"''\\n\")", "io.BytesIO(b'\"abcd\"')",
                          "io.BytesIO(b\"'a\\\\n\\\\x00b'\\n\")", "io.BytesIO(b\"'ab\\n\")"],
        "read_string1": ["io.BytesIO(b'\\x00')", "io.BytesIO(b'\\x03abcdef')", "io.BytesIO(b'\\x05ab')"],
        "read_bytes1": ["io.BytesIO(b'\\x00')", "io.BytesIO(b'\\x03abcdef')", "io.BytesIO(b'\\x05ab')"],
        "read_unicodestringnl": ["io.BytesIO(b'abc\\\\uabcd\\njunk')", "io.BytesIO(b'abc')"],
        "read_decimalnl_short": ["io.BytesIO(b'1234\\n56')", "io.BytesIO(b'00\\n')", "io.BytesIO(b'01\\n')",
                                 "io.BytesIO(b'1234L\\n56')"],
        "read_decimalnl_long": ["io.BytesIO(b'1234L\\n56')", "io.BytesIO(b'123456789012345678901234L\\n6')"],
        "read_floatnl": ["io.BytesIO(b'-1.25\\n6')", "io.BytesIO(b'3e2\\n')"],
        "read_long1": ["io.BytesIO(b'\\x00')", "io.BytesIO(b'\\x02\\xff\\x00')", "io.BytesIO(b'\\x02\\xff\\x7f')",
                       "io.BytesIO(b'\\x02\\x00\\xff')", "io.BytesIO(b'\\x02\\x00\\x80')"],
    },
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.make_tasks", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--split", choices=("heldout", "dev"), default="heldout",
                        help="files to cut from: the held-out benchmark files, or the dev files for tuning")
    parser.add_argument("--out", type=Path, help=f"output folder (default {DATA_DIR}, or its dev/ for --split dev)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--single", type=int, default=90, help="single-line tasks (default 90)")
    parser.add_argument("--multi", type=int, default=60, help="multi-line tasks (default 60)")
    parser.add_argument("--executable-share", type=float, default=0.3,
                        help="share of each set with tests, as far as the curated functions allow (default 0.3)")
    args = parser.parse_args(argv)
    if not 0 <= args.executable_share <= 1 or args.single < 0 or args.multi < 0:
        parser.error("counts must be >= 0 and --executable-share in [0, 1]")
    out = args.out or (DATA_DIR / "dev" if args.split == "dev" else DATA_DIR)
    sets = build_task_sets(args.seed, args.single, args.multi, args.executable_share, split=args.split)
    write_task_sets(sets, out, args.seed, args.split)
    for name, tasks in sets.items():
        tested = sum("test" in t for t in tasks)
        print(f"{out / (name + '.jsonl')}: {len(tasks)} tasks, {tested} with tests")
    return 0


def build_task_sets(seed: int, n_single: int, n_multi: int, executable_share: float,
                    validate: bool = True, split: str = "heldout") -> dict[str, list[dict]]:
    """{"stdlib-single-line": [...], "stdlib-multi-line": [...]}: task dicts, deterministic in `seed`.

    validate=False skips running the executable tasks' tests (faster; for checks of determinism only).
    split: "heldout" (the public set) or "dev" (the tuning set: names "stdlib-dev-...", no tests).
    """
    rng = random.Random(seed)
    definitions = list(definitions_in(split))
    executable_names = {(rel, name) for rel, funcs in EXECUTABLE.items() for name in funcs}
    sets = {}
    for kind, count in (("single-line", n_single), ("multi-line", n_multi)):
        n_exec = round(count * executable_share)
        tested = executable_tasks(definitions, kind, n_exec, rng, validate)
        plain_pool = [(d, g) for d in definitions if (d.rel, d.qualname) not in executable_names
                      for g in gaps(d, kind)]
        plain = [_plain_task(d, g) for d, g in _spread(plain_pool, count - len(tested), rng)]
        name = f"stdlib-dev-{kind}" if split == "dev" else f"stdlib-{kind}"
        sets[name] = mixed_order(tested + [t for t in plain if t is not None], seed)
    return sets


def mixed_order(tasks: list[dict], seed: int) -> list[dict]:
    """Tasks in a seeded random order (from sorted ids), so `--limit N` takes a representative N."""
    ordered = sorted(tasks, key=lambda t: t["task_id"])
    random.Random(seed).shuffle(ordered)
    return ordered


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


def _plain_task(d: Definition, gap: Gap) -> dict | None:
    """A task with the function and its neighbours (whole definitions, about CONTEXT_LINES each side)."""
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
    if not _compiles(prompt + middle + suffix):
        return None
    return _record(d, gap, prompt, middle, suffix)


def _record(d: Definition, gap: Gap, prompt: str, middle: str, suffix: str, **extra) -> dict:
    span = f"L{gap.first}" if gap.first == gap.last else f"L{gap.first}-{gap.last}"
    return {"task_id": f"stdlib/{gap.kind}/{d.rel}/{d.qualname}/{span}", "prompt": prompt, "suffix": suffix,
            "canonical_solution": middle, **extra, "language": "python", "source": f"{d.rel}:{gap.first}"}


def _spread(pool: list, count: int, rng: random.Random) -> list:
    """`count` items sampled from (definition, gap) pairs, at most one per function while that suffices,
    and at most a quarter of them from any one file."""
    order = pool[:]
    rng.shuffle(order)
    per_file = max(1, math.ceil(count / 4))
    chosen, used_functions, files = [], set(), {}
    for one_per_function in (True, False):
        for d, gap in order:
            if len(chosen) >= count:
                return chosen
            key = (d.rel, d.qualname)
            if (one_per_function and key in used_functions) or files.get(d.rel, 0) >= per_file or \
                    any(gap == g and d.rel == e.rel for e, g in chosen):
                continue
            chosen.append((d, gap))
            used_functions.add(key)
            files[d.rel] = files.get(d.rel, 0) + 1
    return chosen


# --- executable tasks ---------------------------------------------------------------------------------


def executable_tasks(definitions: list[Definition], kind: str, count: int, rng: random.Random,
                     validate: bool) -> list[dict]:
    """Up to `count` tasks with tests, spread over the curated functions; each gap checked by its tests."""
    candidates = []  # (definition, gap, program pieces) in a seeded order, round-robin over functions
    per_function = []
    for d in definitions:
        calls = EXECUTABLE.get(d.rel, {}).get(d.qualname)
        if calls is None:
            continue
        setup = _executable_setup(d, calls)
        if setup is None:
            continue
        function_gaps = gaps(d, kind)
        rng.shuffle(function_gaps)
        per_function.append([(d, g, setup) for g in function_gaps])
    while any(per_function):
        for queue in per_function:
            if queue:
                candidates.append(queue.pop(0))
    candidates = candidates[:count * 3]  # enough spares for gaps the tests cannot see
    tasks = [_executable_task(d, g, setup) for d, g, setup in candidates]
    if validate:
        with ThreadPoolExecutor(max_workers=4) as pool:
            keep = list(pool.map(_tests_see_gap, tasks))
        tasks = [t for t, ok in zip(tasks, keep) if ok]
    return tasks[:count]


def _executable_setup(d: Definition, calls: list[str]) -> tuple[str, str] | None:
    """(dependencies source, test source) for a curated function, or None if it is not self-contained."""
    deps = dependency_source(d)
    if deps is None:
        return None
    function = "".join(d.lines[_start(d.node) - 1:d.node.end_lineno])
    namespace: dict = {"__name__": "make_tasks_reference"}
    exec(compile(deps + function, f"<{d.rel}>", "exec"), namespace)  # trusted stdlib code, curated inputs
    checks = []
    for args in calls:
        arguments = f"candidate({args})"
        try:
            value = eval(f"{d.node.name}({args})", {**namespace, "io": io})
        except Exception as err:  # the function's documented error for this input
            name = type(err).__name__
            if getattr(builtins, name, None) is not type(err):
                raise ValueError(f"{d.rel}:{d.qualname}({args}) raised a non-builtin {name}") from None
            checks.append(f"    try:\n        {arguments}\n    except {name}:\n        pass\n"
                          f"    else:\n        raise AssertionError({arguments!r} + ' should raise {name}')\n")
            continue
        literal = repr(value)
        if eval(literal, {}) != value:
            raise ValueError(f"{d.rel}:{d.qualname}({args}) returned {literal}, which is not a literal")
        checks.append(f"    assert {arguments} == {literal}, {arguments!r}\n")
    test = "def check(candidate):\n    import io\n" + "".join(checks)
    return deps, test


def _executable_task(d: Definition, gap: Gap, setup: tuple[str, str]) -> dict:
    deps, test = setup
    before = deps + "".join(d.lines[_start(d.node) - 1:gap.first - 1])
    prompt, middle, suffix = _split(d, gap, before, d.lines[gap.last:d.node.end_lineno])
    return _record(d, gap, prompt, middle, suffix, test=test, entry_point=d.node.name)


def _tests_see_gap(task: dict) -> bool:
    """The tests pass with the real middle and fail with `pass` in its place."""
    def run(middle: str) -> bool:
        program = check_program(task["prompt"], middle, task["suffix"], task["test"], task["entry_point"])
        return run_program(program, timeout_s=10).passed

    return run(task["canonical_solution"]) and not run("pass")


def dependency_source(d: Definition) -> str | None:
    """Source of the module-level statements a function needs (transitively), in file order, or None if
    that needs a relative import or is longer than MAX_DEPENDENCY_LINES."""
    statements = [(s, bound) for s, bound in _module_statements(d.rel, "".join(d.lines))
                  if not (isinstance(s, ast.FunctionDef) and s.name == d.node.name)]
    needed = _names_used(d.node)
    chosen: set[int] = set()
    changed = True
    while changed:
        changed = False
        for i, (stmt, bound) in enumerate(statements):
            if i not in chosen and bound & needed:
                chosen.add(i)
                needed |= _names_used(stmt)
                changed = True
    picked = [statements[i][0] for i in sorted(chosen)]
    if any(isinstance(s, ast.ImportFrom) and s.level for s in picked):
        return None
    text = "".join("".join(d.lines[_start(s) - 1:s.end_lineno]) + "\n" for s in picked)
    if text.count("\n") > MAX_DEPENDENCY_LINES:
        return None
    return text + ("\n" if text else "")


@functools.cache
def _module_statements(rel: str, source: str) -> list[tuple[ast.stmt, frozenset[str]]]:
    """Top-level statements of a module with the names each binds (computed once per file)."""
    return [(stmt, frozenset(_names_bound(stmt))) for stmt in ast.parse(source).body]


def _names_used(node: ast.stmt) -> set[str]:
    """Global names a top-level statement reads (its functions' locals and parameters excluded)."""
    table = symtable.symtable(ast.unparse(node), "<statement>", "exec")
    names, stack = set(), [table]
    while stack:
        scope = stack.pop()
        stack += scope.get_children()
        for symbol in scope.get_symbols():
            if not symbol.is_referenced():
                continue
            if scope.get_type() == "module" or symbol.is_global() or \
                    (scope.get_type() == "class" and not symbol.is_local()):
                names.add(symbol.get_name())
    return names - set(dir(builtins))


def _names_bound(stmt: ast.stmt) -> set[str]:
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {stmt.name}
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in stmt.names}
    bound = set()
    for node in ast.walk(stmt):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return bound


def _compiles(source: str) -> bool:
    try:
        compile(source, "<task>", "exec", dont_inherit=True)
    except SyntaxError:
        return False
    return True


def write_task_sets(sets: dict[str, list[dict]], out: Path, seed: int, split: str = "heldout") -> None:
    """One .jsonl per set plus MANIFEST.json (Python version, seed, source file hashes)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, tasks in sets.items():
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for task in tasks:
                f.write(json.dumps(task, ensure_ascii=False) + "\n")
    root = stdlib_root()
    sources = sorted({t["source"].split(":")[0] for tasks in sets.values() for t in tasks})
    manifest = {
        "generator": "python -m benchmarks.make_tasks" + (" --split dev" if split == "dev" else ""),
        "split": split,
        "python": sys.version.split()[0],
        "seed": seed,
        "sets": {name: {"tasks": len(tasks), "with_tests": sum("test" in t for t in tasks)}
                 for name, tasks in sets.items()},
        "sources": {rel: hashlib.sha256((root / rel).read_bytes()).hexdigest() for rel in sources},
    }
    if split == "dev":  # the split hashes absolute paths (training.data.split_validation): record it
        manifest["dev_files"] = [p.relative_to(root).as_posix() for p in stdlib_files("dev")]
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
