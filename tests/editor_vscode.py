"""A real VS Code for the extension's tests: code-server on loopback, its state in a temporary folder, the
extension installed from the .vsix that `npm run package` builds, driven by tests/editor_vscode_driver.mjs.

Everything comes from `python3 .ci/get_vscode.py` (code-server, Chromium, playwright-core; .ci/run calls it).
Where it has not run, the tests skip naming that command; under CI (env CI set) they fail instead.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXTENSION = ROOT / "editors" / "vscode"
DRIVER = Path(__file__).with_name("editor_vscode_driver.mjs")
GET_VSCODE = ROOT / ".ci" / "get_vscode.py"
EXTENSION_ID = "codila.codila-lsp"
START_TIMEOUT_S = 60


def _load_get_vscode():
    spec = importlib.util.spec_from_file_location("get_vscode", GET_VSCODE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


get_vscode = _load_get_vscode()


def missing(why: str):
    """Skip locally, fail under CI."""
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI must run the extension in a real VS Code: .ci/run installs it)")
    pytest.skip(why)


def installed() -> dict:
    """get_vscode's status: where code-server, playwright-core and Chromium are; skips or fails without them."""
    status_file = get_vscode.status_path()
    if not status_file.exists():
        missing(f"code-server not installed: run `python3 .ci/get_vscode.py` ({status_file} missing)")
    status = json.loads(status_file.read_text())
    if status.get("code_server_version") != get_vscode.CODE_SERVER_VERSION:
        missing(f"{status_file} names code-server {status.get('code_server_version')}, not the pinned "
                f"{get_vscode.CODE_SERVER_VERSION}: run `python3 .ci/get_vscode.py`")
    for key in ("code_server", "chromium", "node_modules"):
        if not Path(status[key]).exists():
            missing(f"{status[key]} missing: run `python3 .ci/get_vscode.py --refresh`")
    if shutil.which("node") is None:
        missing("node not found")
    return status


def build_vsix(into: Path) -> Path:
    """`npm run package` in editors/vscode, as a user would; returns a copy of the .vsix under `into`."""
    if not (EXTENSION / "node_modules").is_dir():
        missing("editors/vscode/node_modules missing: run `npm ci` there")
    proc = subprocess.run(["npm", "run", "package"], cwd=EXTENSION, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return Path(shutil.copy2(EXTENSION / "codila-lsp.vsix", into / "codila-lsp.vsix"))


class CodeServer:
    """One code-server process whose config, user data, extensions and XDG folders all live under `state`."""

    def __init__(self, status: dict, state: Path, vsix: Path, settings: dict):
        self.state = state
        self.data = state / "user-data"
        self.command = [status["code_server"], "--config", str(state / "config.yaml"),
                        "--user-data-dir", str(self.data), "--extensions-dir", str(state / "extensions")]
        self.env = {**os.environ, **{f"XDG_{kind}_HOME": str(state / "xdg" / kind.lower())
                                     for kind in ("CONFIG", "DATA", "CACHE", "STATE")}}
        (self.data / "User").mkdir(parents=True)
        (self.data / "User" / "settings.json").write_text(json.dumps(settings, indent=2))
        (state / "config.yaml").write_text("auth: none\n")
        proc = subprocess.run([*self.command, "--install-extension", str(vsix)], env=self.env, capture_output=True,
                              text=True, timeout=START_TIMEOUT_S)
        installed_as = list((state / "extensions").glob(f"{EXTENSION_ID}-*"))
        assert proc.returncode == 0 and installed_as, f"{vsix} not installed:\n{proc.stdout}{proc.stderr}"
        self.log = state / "code-server.log"
        self.process: subprocess.Popen | None = None
        self.url = ""

    def __enter__(self) -> CodeServer:
        self.process = subprocess.Popen(
            [*self.command, "--auth", "none", "--bind-addr", "127.0.0.1:0", "--disable-telemetry",
             "--disable-update-check", "--disable-workspace-trust"],
            env=self.env, stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        # "HTTP server listening on http://127.0.0.1:PORT/": port 0 lets the system pick a free one.
        url = None
        for _ in wait_steps(START_TIMEOUT_S):
            found = re.search(r"HTTP server listening on (http://127\.0\.0\.1:\d+)", self.log.read_text())
            if found or self.process.poll() is not None:
                url = found and found.group(1)
                break
        assert url, f"code-server did not start (see {self.log}):\n{self.log.read_text()[-3000:]}"
        self.url = url
        return self

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, 15)  # its own session: code-server, the extension host, the server
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()

    def extension_logs(self) -> list[Path]:
        """The CoDiLA output channel of each window: the extension's lines and the server's stderr."""
        return sorted(self.data.glob("logs/**/CoDiLA.log"))


def wait_steps(timeout_s: float, step_s: float = 0.1):
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        yield
        time.sleep(step_s)


def run_driver(server: CodeServer, folder: Path, scenarios: list[str], artifacts: Path, timeout_s: float,
               **extra) -> dict:
    """Open `folder` in the browser, run `scenarios` in order; returns the driver's observations."""
    status = installed()
    out = artifacts / "driver.json"
    config = {"url": server.url, "folder": str(folder), "nodeModules": status["node_modules"],
              "chromium": status["chromium"], "browserHome": str(server.state / "browser"),
              "artifacts": str(artifacts), "out": str(out), "scenarios": scenarios, **extra}
    config_file = artifacts / "driver-config.json"
    config_file.write_text(json.dumps(config, indent=2))
    try:
        proc = subprocess.run(["node", str(DRIVER), str(config_file)], capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"driver timed out after {timeout_s}s (artifacts: {artifacts}): {exc.stderr!r}") from None
    assert out.exists(), f"driver wrote nothing (rc {proc.returncode}): {proc.stdout}\n{proc.stderr}"
    results = json.loads(out.read_text())
    assert "_driver" not in results, f"{results['_driver']}\n(artifacts: {artifacts})"
    return results


@contextlib.contextmanager
def kept_for_the_log(server: CodeServer, artifacts: Path):
    """On the way out, copy code-server's log and each window's CoDiLA log next to the screenshots."""
    try:
        yield
    finally:
        shutil.copy2(server.log, artifacts / "code-server.log")
        for index, log in enumerate(server.extension_logs(), start=1):
            shutil.copy2(log, artifacts / f"CoDiLA-window{index}.log")
