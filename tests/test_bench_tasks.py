"""benchmarks/make_tasks.py: the public task set is cut from held-out files only (the tuning set only from the
training files no stage trains on), every task is checked by the standard library's own tests, and the
generator is deterministic.

The full check of every committed task (reference passes, `pass` fails) is `python -m benchmarks.make_tasks
--check` (and `--split dev --check`); here a spread sample of them runs."""

import functools
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import benchmarks.make_tasks as make_tasks
from benchmarks.execution import MODULE_ENTRY
from training.corpus import is_heldout, stdlib_files, stdlib_root

DATA = Path(__file__).resolve().parents[1] / "benchmarks" / "data"
SETS = ("stdlib-single-line", "stdlib-multi-line")
DEV_SETS = ("stdlib-dev-single-line", "stdlib-dev-multi-line")
SMALL = ["fractions.py", "glob.py"]  # held-out files with small, fast test modules


def _committed(name: str) -> list[dict]:
    folder = DATA / "dev" if name in DEV_SETS else DATA
    return [json.loads(line) for line in (folder / f"{name}.jsonl").read_text().splitlines()]


def _manifest(folder: Path = DATA) -> dict:
    return json.loads((folder / "MANIFEST.json").read_text())


def _same_python(manifest: dict) -> None:
    if manifest["python"] != sys.version.split()[0]:
        pytest.skip(f"task set made with Python {manifest['python']}; the stdlib and its tests here differ")


@pytest.fixture(scope="module")
def mapping():
    """make_tasks.map_tests, run once per file for all builds of this module (it runs whole test modules)."""
    if not (stdlib_root() / "test" / "test_fractions.py").is_file():
        pytest.skip("this Python has no test package (Lib/test)")
    original, runs = make_tasks.map_tests, {}

    def cached(rel, gap_lines):
        if rel not in runs:
            runs[rel] = original(rel, gap_lines)
        return runs[rel]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(make_tasks, "map_tests", cached)
        yield runs


@pytest.fixture(scope="module")
def small_sets(mapping):
    return make_tasks.build_task_sets(seed=0, n_single=2, n_multi=2, files=SMALL)


@pytest.mark.slow
def test_generation_is_deterministic_and_seeded(small_sets):
    assert [len(small_sets[name]) for name in SETS] == [2, 2]
    assert make_tasks.build_task_sets(seed=0, n_single=2, n_multi=2, files=SMALL) == small_sets
    assert make_tasks.build_task_sets(seed=1, n_single=2, n_multi=2, files=SMALL) != small_sets


def _splits_read(monkeypatch, **kw) -> tuple[set[str], dict]:
    """The stdlib splits build_task_sets(seed=3, **kw) reads, and the sets it builds."""
    splits = []

    def spy(split="train", root=None):
        splits.append(split)
        return stdlib_files(split, root)

    monkeypatch.setattr(make_tasks, "stdlib_files", spy)
    sets = make_tasks.build_task_sets(seed=3, n_single=1, n_multi=1, **kw)
    assert splits
    return set(splits), sets


def test_generator_reads_only_heldout_files(monkeypatch, mapping):
    splits, sets = _splits_read(monkeypatch, files=["fractions.py"])
    assert splits == {"heldout"}
    assert [len(sets[name]) for name in SETS] == [1, 1]


def test_files_outside_the_split_or_without_tests_are_refused():
    with pytest.raises(ValueError, match="not a heldout file with tests: base64.py"):
        make_tasks.tested_files("heldout", ["base64.py"])  # a training (dev) file
    with pytest.raises(ValueError, match="not a dev file with tests: fractions.py"):
        make_tasks.tested_files("dev", ["fractions.py"])
    with pytest.raises(ValueError, match="nturl2path.py"):
        make_tasks.tested_files("heldout", ["nturl2path.py"])  # held out, but its tests run only on Windows


def test_test_modules_pair_heldout_and_dev_files_with_existing_test_modules():
    heldout = {p.relative_to(stdlib_root()).as_posix() for p in stdlib_files("heldout")}
    train = {p.relative_to(stdlib_root()).as_posix() for p in stdlib_files("train")}
    public = {rel for rel in make_tasks.TEST_MODULES if rel in heldout}
    assert len(public) >= 10 and all(rel in heldout | train for rel in make_tasks.TEST_MODULES)
    for modules in make_tasks.TEST_MODULES.values():
        for module in modules:
            assert module.startswith("test.")  # Lib/test: excluded from every training split
            if (stdlib_root() / "test").is_dir():
                assert (stdlib_root() / make_tasks.test_module_file(module)).is_file(), module


@pytest.mark.parametrize("name", SETS)
def test_every_task_comes_from_a_heldout_file(name, small_sets):
    train = {p.relative_to(stdlib_root()).as_posix() for p in stdlib_files("train")}
    for task in _committed(name) + small_sets[name]:
        source = task["source"].split(":")[0]
        assert is_heldout(source) and source not in train, task["task_id"]


def _gap(task: dict) -> tuple[int, int]:
    first, last = re.search(r"install_module\('[\w.]+', '[\w/.]+', '\w+', (\d+), (\d+)\)", task["test"]).groups()
    return int(first), int(last)


@pytest.mark.parametrize("name", SETS + DEV_SETS)
def test_tasks_have_the_promised_shape(name, small_sets):
    kind = name.removeprefix("stdlib-").removeprefix("dev-")
    for task in _committed(name) + small_sets.get(name, []):
        middle = task["canonical_solution"]
        lines = middle.count("\n") + 1
        assert (lines == 1) if kind == "single-line" else (2 <= lines <= 6), task["task_id"]
        assert task["prompt"].endswith((" ", "\t")) or task["prompt"].endswith("\n")  # cursor at the indentation
        assert task["suffix"].startswith("\n")
        compile(task["prompt"] + middle + task["suffix"], task["task_id"], "exec")
        rel, first = task["source"].rsplit(":", 1)
        assert task["entry_point"] == MODULE_ENTRY + make_tasks.module_name(rel)
        assert _gap(task)[0] == int(first) and "def check(candidate)" in task["test"]


@pytest.mark.parametrize("name", SETS + DEV_SETS)
def test_the_reference_is_the_files_own_text_and_the_context_an_excerpt_around_it(name):
    """With the reference the program runs the unmodified module; the prompt ends with the lines just above
    the gap and the suffix starts with the lines just below, as in the editor."""
    manifest = _manifest(DATA / "dev" if name in DEV_SETS else DATA)
    _same_python(manifest)
    for task in _committed(name):
        rel = task["source"].rsplit(":", 1)[0]
        lines = (stdlib_root() / rel).read_text(encoding="utf-8").splitlines(keepends=True)
        first, last = _gap(task)
        indent = lines[first - 1][:len(lines[first - 1]) - len(lines[first - 1].lstrip())]
        assert "".join(lines[first - 1:last]) == indent + task["canonical_solution"] + "\n", task["task_id"]
        assert task["prompt"].endswith(lines[first - 2] + indent), task["task_id"]
        assert ("\n" + "".join(lines[last:])).startswith(task["suffix"]), task["task_id"]


@pytest.mark.parametrize("folder, names", [(DATA, SETS), (DATA / "dev", DEV_SETS)])
def test_committed_sets_match_the_manifest(folder, names):
    manifest = _manifest(folder)
    tasks = [t for name in names for t in _committed(name)]
    for name in names:
        assert manifest["sets"][name] == {"tasks": len(_committed(name)), "with_tests": len(_committed(name))}
    assert set(manifest["sources"]) == {t["source"].rsplit(":", 1)[0] for t in tasks}
    used = {re.search(r"import_tests\('[\w.]+', '([\w/.]+)'", t["test"]).group(1) for t in tasks}
    assert used <= set(manifest["tests"])
    if manifest["python"] == sys.version.split()[0]:
        for rel, sha256 in {**manifest["sources"], **manifest["tests"]}.items():
            assert make_tasks.sha256_of(rel) == sha256, rel


@functools.cache
def _definitions(split: str) -> dict[tuple[str, str], make_tasks.Definition]:
    return {(d.rel, d.qualname): d for d in make_tasks.definitions_in(split)}


def _rebuilt(task: dict, split: str) -> dict:
    """The task as the generator makes it from its gap and its tests."""
    _, kind, *_ = task["task_id"].split("/")
    rel, _ = task["source"].rsplit(":", 1)
    d = _definitions(split)[rel, task["task_id"].split("/")[-2]]
    gap = make_tasks.Gap(kind, *_gap(task))
    module = re.search(r"import_tests\('([\w.]+)'", task["test"]).group(1)
    tests = [make_tasks.SuiteRun(module, name, True, 0.0, frozenset())
             for name in re.findall(r"^        '([\w.]+)',$", task["test"], re.MULTILINE)]
    return make_tasks.module_task(make_tasks.Candidate(d, gap, make_tasks._context(d, gap), tuple(tests)))


def test_committed_tasks_are_what_the_generator_makes_on_this_python():
    manifest = _manifest()
    _same_python(manifest)
    for name in SETS:
        committed = _committed(name)
        assert committed == make_tasks.mixed_order(committed, manifest["seed"])  # the order is the seeded one
        for task in committed:
            assert _rebuilt(task, "heldout") == task
    # regenerating the whole set (choosing the gaps and tests by running the suites) takes several minutes:
    # `python -m benchmarks.make_tasks --out /tmp/tasks && diff -r /tmp/tasks benchmarks/data` (README)


def test_committed_dev_set_is_what_the_generator_makes_from_dev_files():
    manifest = _manifest(DATA / "dev")
    assert manifest["split"] == "dev"
    _same_python(manifest)
    dev = {p.relative_to(stdlib_root()).as_posix() for p in stdlib_files("dev")}
    if dev != set(manifest["dev_files"]):
        pytest.skip("the validation split hashes absolute paths; this stdlib lives elsewhere than the set's")
    for name in DEV_SETS:
        committed = _committed(name)
        assert committed == make_tasks.mixed_order(committed, manifest["seed"])
        for task in committed:
            assert task["source"].split(":")[0] in dev
            assert _rebuilt(task, "dev") == task


def test_the_public_set_has_enough_tasks_with_tests():
    public = [t for name in SETS for t in _committed(name)]
    assert len(public) >= 200 and all("test" in t for t in public)
    assert min(len(_committed(name)) for name in SETS) >= 80  # single-line and multi-line both count
    files = {t["source"].rsplit(":", 1)[0] for t in public}
    assert len(files) >= 8


@pytest.mark.slow
def test_a_sample_of_the_committed_tasks_check_their_gap():
    """Each sampled task passes with its reference (twice) and fails with `pass` in its place."""
    _same_python(_manifest())
    public = [t for name in SETS for t in _committed(name)]
    dev = [t for name in DEV_SETS for t in _committed(name)]
    sample = public[::10] + dev[::20]  # 24 + 5 tasks of many files (the order is shuffled); 3 runs each
    for task in sample:
        check = make_tasks.check_task(task)
        assert check.ok, f"{task['task_id']}: {check.why}"


def test_check_task_says_why_a_task_does_not_check_its_gap(small_sets):
    task = small_sets["stdlib-single-line"][0]
    good = make_tasks.check_task(task)
    assert good.ok and good.why == "" and 0 < good.cpu_seconds and 0 < good.seconds
    broken = make_tasks.check_task(task | {"canonical_solution": "pass"})
    assert not broken.ok and broken.why.startswith("fails with its reference")
    no_tests = re.sub(r"run_tests\(tests, \[.*\]\)", "run_tests(tests, [])", task["test"], flags=re.DOTALL)
    assert make_tasks.check_task(task | {"test": no_tests}) == make_tasks.TaskCheck(
        False, "passes with `pass` in place of the middle")


def test_the_check_command_runs_every_task_of_a_folder(tmp_path, small_sets):
    task = small_sets["stdlib-multi-line"][0]
    (tmp_path / "good.jsonl").write_text(json.dumps(task) + "\n")
    assert make_tasks.main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / "bad.jsonl").write_text(json.dumps(task | {"task_id": "bad", "canonical_solution": "pass"}) + "\n")
    assert make_tasks.main(["--check", "--out", str(tmp_path)]) == 1


# --- choosing gaps and tests, without running anything -------------------------------------------------

def _fake(rel: str, qualname: str, line: int) -> SimpleNamespace:
    return SimpleNamespace(definition=SimpleNamespace(rel=rel, qualname=qualname), gap=line)


def test_spread_order_visits_every_function_once_before_any_twice():
    pool = [_fake("a.py", "f", i) for i in range(3)] + [_fake("a.py", "g", 9), _fake("b.py", "h", 5)]
    order = make_tasks.spread_order(pool, seed=0)
    assert sorted(map(id, order)) == sorted(map(id, pool))
    firsts = {c.definition.qualname for c in order[:3]}
    assert firsts == {"f", "g", "h"}
    assert make_tasks.spread_order(pool, seed=0) == order
    assert make_tasks.spread_order(pool, seed=1) != order


def test_seeded_orders_stay_put_when_one_item_goes():
    """A rerun that loses one gap (a test at the CPU limit fell on the other side) changes that gap only."""
    pool = [_fake(f"{name}.py", name, 1) for name in "abcdefghijklmnop"]
    order = make_tasks.spread_order(pool, seed=0)
    gone = order[5]
    assert make_tasks.spread_order([c for c in pool if c is not gone], seed=0) == [c for c in order if c is not gone]
    tasks = [{"task_id": f"t{i}"} for i in range(30)]
    mixed = make_tasks.mixed_order(tasks, seed=0)
    assert mixed != tasks and sorted(mixed, key=lambda t: int(t["task_id"][1:])) == tasks
    assert make_tasks.mixed_order(tasks[:7] + tasks[8:], seed=0) == [t for t in mixed if t is not tasks[7]]


def test_select_checked_keeps_the_first_checked_gaps_at_most_a_quarter_per_file(monkeypatch):
    monkeypatch.setattr(make_tasks, "module_task", lambda c: {"task_id": f"{c.definition.rel}:{c.gap}",
                                                              "source": f"{c.definition.rel}:{c.gap}"})
    monkeypatch.setattr(make_tasks, "check_task",
                        lambda task: make_tasks.TaskCheck(not task["task_id"].endswith(":2"), "why"))
    order = [_fake(rel, "f", i) for i in range(5) for rel in ("a.py", "b.py", "c.py", "d.py", "e.py")]
    chosen = [t["task_id"] for t in make_tasks.select_checked(order, 8)]
    assert chosen == ["a.py:0", "b.py:0", "c.py:0", "d.py:0", "e.py:0", "a.py:1", "b.py:1", "c.py:1"]
    chosen = [t["task_id"] for t in make_tasks.select_checked(order[:15], 12)]  # a, b, c ... three gaps each
    assert len(chosen) == 10 and not any(t.endswith(":2") for t in chosen)  # at most 3 per file, none failing


def test_candidate_takes_fast_passing_tests_that_reach_the_gap_from_one_test_module():
    d = next(d for d in make_tasks.definitions_in("heldout")
             if d.rel == "glob.py" and make_tasks.gaps(d, "single-line"))
    gap = make_tasks.gaps(d, "single-line")[0]

    def run(module, name, passed=True, cpu_seconds=0.01, lines=(gap.first,)):
        return make_tasks.SuiteRun(module, name, passed, cpu_seconds, frozenset(lines))

    runs = [run("test.a", "T.test_failing", passed=False), run("test.a", "T.test_slow", cpu_seconds=5.0),
            run("test.a", "T.test_elsewhere", lines=(gap.first + 1,)), run("test.b", "T.test_one")]
    runs += [run("test.a", f"T.test_{i}") for i in range(12)]
    c = make_tasks.candidate(d, gap, runs, seed=0)
    assert {r.module for r in c.tests} == {"test.a"} and len(c.tests) == make_tasks.MAX_TESTS
    assert all(r.name.removeprefix("T.test_").isdigit() for r in c.tests)
    assert make_tasks.candidate(d, gap, runs, seed=0) == c
    left_out = next(r for r in runs[4:] if r not in c.tests)  # losing a test it did not choose changes nothing
    assert make_tasks.candidate(d, gap, [r for r in runs if r is not left_out], seed=0) == c
    assert make_tasks.candidate(d, gap, runs[:4], seed=0).tests == (runs[3],)
    assert make_tasks.candidate(d, gap, runs[:3], seed=0) is None  # no test checks it


# --- the tuning (dev) set ------------------------------------------------------------------------------

@pytest.mark.slow
def test_dev_generator_reads_only_dev_files(monkeypatch, mapping):
    dev = {p.relative_to(stdlib_root()).as_posix() for p in stdlib_files("dev")}
    if "base64.py" not in dev:
        pytest.skip("the validation split hashes absolute paths; base64.py is not a dev file here")
    splits, sets = _splits_read(monkeypatch, split="dev", files=["base64.py"])
    assert splits == {"dev"}
    assert set(sets) == set(DEV_SETS) and [len(sets[n]) for n in DEV_SETS] == [1, 1]


def test_dev_files_are_training_files_that_the_finetune_does_not_read():
    dev, train = set(stdlib_files("dev")), set(stdlib_files("train"))
    assert dev and dev < train and not dev & set(stdlib_files("heldout"))
