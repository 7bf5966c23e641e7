"""Summarise training runs' metrics.jsonl as markdown loss-curve tables (for the model card).

    python -m training.report runs/finetune/b2 runs/finetune/b4 runs/finetune/b8 --every 50
    python -m training.report runs/pretrain/dlm --every 100

Each column is one run (its folder name); each row a step; a training-loss cell is the mean of the logged
losses since the previous row (the smoothed curve), validation losses are listed as logged.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_metrics(folder: Path) -> list[dict]:
    path = Path(folder) / "metrics.jsonl"
    if not path.exists():
        raise ValueError(f"{folder} has no metrics.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def loss_table(folders: list[Path], every: int) -> str:
    """Markdown table: step | smoothed training loss per run (mean over each window of `every` steps)."""
    if every < 1:
        raise ValueError("every must be at least 1")
    curves = {}
    for folder in folders:
        windows: dict[int, list[float]] = {}
        for row in read_metrics(folder):
            if "loss" in row and "step" in row:
                end = -(-row["step"] // every) * every  # the window's last step
                windows.setdefault(end, []).append(row["loss"])
        curves[Path(folder).name] = {s: sum(v) / len(v) for s, v in windows.items()}
    steps = sorted({s for c in curves.values() for s in c})
    lines = ["| step | " + " | ".join(curves) + " |", "|---|" + "---|" * len(curves)]
    for s in steps:
        cells = [f"{c[s]:.4f}" if s in c else "" for c in curves.values()]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def eval_rows(folder: Path) -> str:
    """Markdown list of every validation/evaluation line of a run."""
    out = []
    for row in read_metrics(folder):
        if "val_loss" in row:
            out.append(f"- step {row['step']}: validation loss {row['val_loss']:.4f}")
        elif "eval" in row:
            out.append(f"- step {row['step']} ({row['elapsed_s'] / 60:.1f} min): "
                       + ", ".join(f"{k} {v:.3f}" for k, v in row["eval"].items()))
        elif row.get("done"):
            out.append(f"- done: {row['steps']} steps, {row['tokens']} tokens, {row['elapsed_s'] / 60:.1f} min, "
                       f"{row['params'] / 1e6:.2f}M parameters; final: "
                       + ", ".join(f"{k} {v:.3f}" for k, v in row["final_eval"].items()))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run folders holding metrics.jsonl")
    p.add_argument("--every", type=int, default=50, help="steps per table row (training loss averaged over them)")
    args = p.parse_args(argv)
    print(loss_table(args.runs, args.every))
    for run in args.runs:
        print(f"\n{run.name}:\n{eval_rows(run)}")


if __name__ == "__main__":
    main()
