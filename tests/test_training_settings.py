"""The trainers' settings table (training/config.py): each trainer's config dataclass is its table, its command
line and docs/training.md are made from the rows, knobs that trainers share are one row, and the flags users
have always typed still parse. A test fails when one of them drifts."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

import training.config as table
from training.config import (TRAINERS, AdaptConfig, DraftConfig, ExecutorConfig, FinetuneConfig, PretrainConfig,
                             TrainSetting)

ROOT = Path(__file__).resolve().parent.parent
REQUIRED_FLAGS = {FinetuneConfig: ["--dlm", "d", "--ar", "a", "--data", "x.jsonl", "--output", "o"],
                  AdaptConfig: ["--output", "o"], PretrainConfig: ["--model", "dlm", "--output", "o"],
                  DraftConfig: ["--output", "o"], ExecutorConfig: ["--output", "o"]}
SHARED_ROWS = {name: row for name, row in vars(table).items() if isinstance(row, TrainSetting)}
ROWS = [(config, row) for config in TRAINERS.values() for row in config.settings()]


def _id(case) -> str:
    config, row = case
    return f"{config.__name__}.{row.name}"


def test_the_table_needs_no_torch():
    """The language server validates trainOnWorkspace's options with these rows before any model loads."""
    code = "import sys, training.config, lsp_server.training_job\nassert 'torch' not in sys.modules\n"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("config", TRAINERS.values(), ids=lambda config: config.__name__)
def test_every_field_is_a_row_with_its_default_and_help(config):
    rows = config.settings()
    assert [f.name for f in dataclasses.fields(config)] == [row.name for row in rows]
    for field, row in zip(dataclasses.fields(config), rows):
        assert field.default is row.default, row.name  # the dataclass's default is the row's, not a copy
        assert row.help and row.group, row.name
        if not row.required:
            row.check(row.default)  # a shared row's default is given by each trainer, and must be valid


def test_a_knob_two_trainers_have_is_one_shared_row():
    """A row written for one trainer alone may not take the name of a shared row: lr, warmup, steps, batch,
    LoRA, output, device, threads, seed... are defined once (training/config.py) and only their defaults,
    help or range change per trainer."""
    own = {(config.__name__, f.name) for config in TRAINERS.values() for f in dataclasses.fields(config)
           if not f.metadata["row"].name}
    shared_names = {row.name for row in SHARED_ROWS.values()}
    assert not {(trainer, name) for trainer, name in own if name in shared_names}
    names = [name for config in TRAINERS.values() for name in (f.name for f in dataclasses.fields(config))]
    twice = {name for name in names if names.count(name) > 1}
    assert twice <= shared_names, f"make these shared rows: {sorted(twice - shared_names)}"
    assert FinetuneConfig(dlm="d", ar="a", data=("x",), output="o").lora_targets == table.LORA_TARGETS


@pytest.mark.parametrize("case", ROWS, ids=_id)
def test_the_config_validates_by_the_rows(case):
    config, row = case
    for bad in _bad_values(row):
        with pytest.raises(ValueError, match=rf"^{row.name} (must|needs)"):
            config(**{**_required(config), row.name: bad})


@pytest.mark.parametrize("case", ROWS, ids=_id)
def test_the_command_line_has_a_flag_per_row_read_by_the_row(case, capsys):
    config, row = case
    parser = config.parser("prog", "doc")
    assert row.option in {option for action in parser._actions for option in action.option_strings}
    if not row.required:  # an unset flag: the dataclass's default
        assert getattr(config.from_command_line(parser, REQUIRED_FLAGS[config]), row.name) == row.default
    for bad in _bad_texts(row):
        with pytest.raises(SystemExit):
            config.from_command_line(parser, [*REQUIRED_FLAGS[config], row.option, bad])
        assert row.name in capsys.readouterr().err


def test_values_that_do_not_go_together_are_refused_by_the_config():
    with pytest.raises(ValueError, match="t_min <= t_max"):
        FinetuneConfig(**_required(FinetuneConfig), t_min=0.9, t_max=0.1)
    with pytest.raises(ValueError, match="budget"):
        AdaptConfig(output="o", budget=300, seq_len=256)
    with pytest.raises(ValueError, match="boundary_tokens"):
        FinetuneConfig(**_required(FinetuneConfig), boundary_tokens=("<think>",))


# Every flag of the three trainers before the table (training/{finetune,adapt,pretrain}.py's argparse calls)
OLD_FLAGS = {
    FinetuneConfig: "--dlm --ar --data --output --block-size --t-min --t-max --eps --commit-prob --frontier-share "
    "--instruction-field --response-field --messages-field --max-length --max-response --budget --max-middle "
    "--val-batch-size --data-cache --val-samples --lr --warmup-ratio --max-grad-norm --weight-decay --batch-size "
    "--grad-accum --max-steps --max-minutes --val-every --save-every --no-resume --json-progress --device --dtype "
    "--gradient-checkpointing --trust-remote-code --threads --boundary-tokens --executor-layers --no-token-healing "
    "--lora-rank --lora-alpha --lora-dropout --lora-targets --lora-train-tokens --seed",
    AdaptConfig: "--base --output --method --lora-rank --lora-alpha --mask-token --eos-token --extra-source --stdlib "
    "--no-stdlib --seq-len --batch-size --lr --warmup-steps --weight-decay --max-grad-norm --eps --infill-share "
    "--whole-share --max-middle --budget --max-minutes --max-steps --save-every-minutes --eval-every-minutes "
    "--log-every --threads --seed --device --data-workers",
    PretrainConfig: "--model --output --corpus --size --tokenizer --init --vocab-size --seq-len --batch-size --lr "
    "--min-lr-ratio --warmup-steps --weight-decay --max-grad-norm --max-steps --max-minutes --save-every-minutes "
    "--log-every --eval-every --eps --infill-share --max-middle --budget --threads --seed",
}


@pytest.mark.parametrize("config", OLD_FLAGS, ids=lambda config: config.__name__)
def test_every_flag_users_typed_before_the_table_still_exists(config):
    flags = {option for action in config.parser("prog", "doc")._actions for option in action.option_strings}
    assert set(OLD_FLAGS[config].split()) <= flags


def test_the_trainers_defaults_are_their_recipes():
    finetune = FinetuneConfig(**_required(FinetuneConfig))
    assert (finetune.lr, finetune.warmup_ratio, finetune.max_steps, finetune.batch_size, finetune.grad_accum,
            finetune.lora_rank, finetune.threads, finetune.device) == (1e-5, 0.03, 32_000, 1, 8, 0, 0, "auto")
    adapt = AdaptConfig(output="o")
    assert (adapt.base, adapt.lr, adapt.warmup_steps, adapt.max_steps, adapt.batch_size, adapt.lora_rank,
            adapt.lora_alpha, adapt.threads, adapt.device) == ("base:qwen2.5-coder-0.5b", 5e-4, 20, 1_000_000, 8, 32, 64.0,
                                                               2, "cpu")
    pretrain = PretrainConfig(model="ar", output="o")
    assert (pretrain.lr, pretrain.warmup_steps, pretrain.max_steps, pretrain.seq_len, pretrain.weight_decay,
            pretrain.threads) == (2e-3, 200, 100_000, 512, 0.1, 2)


def test_lists_are_read_as_the_old_flags_read_them():
    parser = FinetuneConfig.parser("prog", "doc")
    config = FinetuneConfig.from_command_line(parser, [*REQUIRED_FLAGS[FinetuneConfig], "--data", "stdlib",
                                                       "--lora-targets", "q_proj, v_proj", "--no-resume",
                                                       "--boundary-tokens", "<a>,<b>", "--lora-alpha", "none"])
    assert config.data == ("x.jsonl", "stdlib") and config.lora_targets == ("q_proj", "v_proj")
    assert config.boundary_tokens == ("<a>", "<b>") and config.lora_alpha is None and not config.resume
    adapt = AdaptConfig.from_command_line(AdaptConfig.parser("prog", "doc"), ["--output", "o", "--extra-source", "a",
                                                                              "--extra-source", "b", "--no-stdlib"])
    assert adapt.extra_sources == ("a", "b") and not adapt.stdlib


def test_block_size_is_the_decoders_row():
    """A trainer cannot make an executor the decoders refuse: the range is decoding's row."""
    from decoding.config import DECODE_SETTINGS

    decoding_row = next(row for row in DECODE_SETTINGS if row.name == "block_size")
    row = next(row for row in FinetuneConfig.settings() if row.name == "block_size")
    assert (row.low, row.high, row.default) == (decoding_row.low, decoding_row.high, decoding_row.default)


def test_the_servers_training_command_is_one_the_trainer_accepts(tmp_path):
    """trainOnWorkspace's options are the trainer's rows (in camelCase) and its command line parses."""
    from lsp_server.training_job import OPTION_ROWS, finetune_command, parse_arguments
    from training.finetune import parse_args

    (tmp_path / "src").mkdir()
    options = parse_arguments([{"blockSize": 8, "maxSteps": 7, "learningRate": 3e-4, "output": str(tmp_path / "o")}],
                              [(tmp_path / "src").as_uri()])
    config = parse_args(finetune_command(options, "DLM", "AR", "cpu")[3:])
    assert (config.block_size, config.max_steps, config.lr, config.json_progress) == (8, 7, 3e-4, True)
    assert set(OPTION_ROWS) == {"blockSize", "maxSteps", "learningRate"}
    with pytest.raises(ValueError, match=r"^maxSteps must be in \[1, 1000000\]"):
        parse_arguments([{"maxSteps": 0}], [(tmp_path / "src").as_uri()])


def test_docs_list_every_flag_as_the_table_has_it():
    """docs/training.md carries each trainer's table as `python -m training.config docs/training.md` writes it."""
    doc = (ROOT / "docs" / "training.md").read_text()
    assert table.update_reference(doc) == doc, "run: python -m training.config docs/training.md"
    for command, config in TRAINERS.items():
        listed = re.findall(r"^\| `(--[a-z-]+)` \|", doc.split(f"<!-- flags: {command} -->")[1].split("<!--")[0], re.M)
        assert listed == [row.option for row in config.settings()], command


def test_no_shipped_package_imports_the_tests():
    """benchmarks --tiny and the trainers run from an installed package, where tests/ does not exist."""
    packages = ("decoding", "training", "lsp_server", "verify", "benchmarks")
    offenders = [f"{path.relative_to(ROOT)}:{n}" for package in packages
                 for path in sorted((ROOT / package).rglob("*.py"))
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if re.match(r"\s*(from tests[. ]|import tests\b)", line)]
    assert not offenders


def _required(config) -> dict:
    return {row.name: ("x",) if row.many else ("dlm" if row.choices else "x")
            for row in config.settings() if row.required}


def _bad_values(row: TrainSetting) -> list:
    if row.many:
        wrong_kind = (1,) if row.kind is str else ("x",)
        out_of_range = [(row.high * 2 + 1,)] if row.kind is not str and row.high is not None else []
        return ["a,b", wrong_kind, *out_of_range] + ([()] if row.required else [])
    bad: list = [[1]] + ([] if row.nullable else [None])
    if row.kind is bool:
        return bad + ["yes", 1]
    if row.kind is str:
        return bad + [5] + (["no-such-choice"] if row.choices else []) + (["   "] if row.pattern else [])
    bad += ["3", True]
    if row.low is not None:
        bad += [row.low if row.open_low else row.low - 1]
    if row.high is not None:
        bad += [row.high if row.open_high else row.high * 2 + 1]
    return bad + ([2.5] if row.kind is int else [])


def _bad_texts(row: TrainSetting) -> list[str]:
    if row.kind is bool:
        return []  # a switch takes no value
    if row.kind is str:
        return (["no-such-choice"] if row.choices else []) + (["   "] if row.pattern else [])
    bad = ["x"]
    if row.low is not None:
        bad.append(str(row.low if row.open_low else row.low - 1))
    return bad
