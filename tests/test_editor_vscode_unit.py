"""The VS Code extension's own checks, run from pytest so README's test command covers them:
type-check + unit tests (`npm test`, Node's test runner with a stubbed `vscode` module: VS Code itself is
not available here) and, when CI has packaged it, the .vsix contents.

Needs `npm ci` in editors/vscode first (.ci/run does it). Without node_modules these tests skip locally and
FAIL on CI (env CI set), so CI cannot pass without building the extension.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

EXTENSION = Path(__file__).resolve().parent.parent / "editors" / "vscode"
VSIX = EXTENSION / "codila-lsp.vsix"


def require(condition: bool, why: str) -> None:
    """Skip locally, fail on CI."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI must run `npm ci` and `npm run package` in editors/vscode first)")
    pytest.skip(why)


def test_extension_typechecks_and_its_unit_tests_pass():
    require((EXTENSION / "node_modules").is_dir(), "editors/vscode/node_modules missing: run `npm ci` there")
    npm = shutil.which("npm")
    require(npm is not None, "npm not found")
    proc = subprocess.run(["nice", "-n", "10", npm, "test"], cwd=EXTENSION, capture_output=True, text=True,
                          timeout=300)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report[-6000:]
    # Node's test runner summary: at least the suites we wrote ran, none failed.
    passed = int(report.split("# pass ")[1].split()[0])
    assert passed >= 20 and "# fail 0" in report, report[-3000:]


def test_vsix_holds_the_compiled_extension_its_runtime_dependency_and_settings():
    require(VSIX.exists(), "editors/vscode/codila-lsp.vsix missing: run `npm run package` there")
    with zipfile.ZipFile(VSIX) as vsix:
        names = set(vsix.namelist())
        packaged = json.loads(vsix.read("extension/package.json"))
    assert "extension/out/extension.js" in names
    assert "extension/node_modules/vscode-languageclient/lib/node/main.js" in names
    assert not any(name.startswith("extension/src/") for name in names)
    assert not any(name.startswith("extension/node_modules/typescript/") for name in names), "dev deps packaged"
    source = json.loads((EXTENSION / "package.json").read_text())
    assert packaged["contributes"] == source["contributes"]
