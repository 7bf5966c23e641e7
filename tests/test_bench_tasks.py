"""benchmarks/make_tasks.py: the public task set is deterministic and cut from held-out files only; the
tuning (dev) set only from the training files no stage trains on."""

import json
import sys
from pathlib import Path

import pytest

import benchmarks.make_tasks as make_tasks
from benchmarks.execution import check_program, run_program
from training.corpus import is_heldout, stdlib_files, stdlib_root

DATA = Path(__file__).resolve().parents[1] / "benchmarks" / "data"
SETS = ("stdlib-single-line", "stdlib-multi-line")
DEV_SETS = ("stdlib-dev-single-line", "stdlib-dev-multi-line")


@pytest.fixture(scope="module")
def small_sets():
    return make_tasks.build_task_sets(seed=0, n_single=12, n_multi=8, executable_share=0.25, validate=False)


def _committed(name: str) -> list[dict]:
    folder = DATA / "dev" if name in DEV_SETS else DATA
    return [json.loads(line) for line in (folder / f"{name}.jsonl").read_text().splitlines()]


def test_generation_is_deterministic_and_seeded(small_sets):
    again = make_tasks.build_task_sets(seed=0, n_single=12, n_multi=8, executable_share=0.25, validate=False)
    assert again == small_sets
    other = make_tasks.build_task_sets(seed=1, n_single=12, n_multi=8, executable_share=0.25, validate=False)
    assert other != small_sets


def _splits_read(monkeypatch, **kw) -> tuple[set[str], dict]:
    """The stdlib splits build_task_sets(seed=3, **kw) reads, and the sets it builds."""
    splits = []

    def spy(split="train", root=None):
        splits.append(split)
        return stdlib_files(split, root)

    monkeypatch.setattr(make_tasks, "stdlib_files", spy)
    sets = make_tasks.build_task_sets(seed=3, n_single=5, n_multi=3, validate=False, **kw)
    assert splits
    return set(splits), sets


def test_generator_reads_only_heldout_files(monkeypatch):
    splits, sets = _splits_read(monkeypatch, executable_share=0.0)
    assert splits == {"heldout"}
    assert sum(map(len, sets.values())) == 8


@pytest.mark.parametrize("name", SETS)
def test_every_task_comes_from_a_heldout_file(name, small_sets):
    train = {p.relative_to(stdlib_root()).as_posix() for p in stdlib_files("train")}
    for task in _committed(name) + small_sets[name]:
        source = task["source"].split(":")[0]
        assert is_heldout(source) and source not in train, task["task_id"]


@pytest.mark.parametrize("name", SETS)
def test_tasks_have_the_promised_shape(name, small_sets):
    kind = name.removeprefix("stdlib-")
    for task in _committed(name) + small_sets[name]:
        middle = task["canonical_solution"]
        lines = middle.count("\n") + 1
        assert (lines == 1) if kind == "single-line" else (2 <= lines <= 6), task["task_id"]
        assert task["prompt"].endswith((" ", "\t")) or task["prompt"].endswith("\n")  # cursor at the indentation
        assert task["suffix"].startswith("\n")
        compile(task["prompt"] + middle + task["suffix"], task["task_id"], "exec")
        if "test" in task:
            assert task["entry_point"] in task["prompt"] and "def check(candidate)" in task["test"]


def test_committed_sets_match_the_manifest():
    manifest = json.loads((DATA / "MANIFEST.json").read_text())
    for name in SETS:
        tasks = _committed(name)
        assert manifest["sets"][name] == {"tasks": len(tasks), "with_tests": sum("test" in t for t in tasks)}
    sources = {t["source"].split(":")[0] for name in SETS for t in _committed(name)}
    assert set(manifest["sources"]) == sources


def test_committed_plain_tasks_are_what_the_generator_makes_on_this_python():
    manifest = json.loads((DATA / "MANIFEST.json").read_text())
    if manifest["python"] != sys.version.split()[0]:
        pytest.skip(f"task set made with Python {manifest['python']}; the stdlib here differs")
    counts = {name: manifest["sets"][name]["tasks"] for name in SETS}
    sets = make_tasks.build_task_sets(seed=manifest["seed"], n_single=counts["stdlib-single-line"],
                                      n_multi=counts["stdlib-multi-line"], executable_share=0.3, validate=False)
    for name in SETS:
        # tasks with tests depend on running them (validate=True), and so does the shuffled order of the
        # whole set; the plain tasks themselves must be identical
        def plain(tasks):
            return sorted((t for t in tasks if "test" not in t), key=lambda t: t["task_id"])

        assert plain(sets[name]) == plain(_committed(name))
        committed = _committed(name)
        assert committed == make_tasks.mixed_order(committed, manifest["seed"])  # the order is the seeded one


def test_committed_executable_tasks_check_their_gap():
    tested = [t for name in SETS for t in _committed(name) if "test" in t]
    assert len(tested) >= 20
    for task in tested[::9]:  # a spread sample: each run is a subprocess
        def passes(middle):
            return run_program(check_program(task["prompt"], middle, task["suffix"], task["test"],
                                             task["entry_point"])).passed

        assert passes(task["canonical_solution"]), task["task_id"]
        assert not passes("pass"), task["task_id"]


def test_dev_generator_reads_only_dev_files(monkeypatch):
    splits, sets = _splits_read(monkeypatch, executable_share=0.3, split="dev")
    assert splits == {"dev"}
    assert set(sets) == set(DEV_SETS) and [len(sets[n]) for n in DEV_SETS] == [5, 3]


def test_dev_files_are_training_files_that_the_finetune_does_not_read():
    dev, train = set(stdlib_files("dev")), set(stdlib_files("train"))
    assert dev and dev < train and not dev & set(stdlib_files("heldout"))


def test_committed_dev_set_is_what_the_generator_makes_from_dev_files():
    manifest = json.loads((DATA / "dev" / "MANIFEST.json").read_text())
    assert manifest["split"] == "dev"
    if manifest["python"] != sys.version.split()[0]:
        pytest.skip(f"dev set made with Python {manifest['python']}; the stdlib here differs")
    dev = {p.relative_to(stdlib_root()).as_posix() for p in stdlib_files("dev")}
    if dev != set(manifest["dev_files"]):
        pytest.skip("the validation split hashes absolute paths; this stdlib lives elsewhere than the set's")
    counts = {name: manifest["sets"][name]["tasks"] for name in DEV_SETS}
    sets = make_tasks.build_task_sets(seed=manifest["seed"], n_single=counts["stdlib-dev-single-line"],
                                      n_multi=counts["stdlib-dev-multi-line"], executable_share=0.3,
                                      validate=False, split="dev")
    for name in DEV_SETS:
        committed = _committed(name)
        assert committed == sets[name]
        assert all(t["source"].split(":")[0] in dev and "test" not in t for t in committed)
