"""One table of settings (decoding/config.py: DECODE_SETTINGS, MODEL_SETTINGS; lsp_server/settings.py:
SETTINGS): the dataclasses, the CLIs, the decoder specs and the server are generated from it, and the
editors' schemas and docs/settings.md are checked against it here - a test fails when one of them drifts."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from decoding.config import DECODE_SETTINGS, MODEL_SETTINGS, DecodeConfig, Setting
from lsp_server.settings import SETTINGS, ServerSettings, merge
from tests.test_editor_settings import nvim_settings, vscode_settings

ROOT = Path(__file__).resolve().parent.parent


def test_the_decoder_config_and_the_server_need_no_torch():
    """`decoding` exports lazily: its config, constants and table import without torch, and so does the
    server until it loads models."""
    code = ("import sys, decoding.config, decoding.context, lsp_server.server, benchmarks.specs\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "import decoding\n"
            "assert decoding.DecodeConfig is decoding.config.DecodeConfig and 'torch' not in sys.modules\n"
            "decoding.infill\n"
            "assert 'torch' in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_every_decode_config_field_is_a_row_with_its_default():
    assert [(f.name, f.default) for f in dataclasses.fields(DecodeConfig)] == \
        [(row.name, row.default) for row in DECODE_SETTINGS], "add a Setting row to DECODE_SETTINGS"
    assert all(row.help for row in (*DECODE_SETTINGS, *MODEL_SETTINGS, *SETTINGS))


def test_every_server_setting_is_a_row_with_its_default():
    assert [(f.name, f.default) for f in dataclasses.fields(ServerSettings)] == \
        [(row.name, row.default) for row in SETTINGS]
    assert ServerSettings().to_lsp() == {row.editor_name: row.default for row in SETTINGS}


@pytest.mark.parametrize("row", DECODE_SETTINGS, ids=lambda row: row.name)
def test_decode_config_validates_by_the_rows(row):
    for bad in _bad_values(row):
        with pytest.raises(ValueError, match=rf"^{row.name} must"):
            DecodeConfig(**{row.name: bad})


@pytest.mark.parametrize("row", SETTINGS, ids=lambda row: row.name)
def test_the_server_validates_by_the_rows_in_the_editors_words(row):
    for bad in _bad_values(row):
        settings, problems = merge(ServerSettings(), {row.editor_name: bad})
        assert settings == ServerSettings() and len(problems) == 1
        assert problems[0].startswith(f"{row.editor_name} = {bad!r} ignored: {row.editor_name} must"), problems


def _bad_values(row: Setting) -> list:
    bad: list = [[1]] + ([] if row.nullable else [None])
    if row.kind is bool:
        return bad + ["yes", 1]
    if row.kind is str:
        return bad + [5] + (["no-such-choice"] if row.choices else []) + (["   "] if row.pattern else [])
    bad += ["3", True]
    bad += [row.low - 1] if row.low is not None else []
    bad += [row.high * 2 + 1] if row.high is not None else []
    return bad + ([2.5] if row.kind is int else [])


def test_the_decoding_cli_has_a_flag_per_row_read_by_the_row():
    from decoding.__main__ import build_parser, resolve_config

    parser = build_parser()
    flags = {option for action in parser._actions for option in action.option_strings}
    for row in (*DECODE_SETTINGS, *MODEL_SETTINGS):
        assert row.option in flags, row.name
    args = parser.parse_args(["--preset", "fast", "--tau", "none", "--kv-cache", "none", "--no-eos-casting",
                              "--block-size", "2", "--device", "cuda:1", "--dlm", "/m/dlm"])
    assert resolve_config(args) == DecodeConfig(method="auto", block_size=2, mode="dynamic", scope=1, read_suffix=False,
                                                kv_cache="none", eos_casting=False)
    assert (args.device, args.dlm) == ("cuda:1", Path("/m/dlm"))


@pytest.mark.parametrize("row", [*DECODE_SETTINGS, *SETTINGS], ids=lambda row: row.name)
def test_text_is_read_by_the_row_it_names(row):
    """Setting.parse: the one reader of settings given as text (CLI flags, decoder specs)."""
    if row.default is not None:
        text = str(row.default).lower() if row.kind is bool else str(row.default)
        assert row.parse(text) == row.default
    if row.nullable:
        assert row.parse("none") == ("none" if "none" in row.choices else None)
    if row.kind is str and not (row.choices or row.pattern):
        return  # any string is valid
    with pytest.raises(ValueError, match=row.name):
        row.parse("no-such-choice" if row.choices else "   " if row.pattern else "[1]")


def test_benchmark_spec_keys_are_the_rows():
    from benchmarks.specs import DECODE_ROWS, PRESET_ROWS

    assert set(DECODE_ROWS) == {row.name for row in DECODE_SETTINGS} - {"method", "max_new_tokens"}
    assert set(PRESET_ROWS) <= {row.name for row in SETTINGS}


def test_server_latency_sends_every_editor_setting_it_is_given():
    from benchmarks.server_latency import parse_args

    args = parse_args(["--preset", "fast", "--kv-cache", "none", "--block-size", "none", "--syntax-check", "off"])
    assert (args.preset, args.kv_cache, args.block_size, args.syntax_check) == ("fast", "none", None, "off")
    assert not hasattr(args, "scope")  # unset: the server's default
    with pytest.raises(SystemExit):
        parse_args(["--max-new-tokens", "2000"])  # the server's range, checked before the server starts


def test_vscode_package_json_is_the_table():
    """editors/vscode/package.json describes every server setting with the row's type, default, range,
    choices and pattern, in the server's order."""
    vscode = vscode_settings()
    assert list(vscode) == [row.editor_name for row in SETTINGS]
    for row in SETTINGS:
        schema = vscode[row.editor_name]
        generated = row.json_schema()
        assert {key: schema.get(key) for key in generated} == generated, row.editor_name


def test_neovim_plugin_schema_is_the_table(tmp_path):
    nvim = nvim_settings(tmp_path)
    assert sorted(nvim) == sorted(row.editor_name for row in SETTINGS)
    for row in SETTINGS:
        lua = nvim[row.editor_name]
        assert lua["type"] == row.json_type, row.editor_name
        assert bool(lua.get("nullable")) == row.nullable, row.editor_name
        assert lua.get("enum", []) == list(row.choices), row.editor_name
        assert (lua.get("min"), lua.get("max")) == (row.low, row.high), row.editor_name


def _docs_table(section: str) -> list[list[str]]:
    """The cells of the table between docs/settings.md's `<!-- section: NAME -->` markers, one row a list."""
    text = (ROOT / "docs" / "settings.md").read_text()
    body = text[text.index(f"<!-- section: {section} -->"):text.index(f"<!-- end section: {section} -->")]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
            for line in body.splitlines() if line.startswith("| `")]


def test_docs_list_every_server_setting_with_its_type_and_default():
    listed = [(name.strip("`"), kind, default) for name, kind, default, *_ in _docs_table("server settings")]
    assert [name for name, _, _ in listed] == [row.editor_name for row in SETTINGS]
    for (name, kind, default), row in zip(listed, SETTINGS):
        words = {bool: "bool", int: "int", float: "number", str: "string"}[row.kind]
        assert kind == words + (" \\| null" if row.nullable else ""), name
        assert _docs_value(default) == row.default, name


def test_docs_list_every_decoding_setting_with_its_default():
    rows = _docs_table("decoding settings")
    assert [name.strip("`") for name, *_ in rows] == [row.name for row in DECODE_SETTINGS]
    for (name, default, *_), row in zip(rows, DECODE_SETTINGS):
        assert _docs_value(default) == row.default, name


def _docs_value(cell: str):
    """A table's default cell: `text` is a string, bare null / none / preset is None."""
    if cell.startswith("`"):
        return cell.strip("`")
    if cell in ("null", "none", "preset"):
        return None
    if cell in ("true", "false"):
        return cell == "true"
    return float(cell) if re.fullmatch(r"[\d.]+", cell) else cell
