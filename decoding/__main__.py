"""Infill or complete code from the terminal with the CoDiLA decoder.

    python -m decoding --prefix-file before.py --suffix-file after.py            # infill between two files
    printf 'def add(a, b):\\n    ' | python -m decoding --prefix-file - --preset fast   # complete stdin
    python -m decoding --prefix 'for i in ' --suffix ':\\n    print(i)' --json          # one JSON object

The middle ends where an editor's would (decoding.ending: one line, or a block after a line that opens one,
up to the first dedent); --whole writes up to --max-new-tokens instead.

Models default to the shipped default model (decoding/default_model); pass --dlm/--ar for others
(e.g. Dream-Coder-v0-Instruct-7B and a fine-tuned Qwen3-0.6B on a GPU: --device cuda --dtype bfloat16).
Settings: --preset first, then any single setting flag on top (the resolved config is logged to stderr).
Output: the middle on stdout and the stats on stderr; with --json a single object
{"text": ..., "stats": {"dlm_forwards", "ar_calls", "tokens", "iterations", "seconds", ...}, "config": {...}}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from decoding.arguments import add_model_arguments, add_setting_argument, load_models_from_args
from decoding.config import DECODE_SETTINGS, PRESET_SETTING, DecodeConfig, preset
from decoding.ending import ending

log = logging.getLogger("decoding")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m decoding", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    # --- input ---
    inp = parser.add_argument_group("input (prefix = code before the cursor, suffix = code after it)")
    inp.add_argument("--prefix-file", help="file with the prefix; '-' reads stdin")
    inp.add_argument("--suffix-file", help="file with the suffix; '-' reads stdin; omit to complete")
    inp.add_argument("--prefix", help="prefix text given inline (instead of --prefix-file)")
    inp.add_argument("--suffix", help="suffix text given inline (instead of --suffix-file)")
    inp.add_argument("--max-prefix-tokens", type=int, default=None,
                     help="keep only the last N prefix tokens (default: all)")
    inp.add_argument("--max-suffix-tokens", type=int, default=None,
                     help="keep only the first N suffix tokens (default: all)")
    # --- models ---
    add_model_arguments(parser)
    # --- decoding settings ---
    dec = parser.add_argument_group("decoding settings (applied on top of --preset)")
    add_setting_argument(dec, PRESET_SETTING, default=None)
    for setting in DECODE_SETTINGS:
        add_setting_argument(dec, setting)
    # --- output ---
    out = parser.add_argument_group("output")
    out.add_argument("--whole", action="store_true", help="write up to --max-new-tokens (default: stop where an "
                     "editor would: the end of the line, or of the block a line opener starts)")
    out.add_argument("--json", action="store_true", help="print one JSON object {text, stats, config}")
    out.add_argument("-v", "--verbose", action="store_true", help="log every iteration to stderr")
    return parser


def resolve_config(args: argparse.Namespace) -> DecodeConfig:
    """--preset (or the defaults), then every setting flag that was given."""
    given = {s.name: getattr(args, s.name) for s in DECODE_SETTINGS if hasattr(args, s.name)}
    return preset(args.preset, **given) if args.preset else DecodeConfig(**given)


def _read(path: str | None, inline: str | None, stdin_used: list[bool]) -> str:
    if inline is not None:
        return inline
    if path is None:
        return ""
    if path == "-":
        if stdin_used[0]:
            raise ValueError("only one of --prefix-file/--suffix-file can be '-' (stdin)")
        stdin_used[0] = True
        return sys.stdin.read()
    try:
        return Path(path).read_text()
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err}") from None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(name)s: %(message)s")
    for noisy in ("transformers", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import transformers

    transformers.utils.logging.disable_progress_bar()
    try:
        config = resolve_config(args)
        stdin_used = [False]
        prefix = _read(args.prefix_file, args.prefix, stdin_used)
        suffix = _read(args.suffix_file, args.suffix, stdin_used)
        from decoding.loop import infill

        log.info("config: %s", json.dumps(dataclasses.asdict(config)))
        models = load_models_from_args(args)
        on_step = (lambda s: log.debug("iteration %d: committed %d, %d left, %.3fs", s.iteration, s.committed,
                                       s.remaining, s.elapsed_s)) if args.verbose else None
        stop = None if args.whole else ending(prefix, suffix)
        result = infill(models, prefix, suffix, config, max_prefix_tokens=args.max_prefix_tokens,
                        max_suffix_tokens=args.max_suffix_tokens, on_step=on_step, stop=stop)
    except ValueError as err:
        parser.exit(2, f"python -m decoding: error: {err}\n")
    stats = result.stats.as_dict()
    if args.json:
        print(json.dumps({"text": result.text, "stats": stats, "config": dataclasses.asdict(config)}))
    else:
        sys.stdout.write(result.text + ("" if result.text.endswith("\n") else "\n"))
        drafts = (f", {stats['accepted']} of {stats['drafted']} drafted tokens accepted" if stats["drafted"] else "")
        print(f"{stats['tokens']} tokens in {stats['seconds']:.3f}s ({stats['tokens_per_second']:.1f} tok/s), "
              f"{stats['iterations']} iterations, {stats['dlm_forwards']} DLM forwards, "
              f"{stats['ar_calls']} AR calls, {stats['tokens_per_iteration']:.2f} tokens/iteration{drafts}"
              + (", deadline hit" if stats["deadline_hit"] else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
