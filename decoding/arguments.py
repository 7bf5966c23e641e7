"""The command-line options that choose and load the model pair, shared by every CLI that decodes, and the
flag of any row of the settings table (decoding/config.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from decoding.config import MODEL_SETTINGS, Setting

if TYPE_CHECKING:
    from decoding.models import ModelPair


def add_setting_argument(group: argparse._ArgumentGroup, setting: Setting, default: Any = argparse.SUPPRESS,
                         convert: Callable[[Any], Any] | None = None) -> None:
    """--flag for one row of the settings table: its type, range, choices and help (with its default).

    Values are parsed and checked by the row (Setting.parse), so every CLI reads them the same way.
    default: SUPPRESS (the default) leaves the flag out of the namespace unless given.
    """
    shown = str(setting.default).lower() if isinstance(setting.default, bool) else setting.default
    help_ = setting.help if setting.default is None else f"{setting.help} (default {shown})"
    if setting.kind is bool:
        group.add_argument(setting.option, action=argparse.BooleanOptionalAction, default=default, help=help_)
        return

    def parse(text: str) -> Any:
        try:
            value = setting.parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return value if convert is None or value is None else convert(value)

    parse.__name__ = setting.name  # argparse names the type in its errors
    metavar = "{" + ",".join(setting.choices) + "}" if setting.choices else setting.option[2:].upper().replace("-", "_")
    group.add_argument(setting.option, type=parse, default=default, metavar=metavar, help=help_)


def add_model_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add --dlm, --ar, --device, --dtype, --ar-backend and --trust-remote-code; returns their group."""
    group = parser.add_argument_group("models (local Hugging Face folders, safetensors only)")
    for setting in MODEL_SETTINGS:
        add_setting_argument(group, setting, default=setting.default,
                             convert=Path if setting.name in ("dlm_path", "ar_path") else None)
    return group


def load_models_from_args(args: argparse.Namespace) -> ModelPair:
    """The pair named by the options add_model_arguments added."""
    from decoding.models import load_models

    return load_models(args.dlm, args.ar, device=args.device, dtype=args.dtype,
                       trust_remote_code=args.trust_remote_code, ar_backend=args.ar_backend)
