"""The VS Code extension (editors/vscode) in a real VS Code (code-server 4.100.3 = VS Code 1.100.3) against
the real server on the tiny models, typed into by a headless Chromium (tests/editor_vscode_driver.mjs).

    python3 .ci/get_vscode.py && python -m pytest -m vscode_real

Each test module run builds the .vsix (`npm run package`), installs it into a code-server whose state lives
in a temporary folder, and opens a workspace in the browser. The real-server scenarios share one window
and one server (the model loads once, then once more after the restart). The stale-suggestion checks run in
a second code-server whose server is tests/editor_slow_lsp_server.py: it answers late and ignores
cancellation, naming the position each answer is for, so stale answers really arrive and are recognisable.

Screenshots after every scenario, code-server's log and the CoDiLA output channel of each window are kept in
the folder every failure message names.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from tests.editor_vscode import ROOT, CodeServer, build_vsix, installed, kept_for_the_log, run_driver

pytestmark = pytest.mark.vscode_real

SLOW_SERVER = Path(__file__).with_name("editor_slow_lsp_server.py")
SLOW_SERVER_DELAY_S = 1.0
DRIVER_TIMEOUT_S = float(os.environ.get("CODILA_TEST_DRIVER_TIMEOUT_S", "600"))
READY = re.compile(r"^CoDiLA( \d+ ms)?$")
START = "def add(a, b):\n"


def editor_settings(server_env: dict, server_args: list[str], codila: dict) -> dict:
    """User settings.json: the extension's settings, and an editor quiet enough that a keystroke means one thing
    (no suggest widget competing for Tab, no auto-closed brackets, no welcome page or recommendations)."""
    return {
        "codila.pythonPath": sys.executable,
        "codila.serverArgs": server_args,
        "codila.serverEnv": server_env,
        **{f"codila.{key}": value for key, value in codila.items()},
        "editor.inlineSuggest.enabled": True,
        "editor.quickSuggestions": {"other": "off", "comments": "off", "strings": "off"},
        "editor.suggestOnTriggerCharacters": False,
        "editor.wordBasedSuggestions": "off",
        "editor.autoClosingBrackets": "never",
        "editor.autoClosingQuotes": "never",
        "files.insertFinalNewline": False,
        "files.trimTrailingWhitespace": False,
        "workbench.startupEditor": "none",
        "workbench.tips.enabled": False,
        "extensions.ignoreRecommendations": True,
        "telemetry.telemetryLevel": "off",
        "security.workspace.trust.enabled": False,
    }


def where(artifacts: Path) -> str:
    return f"(screenshots and logs: {artifacts})"


def scenario(run: dict, name: str) -> dict:
    outcome = run["results"].get(name)
    assert outcome is not None, f"{name} did not run {where(run['artifacts'])}"
    assert outcome["ok"], f"{name}: {outcome['error']}\n{where(run['artifacts'])}"
    return outcome["result"]


def ghost_text(lines: list[str] | None) -> str:
    assert lines, "no ghost text"
    return "\n".join(lines)


def offset(text: str, line: int, column: int) -> int:
    """Index in `text` of VS Code's 1-based "Ln line, Col column" (columns count UTF-16 units; ASCII here)."""
    lines = text.split("\n")
    return sum(len(l) + 1 for l in lines[: line - 1]) + column - 1


def inserted_at(before: str, after: str, at: int) -> str:
    """The text that turned `before` into `after` by an insertion at index `at`; fails if it is anything else."""
    head, tail = before[:at], before[at:]
    assert after.startswith(head) and after.endswith(tail) and len(after) >= len(before), (before, after, at)
    return after[len(head): len(after) - len(tail)]


@pytest.fixture(scope="module")
def vscode(tmp_path_factory) -> dict:
    """code-server's install and the .vsix built from the working tree."""
    status = installed()
    vsix = build_vsix(tmp_path_factory.mktemp("vsix"))
    return {"status": status, "vsix": vsix}


def workspace(root: Path, files: dict[str, str]) -> Path:
    folder = root / "workspace"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


# The real server on the tiny models ------------------------------------------------------------------------
REAL_SCENARIOS = ["ready", "ghost_accept", "infill", "restart"]
INFILL = "def greet(name):\n    message = 'hi ' + name\n    return message\n"


@pytest.fixture(scope="module")
def real_run(vscode, tiny_model_dirs, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("vscode_real")
    artifacts = root / "artifacts"
    artifacts.mkdir()
    dlm_dir, ar_dir = tiny_model_dirs
    settings = editor_settings(
        server_env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"},
        server_args=["--threads", "1"],
        # Fast and deterministic: the client is under test, so the model must always answer with some text.
        codila={"device": "cpu", "dtype": "float32", "maxNewTokens": 12, "syntaxCheck": "off", "debounceMs": 0,
                "dlmPath": str(dlm_dir), "arPath": str(ar_dir)},
    )
    folder = workspace(root, {"ghost.py": START, "restart.py": START, "infill.py": INFILL})
    with CodeServer(vscode["status"], root / "code-server", vscode["vsix"], settings) as server:
        with kept_for_the_log(server, artifacts):
            results = run_driver(server, folder, REAL_SCENARIOS, artifacts, DRIVER_TIMEOUT_S)
    return {"results": results, "artifacts": artifacts, "logs": sorted(artifacts.glob("CoDiLA-window*.log"))}


def test_the_server_starts_on_opening_a_python_file_and_the_status_bar_says_ready(real_run):
    r = scenario(real_run, "ready")
    assert READY.match(r["status"]), f"{r['status']!r} {where(real_run['artifacts'])}"


def test_ghost_text_appears_while_typing_and_tab_inserts_exactly_it(real_run):
    r = scenario(real_run, "ghost_accept")
    assert r["saved"] == START + "    return"
    assert r["cursor"] == [2, len("    return") + 1]
    shown = ghost_text(r["ghost"])
    inserted = inserted_at(r["saved"], r["after"], len(r["saved"]))
    assert inserted == shown, f"Tab inserted {inserted!r}, the ghost text showed {shown!r} {where(real_run['artifacts'])}"
    # The cursor ends after the inserted text.
    lines = r["after"].split("\n")
    assert r["cursorAfter"] == [len(lines), len(lines[-1]) + 1]


def test_infill_selection_replaces_the_selection_and_nothing_else(real_run):
    r = scenario(real_run, "infill")
    assert r["before"] == INFILL
    assert "(4 selected)" in r["selection"], r["selection"]
    start = INFILL.index("name\n")
    head, tail = INFILL[:start], INFILL[start + len("name"):]
    after = r["after"]
    assert after.startswith(head) and after.endswith(tail), (INFILL, after)
    replacement = after[len(head): len(after) - len(tail)]
    assert replacement != "name", f"the selection is unchanged {where(real_run['artifacts'])}"


def test_after_a_restart_completions_come_back_and_the_log_has_no_error(real_run):
    r = scenario(real_run, "restart")
    # The status bar left "ready" (stopped, starting, loading) and came back to it.
    assert any(not READY.match(seen) for seen in r["statusSeen"]), r["statusSeen"]
    assert READY.match(r["statusSeen"][-1]), r["statusSeen"]
    shown = ghost_text(r["ghost"])
    assert inserted_at(r["saved"], r["after"], len(r["saved"])) == shown
    (log,) = real_run["logs"]
    text = log.read_text()
    assert text.count("Starting ") == 2, f"expected two server starts in {log}"
    errors = [line for line in text.splitlines() if "[error]" in line or "Traceback" in line]
    assert not errors, f"errors in the extension's log {log}:\n" + "\n".join(errors[:20])


# Stale suggestions, with a server that answers late ------------------------------------------------------------
SLOW_SCENARIOS = ["typed_after_shown", "stale_answer"]


@pytest.fixture(scope="module")
def slow_run(vscode, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("vscode_slow")
    artifacts = root / "artifacts"
    artifacts.mkdir()
    # The extension starts `python -m lsp_server ARGS`: this `lsp_server` runs the slow server with ARGS, and
    # says "ready" in the status bar once initialized, as the real one does when its model is loaded.
    shim = root / "shim" / "lsp_server"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("")
    (shim / "__main__.py").write_text(
        "import runpy\n"
        "from lsprotocol import types\n"
        f"slow = runpy.run_path({str(SLOW_SERVER)!r}, run_name='slow_server')\n"
        "@slow['server'].feature(types.INITIALIZED)\n"
        "def ready(ls, params):\n"
        "    ls.protocol.notify('codila/status', {'state': 'ready', 'message': '', 'lastLatencyMs': None})\n"
        "slow['server'].start_io()\n")
    settings = editor_settings(server_env={"PYTHONPATH": str(shim.parent)}, server_args=[str(SLOW_SERVER_DELAY_S)],
                               codila={})
    folder = workspace(root, {"stale.py": START, "late.py": START})
    with CodeServer(vscode["status"], root / "code-server", vscode["vsix"], settings) as server:
        with kept_for_the_log(server, artifacts):
            results = run_driver(server, folder, SLOW_SCENARIOS, artifacts, DRIVER_TIMEOUT_S,
                                 slowServerDelayS=SLOW_SERVER_DELAY_S)
    return {"results": results, "artifacts": artifacts}


def tag(line: int, character: int) -> re.Pattern:
    """The slow server's answer for a 0-based LSP position, any document version."""
    return re.compile(rf"<v\d+@{line}:{character}>")


def test_a_key_typed_after_the_suggestion_was_shown_makes_tab_a_plain_tab(slow_run):
    r = scenario(slow_run, "typed_after_shown")
    assert tag(1, len("    return")).fullmatch(ghost_text(r["ghost"])), r["ghost"]
    # `q` then Tab at once: the shown suggestion is out of date; Tab indents (spaces to the next tab stop).
    assert r["after"] == r["saved"] + "q ", f"{r['after']!r} {where(slow_run['artifacts'])}"


def test_a_late_answer_to_an_overtaken_request_is_never_accepted(slow_run):
    r = scenario(slow_run, "stale_answer")
    assert tag(1, len("    return")).fullmatch(ghost_text(r["ghost"])), r["ghost"]
    typed = r["saved"] + "xy"
    # Tab came after the answer to the request `x` made and before the one `y` made: nothing current to accept.
    assert r["beforeTab"]["cursor"] == [2, len("    returnxy") + 1]
    assert r["beforeTab"]["ghost"] is None, \
        f"a suggestion was shown before Tab, so the stale case was not reached: {r['beforeTab']}"
    inserted = inserted_at(typed, r["after"], len(typed))
    assert "<v" not in inserted, f"Tab accepted a stale suggestion: {inserted!r} {where(slow_run['artifacts'])}"
    assert inserted == "    ", f"Tab should indent to the next tab stop: {inserted!r}"
