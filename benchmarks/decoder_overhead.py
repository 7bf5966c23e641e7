"""Decoder overhead benchmark: how much of a decode is spent outside the DLM and AR forward passes, and how
many DLM forward passes each generated token costs.

    python -m benchmarks.decoder_overhead                          # default model if shipped, else tiny models
    python -m benchmarks.decoder_overhead --tiny --repeats 5 --json
    python -m benchmarks.decoder_overhead --dlm DLM_DIR --ar AR_DIR --device cuda

Targets (issue 3): at B = 4, time outside the forward passes < 10% of decode time; DLM forward passes per
committed token = 1/B for static CoDiLA and < 1/2 for dynamic CoDiLA at the default tau.

"Forward pass" time is what DecodeStats reports: dlm_seconds (the DLM forward incl. the logit edits of the
marginals stage) and ar_seconds (the executor call: prefill + B decode steps incl. their sampling). Everything
else (candidate selection, alignment, soft embeddings, commit rule, bookkeeping) is "other".
Note that dynamic NFE depends on the model: an untrained AR is uncertain everywhere (entropy near log V), so
dynamic CoDiLA on random tiny models falls back to one DLM token per iteration (NFE/token = 1); a model in
EOS collapse decodes whole EOS blocks confidently (low NFE, empty text): read NFE next to the EOS share.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from decoding import DecodeConfig, default_model_dir, infill, load_models

PREFIX = '''import os
import sys
from dataclasses import dataclass


@dataclass
class Point:
    x: float
    y: float

    def norm(self) -> float:
        return (self.x ** 2 + self.y ** 2) ** 0.5


def read_points(path: str) -> list[Point]:
    """Read one point per line, "x y", skipping blank lines."""
    points = []
    with open(path) as f:
        for line in f:
'''
SUFFIX = '''
    return points


if __name__ == "__main__":
    for p in read_points(sys.argv[1]):
        print(p.norm())
'''

DECODERS = {
    "codila-static": dict(method="codila", mode="static"),
    "codila-dynamic": dict(method="codila", mode="dynamic"),
    "codila-static-dual-cache": dict(method="codila", mode="static", kv_cache="dual"),
    "dlm-k1": dict(method="dlm", tokens_per_step=1),
}


def measure(models, name: str, settings: dict, block_size: int, max_new_tokens: int, repeats: int) -> dict:
    """Mean figures over `repeats` decodes (after one warm-up decode) of one decoder."""
    config = DecodeConfig(block_size=block_size, max_new_tokens=max_new_tokens, eos_casting=False, **settings)
    infill(models, PREFIX, SUFFIX, config)  # warm-up: allocator, kernels, lazy imports
    runs = [infill(models, PREFIX, SUFFIX, config.replace(seed=i)).stats for i in range(repeats)]
    mean = lambda f: statistics.fmean(f(s) for s in runs)  # noqa: E731
    committed = mean(lambda s: sum(s.committed_per_iteration))
    return {
        "decoder": name,
        "config": {k: v for k, v in settings.items()},
        "seconds": mean(lambda s: s.seconds),
        "dlm_seconds": mean(lambda s: s.dlm_seconds),
        "ar_seconds": mean(lambda s: s.ar_seconds),
        "other_seconds": mean(lambda s: s.other_seconds),
        "other_share": mean(lambda s: s.other_seconds / s.seconds),
        "iterations": mean(lambda s: s.iterations),
        "dlm_forwards": mean(lambda s: s.dlm_forwards),
        "committed_tokens": committed,
        "nfe_per_token": mean(lambda s: s.dlm_forwards / sum(s.committed_per_iteration)),
        # share of committed positions that are EOS: a low NFE made of EOS blocks is EOS collapse, not speed
        "eos_share": mean(lambda s: 1 - s.tokens / sum(s.committed_per_iteration)),
        "tokens_per_second": mean(lambda s: sum(s.committed_per_iteration) / s.seconds),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # --- models ---
    parser.add_argument("--dlm", type=Path, default=None, help="DLM folder (default: the shipped default model)")
    parser.add_argument("--ar", type=Path, default=None, help="AR folder (default: the shipped default model)")
    parser.add_argument("--tiny", action="store_true", help="use freshly built random tiny models (training.tiny_models)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, or auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")
    # --- workload ---
    parser.add_argument("--block-size", type=int, default=4, help="B (the targets are stated at B = 4)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="masked positions per decode")
    parser.add_argument("--repeats", type=int, default=3, help="timed decodes per decoder (after one warm-up)")
    parser.add_argument("--decoders", default=",".join(DECODERS), help="comma-separated subset of: "
                        + ", ".join(DECODERS))
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    tmp = None
    dlm, ar = args.dlm, args.ar
    if args.tiny or (dlm is None and not (default_model_dir() / "dlm").is_dir()):
        from training.tiny_models import build_tiny_models

        tmp = tempfile.TemporaryDirectory()
        dlm, ar = build_tiny_models(Path(tmp.name))
    models = load_models(dlm, ar, device=args.device, dtype="float32")
    model_desc = {"dlm": str(dlm or default_model_dir() / "dlm"), "ar": str(ar or default_model_dir() / "ar"),
                  "dlm_params": sum(p.numel() for p in models.dlm.model.parameters()),
                  "ar_params": sum(p.numel() for p in models.ar.model.parameters()),
                  "device": str(models.dlm.device), "threads": torch.get_num_threads()}
    rows = [measure(models, name, DECODERS[name], args.block_size, args.max_new_tokens, args.repeats)
            for name in args.decoders.split(",")]
    if args.json:
        print(json.dumps({"models": model_desc, "block_size": args.block_size,
                          "max_new_tokens": args.max_new_tokens, "repeats": args.repeats, "results": rows}))
    else:
        print(f"models: {model_desc}\nB = {args.block_size}, N = {args.max_new_tokens}, {args.repeats} repeats")
        print(f"{'decoder':26s} {'seconds':>8s} {'DLM s':>7s} {'AR s':>7s} {'other s':>8s} {'other %':>8s} "
              f"{'iters':>6s} {'NFE/tok':>8s} {'EOS %':>6s} {'tok/s':>7s}")
        for r in rows:
            print(f"{r['decoder']:26s} {r['seconds']:8.3f} {r['dlm_seconds']:7.3f} {r['ar_seconds']:7.3f} "
                  f"{r['other_seconds']:8.3f} {100 * r['other_share']:7.1f}% {r['iterations']:6.1f} "
                  f"{r['nfe_per_token']:8.3f} {100 * r['eos_share']:5.0f}% {r['tokens_per_second']:7.1f}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
