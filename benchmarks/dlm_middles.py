"""Score diffusion LMs alone on the benchmark's reference middles: how much of each middle one forward gets right.

    python -m benchmarks.dlm_middles decoding/default_model/dlm --tasks benchmarks/data/stdlib-single-line.jsonl --limit 30
    python -m benchmarks.dlm_middles runs/dlm-a/export runs/dlm-b/export --tasks TASKS.jsonl --json

Each task's reference middle is masked whole at its own length (the harness's "oracle" canvas; the context
kept by decoding.context.split_context, the policy the language server and the harness use), one forward.
acc = argmax hits; eos = share of middle positions whose argmax is EOS (none is EOS in truth); p_eos = mean
EOS probability there. A DLM that learned from EOS-padded regions puts EOS mass on every masked position,
and CoDiLA hands a position whose argmax is EOS to the AR as a hard EOS: this is how to see that prior.
Masked-token accuracy on the pretraining validation split is `python -m training.evaluate`'s.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from benchmarks.tasks import Task, load_tasks
from decoding.context import split_context
from decoding.models import DiffusionLM, dlm_logits, load_dlm


@torch.no_grad()
def middle_scores(dlm: DiffusionLM, tasks: list[Task], max_context: int = 512) -> dict:
    """{"acc", "eos", "p_eos", "n"} over the reference middles of `tasks`, each masked whole in the harness's
    oracle-length canvas (see the module docstring)."""
    encode = dlm.tokenizer.encode
    hits, eos, p_eos, n = 0, 0, 0.0, 0
    for task in tasks:
        prefix, middle, suffix = (encode(text, add_special_tokens=False)
                                  for text in (task.prompt, task.canonical_solution, task.suffix))
        if not middle or len(middle) >= max_context:
            raise ValueError(f"task {task.task_id!r}: a middle of {len(middle)} tokens does not fit "
                             f"a {max_context}-token context")
        keep_prefix, keep_suffix = split_context(len(prefix), len(suffix), max_context - len(middle))
        ids = prefix[len(prefix) - keep_prefix:] + [dlm.mask_id] * len(middle) + suffix[:keep_suffix]
        logits = dlm_logits(dlm, torch.tensor([ids], device=dlm.device))[0].float()  # (L, V)
        probs = logits[keep_prefix:keep_prefix + len(middle)].softmax(-1)  # (M, V)
        guess = probs.argmax(-1).cpu()
        hits += int((guess == torch.tensor(middle)).sum())
        eos += int((guess == dlm.eos_id).sum())
        p_eos += float(probs[:, dlm.eos_id].sum())
        n += len(middle)
    return {"acc": hits / n, "eos": eos / n, "p_eos": p_eos / n, "n": n}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.dlm_middles", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("dlm", nargs="+", type=Path, help="DLM folders to compare")
    p.add_argument("--tasks", action="append", required=True, metavar="JSONL",
                   help="benchmark task files whose reference middles are scored (repeatable)")
    p.add_argument("--limit", type=int, default=None, help="the first N tasks of each file (default: all)")
    p.add_argument("--max-context", type=int, default=512, help="canvas tokens, as in the harness (default 512)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, ...")
    p.add_argument("--json", action="store_true", help="print the scores as one JSON list instead of text")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    rows = []
    try:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        tasks = load_tasks(args.tasks, args.limit)
        for folder in args.dlm:
            scores = middle_scores(load_dlm(folder, device=args.device, dtype="float32"), tasks, args.max_context)
            rows.append({"dlm": str(folder), "middles": scores})
            if not args.json:
                print(f"{folder}: acc {scores['acc']:.4f} eos {scores['eos']:.4f} p_eos {scores['p_eos']:.4f} "
                      f"(n {scores['n']})", flush=True)
    except ValueError as err:
        p.exit(2, f"python -m benchmarks.dlm_middles: error: {err}\n")
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
