"""Choose an executor's dynamic threshold (`codila_tau`) on the tuning set, and optionally write it.

    python -m benchmarks.tune_tau --ar runs/ar5 --dlm runs/dlm5 --taus 3,4,5,6,7
    python -m benchmarks.tune_tau --ar runs/ar5 --dlm runs/dlm5 --taus 3,4,5,6,7 --write

Dynamic CoDiLA commits the longest block prefix whose mean AR entropy is below tau, so tau trades DLM passes
for quality, on a scale that depends on the executor (a 2.4M-parameter AR's entropies are ~6 nats, a
fine-tuned Qwen3-0.6B's well under 1). This runs the DLM alone at one token per step (`dlm:k=1`, the
quality the paper's dynamic mode aims to keep) and `codila:b=B,tau=T` for every swept T on the same tasks,
and picks the tau with the fewest DLM passes per token among those that keep --metric within --tolerance
of `dlm:k=1` at no more than --max-nfe passes per token (the default model's issue: within 3 points of
syntax_ok at at most 0.5). Ties go to the better metric, then to the smaller tau (the same result at a
stricter threshold is the safer bet on text the sweep did not see). If no tau qualifies it says so and
writes nothing: widen the sweep.

Tasks default to the tuning set (benchmarks/data/dev/: code the default DLM never trained on); tune
there and report on the public set, or the public numbers are optimistic. --write puts the choice in the
AR folder's config.json (atomically), where every decoder's "tau unset" finds it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from benchmarks.harness import Length, run_benchmark
from benchmarks.infill import format_table, interruptible, load_models_for, setup_logging, write_json_atomic
from benchmarks.metrics import summarize
from benchmarks.specs import parse_spec
from benchmarks.tasks import load_tasks
from decoding.arguments import add_model_arguments
from decoding.config import DecodeConfig
from decoding.models import check_codila_tau

DEV_TASKS = Path(__file__).resolve().parent / "data" / "dev"
BASE = "dlm:k=1"
METRICS = ("syntax_ok", "similarity", "exact_match", "pass_at_1")

log = logging.getLogger("benchmarks.tune_tau")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tune_tau", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--tasks", action="append", metavar="FILE",
                        help=f"task file (repeatable; default: the .jsonl files of {DEV_TASKS})")
    parser.add_argument("--limit", type=int, default=30, metavar="N", help="first N tasks of each file (default 30)")
    parser.add_argument("--taus", required=True, metavar="T,T,...", help="thresholds to try, in nats")
    parser.add_argument("--block-size", type=int, default=4, choices=(2, 4, 8), help="B (default 4)")
    parser.add_argument("--metric", default="syntax_ok", choices=METRICS, help="quality to keep (default syntax_ok)")
    parser.add_argument("--tolerance", type=float, default=0.03,
                        help="how far below dlm:k=1 the metric may fall, on its 0..1 scale (default 0.03)")
    parser.add_argument("--max-nfe", type=float, default=0.5, help="most DLM passes per token (default 0.5)")
    parser.add_argument("--max-context", type=int, default=512, metavar="TOKENS", help="(default 512)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0, help="decoding seed (default 0)")
    parser.add_argument("--write", action="store_true", help="write the chosen tau into the AR's config.json")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the sweep here (atomically)")
    add_model_arguments(parser)
    return parser


def parse_taus(text: str) -> list[float]:
    try:
        taus = sorted({float(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ValueError(f"--taus must be numbers separated by commas; got {text!r}") from None
    if not taus:
        raise ValueError("--taus names no threshold")
    for tau in taus:
        check_codila_tau(tau, "--taus")
    return taus


def choose_tau(base: dict, sweep: dict[float, dict], metric: str, tolerance: float, max_nfe: float) -> float | None:
    """The qualifying tau with the fewest DLM passes per token, or None.

    base: summarize() of dlm:k=1; sweep: tau -> summarize() of codila at that tau, on the same tasks.
    Qualifying: metric >= base's - tolerance and nfe_per_token <= max_nfe.
    """
    floor = base[metric] - tolerance if base[metric] is not None else None
    ok = [tau for tau, r in sweep.items()
          if r[metric] is not None and floor is not None and r[metric] >= floor - 1e-12
          and r["nfe_per_token"] is not None and r["nfe_per_token"] <= max_nfe]
    if not ok:
        return None
    return min(ok, key=lambda tau: (sweep[tau]["nfe_per_token"], -sweep[tau][metric], tau))


def write_tau(ar_folder: Path, tau: float) -> None:
    """Set codila_tau in ar_folder/config.json, atomically, keeping every other key."""
    path = Path(ar_folder) / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["codila_tau"] = tau
    write_json_atomic(path, config, indent=2)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging()
    interruptible()
    try:
        taus = parse_taus(args.taus)
        if args.limit < 1 or args.tolerance < 0 or args.max_nfe <= 0:
            raise ValueError("--limit must be >= 1, --tolerance >= 0 and --max-nfe > 0")
        files = args.tasks or [str(p) for p in sorted(DEV_TASKS.glob("*.jsonl"))]
        tasks = load_tasks(files, args.limit)
        base_config = DecodeConfig(seed=args.seed)
        decoders = [parse_spec(BASE, base_config)] + [
            parse_spec(f"codila:b={args.block_size},tau={tau:g}", base_config) for tau in taus]
        models, max_context = load_models_for(args)
        log.info("%d tasks x %d decoders", len(tasks), len(decoders))
        run = run_benchmark(models, tasks, decoders, Length.parse("oracle"), max_context=max_context)
    except ValueError as err:
        parser.exit(2, f"python -m benchmarks.tune_tau: error: {err}\n")
    if run.interrupted:
        print(f"interrupted after {run.tasks_done} of {len(tasks)} tasks: nothing chosen", file=sys.stderr)
        return 130
    results = [summarize(d.spec, run.samples) for d in decoders]
    sweep = dict(zip(taus, results[1:]))
    chosen = choose_tau(results[0], sweep, args.metric, args.tolerance, args.max_nfe)
    print(format_table({"results": results}))
    ar_folder = args.ar or _default_ar()
    if args.json is not None:
        write_json_atomic(args.json, {"tasks": files, "limit": args.limit, "n": run.tasks_done, "ar": str(ar_folder),
                                      "dlm": str(args.dlm or "default"), "metric": args.metric,
                                      "tolerance": args.tolerance, "max_nfe": args.max_nfe, "chosen": chosen,
                                      "command": "python -m benchmarks.tune_tau " + " ".join(argv or sys.argv[1:]),
                                      "results": results})
    if chosen is None:
        print(f"no tau keeps {args.metric} within {args.tolerance:g} of {BASE}'s ({_fmt(results[0][args.metric])}) at "
              f"<= {args.max_nfe:g} DLM passes per token; nothing written. Try other --taus.")
        return 1
    r = sweep[chosen]
    print(f"chosen tau {chosen:g}: {args.metric} {_fmt(r[args.metric])} ({BASE}: {_fmt(results[0][args.metric])}), "
          f"{r['nfe_per_token']:.3f} DLM passes per token")
    if args.write:
        write_tau(ar_folder, chosen)
        print(f"wrote codila_tau {chosen:g} to {ar_folder / 'config.json'}")
    return 0


def _default_ar() -> Path:
    from decoding import default_model_dir

    return default_model_dir() / "ar"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
