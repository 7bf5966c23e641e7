#!/usr/bin/env python3
"""Install what the `vscode_real` tests run the extension in: code-server (a real VS Code, served to a browser),
Debian's Chromium and playwright-core to drive it. Registries only: Debian's archive and npm.

    python3 .ci/get_vscode.py              # install, or check the cached install and do nothing
    python3 .ci/get_vscode.py --refresh    # reinstall the npm packages even when the cache works

Pinned (a newer VS Code may rename the DOM classes tests/editor_vscode_driver.mjs waits on):
- code-server 4.100.3, which is VS Code 1.100.3; later releases need Node 22+, and this machine has Node 20.
- playwright-core 1.65.2 (it never downloads a browser); both with every dependency in
  .ci/vscode/package-lock.json, installed with `npm ci`.
- Chromium is Debian's (`apt-get install chromium`): whatever the suite carries; the tests talk to it through
  the DevTools protocol, which playwright-core pins.

Steps, each skipped when already done:
1. `apt-get install` the Debian packages below (as root; `apt-get update` first). code-server's native
   modules build against the -dev packages and Node's headers (`nodedir=/usr`, so node-gyp downloads nothing).
2. `npm ci` into `${XDG_CACHE_HOME:-~/.cache}/codila-lsp/vscode/`. @vscode/ripgrep's postinstall would
   download `rg` from GitHub; a tarball of Debian's `rg` in its download cache (a private TMPDIR) satisfies
   it. code-server's postinstall runs `npx node-gyp` (npm_config_yes) as root (npm_config_unsafe_perm).
3. Check that `code-server --version` reports the pin and that Chromium starts; write `status.json` there,
   which tests/editor_vscode.py reads.

Exit status 0 when everything is installed and works, 1 otherwise (CI must fail: the tests need it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINS = ROOT / ".ci" / "vscode"  # package.json + package-lock.json
CODE_SERVER_VERSION = "4.100.3"
VSCODE_VERSION = "1.100.3"
PLAYWRIGHT_CORE_VERSION = "1.65.2"
APT_PACKAGES = ("build-essential", "libkrb5-dev", "libx11-dev", "libxkbfile-dev", "libsecret-1-dev", "ripgrep",
                "chromium")
# /usr/bin/chromium is a wrapper script that fails here; the binary itself runs headless.
CHROMIUM = Path("/usr/lib/chromium/chromium")
# Where @vscode/ripgrep 1.15.11 (code-server 4.100.3's) looks before downloading: $TMPDIR/<this>.
RIPGREP_CACHE = "vscode-ripgrep-cache-1.15.11/ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "codila-lsp" / "vscode"


def code_server_path() -> Path:
    return cache_dir() / "node_modules" / ".bin" / "code-server"


def status_path() -> Path:
    return cache_dir() / "status.json"


def say(message: str) -> None:
    print(f"get_vscode: {message}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    return proc


def missing_apt_packages() -> list[str]:
    missing = []
    for package in APT_PACKAGES:
        proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
        if proc.stdout.strip() != "install ok installed":
            missing.append(package)
    return missing


def install_apt_packages() -> None:
    missing = missing_apt_packages()
    if not missing:
        return
    if os.geteuid() != 0:
        raise RuntimeError(f"Debian packages missing: {' '.join(missing)}; as root: apt-get update && "
                           f"apt-get install -y --no-install-recommends {' '.join(missing)}")
    say(f"apt-get install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-q"], env=env)
    run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env)


def lock_digest() -> str:
    return hashlib.sha256((PINS / "package-lock.json").read_bytes()).hexdigest()


def reported_code_server_version() -> str | None:
    """The code-server version `code-server --version` reports, None when it does not start or bundles another
    VS Code than the pinned one."""
    # Its first start writes a config file and a data folder: keep them out of the user's home.
    with tempfile.TemporaryDirectory(prefix="get_vscode-") as home:
        env = {**os.environ, "XDG_CONFIG_HOME": home, "XDG_DATA_HOME": home}
        try:
            proc = subprocess.run([str(code_server_path()), "--version"], capture_output=True, text=True,
                                  timeout=120, env=env)
        except (OSError, subprocess.TimeoutExpired):
            return None
    # "4.100.3 <commit> with Code 1.100.3", after a log line about that config file.
    versions = [line.split()[0] for line in proc.stdout.splitlines() if f"with Code {VSCODE_VERSION}" in line]
    return versions[0] if proc.returncode == 0 and versions else None


def cached() -> bool:
    """Whether the cache holds a working install of exactly the pinned lockfile."""
    manifest = cache_dir() / "manifest.json"
    if not manifest.exists() or json.loads(manifest.read_text()).get("lock_sha256") != lock_digest():
        return False
    return reported_code_server_version() == CODE_SERVER_VERSION


def npm_install() -> None:
    """`npm ci` of .ci/vscode's lockfile into the cache, with Debian's rg standing in for the GitHub download."""
    rg = shutil.which("rg")
    if rg is None:
        raise RuntimeError("rg not found (the Debian package ripgrep provides it)")
    target = cache_dir()
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(PINS / name, target / name)
    with tempfile.TemporaryDirectory(prefix="get_vscode-") as tmp:
        tarball = Path(tmp) / RIPGREP_CACHE
        tarball.parent.mkdir(parents=True)
        with tarfile.open(tarball, "w:gz") as tar:
            tar.add(rg, arcname="rg")
        env = {**os.environ, "TMPDIR": tmp, "npm_config_unsafe_perm": "true", "npm_config_yes": "true",
               "npm_config_nodedir": "/usr", "npm_config_audit": "false", "npm_config_fund": "false"}
        say(f"npm ci code-server@{CODE_SERVER_VERSION} playwright-core@{PLAYWRIGHT_CORE_VERSION} into {target} "
            "(about a minute)")
        run(["npm", "ci", "--no-audit", "--no-fund"], cwd=target, env=env)
    (target / "manifest.json").write_text(json.dumps({"lock_sha256": lock_digest()}, indent=2) + "\n")


def check_chromium() -> str:
    """Chromium's version line; raises when it does not start."""
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} missing (the Debian package chromium provides it)")
    with tempfile.TemporaryDirectory(prefix="get_vscode-") as home:  # not ~/.config/chromium-headless
        env = {**os.environ, "XDG_CONFIG_HOME": home, "XDG_CACHE_HOME": home}
        return run([str(CHROMIUM), "--headless", "--no-sandbox", "--version"], timeout=60, env=env).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--refresh", action="store_true", help="reinstall the npm packages even when the cache works")
    args = parser.parse_args()
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        say("the Debian packages and the ripgrep stand-in used here are for x86_64 Linux")
        return 1
    try:
        install_apt_packages()
        if args.refresh or not cached():
            npm_install()
        got = reported_code_server_version()
        if got != CODE_SERVER_VERSION:
            raise RuntimeError(f"{code_server_path()} --version reports {got!r}, not {CODE_SERVER_VERSION}")
        chromium = check_chromium()
    except Exception as exc:  # noqa: BLE001 - reported and turned into the exit status
        say(f"FAILED: {exc}")
        status_path().unlink(missing_ok=True)
        return 1
    status = {"code_server": str(code_server_path()), "code_server_version": CODE_SERVER_VERSION,
              "vscode_version": VSCODE_VERSION, "node_modules": str(cache_dir() / "node_modules"),
              "chromium": str(CHROMIUM), "chromium_version": chromium}
    status_path().write_text(json.dumps(status, indent=2) + "\n")
    say(f"code-server {CODE_SERVER_VERSION} (VS Code {VSCODE_VERSION}) at {code_server_path()}; {chromium}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
