"""Infill or complete code from the terminal with the CoDiLA decoder.

    python -m decoding --prefix-file before.py --suffix-file after.py            # infill between two files
    printf 'def add(a, b):\\n    ' | python -m decoding --prefix-file - --preset fast   # complete stdin
    python -m decoding --prefix 'for i in ' --suffix ':\\n    print(i)' --json          # one JSON object

Models default to the shipped default model (decoding/default_model/{dlm,ar}); pass --dlm/--ar for others
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

from decoding.arguments import add_model_arguments, load_models_from_args
from decoding.config import KV_CACHES, METHODS, MODES, PRESETS, DecodeConfig, preset

log = logging.getLogger("decoding")

_NONE = "none"
CHOICES = {"method": METHODS, "mode": MODES, "kv_cache": KV_CACHES}
# One help line per decoding setting: what it does and what special values mean (defaults are appended).
SETTING_HELP = {
    "method": "codila (AR decodes blocks from soft DLM marginals), codila-top1 (ablation: AR sees argmax "
              "tokens only), dlm (baseline: the DLM alone)",
    "block_size": "B, tokens per AR block (2, 4 or 8 in the paper; 1..16)",
    "mode": "static: one whole block per iteration; dynamic: the longest block prefix with mean AR entropy "
            "below --tau (a single token falls back to the DLM)",
    "tau": "dynamic threshold on mean AR entropy per token, in nats (higher = more tokens per step); "
           "none = the AR's own codila_tau, else 0.5",
    "scope": "candidate blocks per iteration, nearest the frontier (paper: 10; larger risks early EOS)",
    "tokens_per_step": "method dlm: commit the k lowest-entropy masked positions per step (1 = Dream's own)",
    "confidence": "method dlm: commit every position whose top probability >= this; 'none' = use "
                  "--tokens-per-step",
    "max_new_tokens": "N, masked positions between prefix and suffix; unused ones become EOS",
    "temperature": "DLM sampling temperature (0 = argmax)",
    "top_p": "DLM nucleus sampling mass (1 = off)",
    "ar_temperature": "AR executor sampling temperature (paper 0.1; 0 = argmax)",
    "ar_top_p": "AR executor nucleus mass (paper 0.8)",
    "eos_penalty": "subtracted from the DLM's EOS logit (0 = off); counters EOS collapse",
    "eos_casting": "after the first committed EOS every later position becomes EOS",
    "eos_frontier": "EOS may be committed only at the first masked position (off: anywhere)",
    "token_healing": "take the prefix's last token off the canvas; the middle must start with its text",
    "eos_min_prob": "a position becomes EOS only when EOS has at least this probability there (0 = EOS "
                    "competes as an ordinary token)",
    "deadline_ms": "latency budget in ms: parallelism rises so the decode ends in time; 'none' = no budget",
    "kv_cache": "none: full DLM pass every iteration; prefix / dual: approximate cache of the prefix "
                "(and suffix) keys/values",
    "cache_refresh": "iterations between full DLM passes when --kv-cache is prefix or dual (1 = exact)",
    "seed": "seed of every sampler in one decode (same seed, same output)",
}


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
    dec.add_argument("--preset", choices=sorted(PRESETS), default=None,
                     help="named starting point: " + "; ".join(f"{k}: {v}" for k, v in PRESETS.items()))
    defaults = DecodeConfig()
    for f in dataclasses.fields(DecodeConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_ = f"{SETTING_HELP[f.name]} (default {default if default is not None else _NONE})"
        if isinstance(default, bool):
            dec.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_)
        elif f.name in CHOICES:
            dec.add_argument(flag, choices=CHOICES[f.name], default=argparse.SUPPRESS, help=help_)
        else:
            dec.add_argument(flag, type=_setting_type(f.name), default=argparse.SUPPRESS,
                             metavar=f.name.upper(), help=help_)
    # --- output ---
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print one JSON object {text, stats, config}")
    out.add_argument("-v", "--verbose", action="store_true", help="log every iteration to stderr")
    return parser


def _setting_type(name: str):
    """argparse type for one DecodeConfig field; optional fields accept 'none'."""
    base = {"int": int, "float": float, "str": str}
    field_type = next(f.type for f in dataclasses.fields(DecodeConfig) if f.name == name)
    kind = "float" if "float" in str(field_type) else "int" if "int" in str(field_type) else "str"
    convert = base[kind]

    def parse(text: str):
        if text.lower() == _NONE and "None" in str(field_type):
            return None
        try:
            return convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None

    return parse


def resolve_config(args: argparse.Namespace) -> DecodeConfig:
    """--preset (or the defaults), then every setting flag that was given."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(DecodeConfig) if hasattr(args, f.name)}
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
        result = infill(models, prefix, suffix, config, max_prefix_tokens=args.max_prefix_tokens,
                        max_suffix_tokens=args.max_suffix_tokens, on_step=on_step)
    except ValueError as err:
        parser.exit(2, f"python -m decoding: error: {err}\n")
    stats = result.stats.as_dict()
    if args.json:
        print(json.dumps({"text": result.text, "stats": stats, "config": dataclasses.asdict(config)}))
    else:
        sys.stdout.write(result.text + ("" if result.text.endswith("\n") else "\n"))
        print(f"{stats['tokens']} tokens in {stats['seconds']:.3f}s ({stats['tokens_per_second']:.1f} tok/s), "
              f"{stats['iterations']} iterations, {stats['dlm_forwards']} DLM forwards, "
              f"{stats['ar_calls']} AR calls, {stats['tokens_per_iteration']:.2f} tokens/iteration"
              + (", deadline hit" if stats["deadline_hit"] else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
