"""Infilling benchmark: quality and speed of several decoders, on the same tasks with the same loaded models.

    python -m benchmarks.infill --tasks benchmarks/data/stdlib-single-line.jsonl \\
        --tasks benchmarks/data/stdlib-multi-line.jsonl \\
        --decoder dlm:k=1 --decoder dlm:k=4 --decoder codila:b=4 --decoder codila:b=4,tau=0.3 \\
        --json runs/bench.json --plot runs/bench.png
    python -m benchmarks.infill --tasks HumanEval-SingleLineInfilling.jsonl.gz --decoder codila:b=2 \\
        --dlm ~/models/Dream-Coder-v0-Instruct-7B --ar ~/models/codila-ar-b2 --device cuda --length fixed:64

Tasks: HumanEval-Infilling JSON lines (task_id, prompt, suffix, canonical_solution, optional test +
entry_point); openai/human-eval-infilling's files work unchanged, gzipped or not.

Decoder specs (one --decoder each; all decoded by the same models):
    SPEC := METHOD[:KEY=VALUE,...]   METHOD: dlm | codila | codila-top1
    short keys: k (tokens per step, dlm), conf (confidence threshold, dlm), b (block size B),
    tau (dynamic threshold: makes codila dynamic; without it codila is static), budget_ms (latency budget),
    kv (kv cache: none, prefix, dual); and any DecodeConfig field by name (scope=10, eos_penalty=1.0, ...).
    e.g. dlm:k=1  dlm:k=4  dlm:conf=0.9  codila:b=4  codila:b=4,tau=0.3  codila-top1:b=4  codila:b=4,budget_ms=300
    preset:NAME[,KEY=VALUE,...]   what the editor runs (lsp_server.pipeline.complete) with preset NAME and
    these editor settings on top (max_new_tokens=32, context_tokens=1024, syntax_check=off, ...): the middle
    the editor would show at the gap. --length, --max-context and --seed do not apply to it.
    (benchmarks/specs.py has the whole grammar.)

Length (--length): "oracle" gives each task as many masked positions as its reference middle has tokens;
"fixed:N" gives every task N positions and the decoder must stop itself (EOS), as in the editor. Context
(--max-context): 3/4 before the gap, 1/4 after it, what one side does not need going to the other (the
language server's policy, decoding.context).

Metrics per decoder, the headline first: pass_at_1 (share of the tasks with tests whose tests pass, run for
real in a restricted subprocess; null when no task has tests), exact_match (middle == reference, trailing
whitespace per line and trailing blank lines ignored; over all tasks); then syntax_ok (a non-empty middle, and
prompt + middle + suffix parses: tree-sitter and, for Python, Python's own compiler; a junk model scores here),
sim (mean similarity to the reference, 0..1, difflib's ratio), top (share of tasks answered with the decoder's
most frequent middle: high = one answer everywhere, which syntax_ok can reward), fill (mean middle tokens over
the N masked positions: low = middles ended early), nfe_per_token (DLM forward passes per committed position),
tokens_per_second (generated tokens / total infill time), mean and p95 latency of one infill call in ms.

Output: a table on stdout, a progress bar on stderr; --json writes {"tasks", "n", "models", "headline",
"results": [...], "samples": [...per task and decoder...], ...}; --plot draws accuracy vs throughput. Ctrl-C
stops early and reports (and writes) the tasks every decoder finished.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

from benchmarks.harness import Length, run_benchmark
from benchmarks.metrics import HEADLINE, summarize
from benchmarks.specs import parse_spec
from benchmarks.tasks import load_tasks
from decoding.arguments import add_model_arguments, load_models_from_args

log = logging.getLogger("benchmarks.infill")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.infill", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    # --- tasks ---
    tasks = parser.add_argument_group("tasks")
    tasks.add_argument("--tasks", action="append", required=True, metavar="FILE",
                       help="a .jsonl or .jsonl.gz task file; repeat for several")
    tasks.add_argument("--limit", type=int, default=None, metavar="N",
                       help="only the first N tasks of each file (default: all)")
    tasks.add_argument("--length", default="oracle",
                       help="masked positions per task: 'oracle' (default: the reference middle's token count) "
                            "or 'fixed:N'")
    # --- decoders ---
    dec = parser.add_argument_group("decoders")
    dec.add_argument("--decoder", action="append", required=True, metavar="SPEC",
                     help="a decoder spec (grammar below); repeat for several")
    dec.add_argument("--seed", type=int, default=0, help="seed of every decode unless a spec sets seed= (default 0)")
    # --- models ---
    mod = add_model_arguments(parser)
    mod.add_argument("--max-context", type=int, default=None, metavar="TOKENS",
                     help="canvas length cap (prefix + middle + suffix tokens); longer prompts keep the code "
                          "nearest the gap (default: the DLM's max_position_embeddings)")
    mod.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    # --- execution and output ---
    out = parser.add_argument_group("tests and output")
    out.add_argument("--exec-timeout", type=float, default=5.0, metavar="SECONDS",
                     help="CPU seconds one task's tests may use (default 5; the wall-clock limit is 4x + 5 s)")
    out.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the results here (atomically)")
    out.add_argument("--plot", type=Path, default=None, metavar="OUT.png", help="draw accuracy vs throughput")
    out.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging()
    interruptible()
    started = time.time()
    try:
        length = Length.parse(args.length)
        decoders = _decoders(args.decoder, args.seed)
        tasks = load_tasks(args.tasks, args.limit)
        if args.plot is not None:
            import matplotlib  # noqa: F401  (fail now, not after an hour of decoding)
        models, max_context = load_models_for(args)
        log.info("%d tasks x %d decoders, length %s, context %d tokens", len(tasks), len(decoders), length,
                 max_context)
        from tqdm import tqdm

        with tqdm(total=len(tasks) * len(decoders), unit="decode", disable=args.quiet, file=sys.stderr) as bar:
            def progress(sample) -> None:
                bar.set_postfix_str(f"{sample.task_id} {sample.decoder}", refresh=False)
                bar.update(1)

            run = run_benchmark(models, tasks, decoders, length, max_context=max_context,
                                exec_timeout_s=args.exec_timeout, on_sample=progress)
    except ValueError as err:
        parser.exit(2, f"python -m benchmarks.infill: error: {err}\n")
    except ImportError as err:
        parser.exit(2, f"python -m benchmarks.infill: error: {err} (--plot needs matplotlib: pip install "
                       "-e '.[plot]')\n")

    report = {
        "tasks": args.tasks,
        "n": run.tasks_done,
        "models": _model_info(args),
        "length": str(length),
        "max_context": max_context,
        "device": str(models.dlm.device),
        "dtype": str(models.dlm.model.dtype).removeprefix("torch."),
        "torch_threads": _torch_threads(),
        "seed": args.seed,
        "interrupted": run.interrupted,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "command": "python -m benchmarks.infill " + " ".join(sys.argv[1:] if argv is None else argv),
        "headline": list(HEADLINE),  # the columns to quote: pass_at_1 over n_tested tasks, exact_match over n
        "results": [summarize(d.spec, run.samples) for d in decoders],
        "decoders": {d.spec: d.describe() | ({"max_new_tokens": str(length)} if d.uses_length else {})
                     for d in decoders},
        "samples": [asdict(s) for s in run.samples],
    }
    if run.interrupted:
        print(f"interrupted: results cover the first {run.tasks_done} of {len(tasks)} tasks", file=sys.stderr)
    print(format_table(report))
    if args.json is not None:
        write_json_atomic(args.json, report)
    if args.plot is not None and run.tasks_done:
        from benchmarks.plot import pareto_plot

        title = (f"{', '.join(Path(t).name for t in args.tasks)}: n={run.tasks_done}, length {length}, "
                 f"{report['device']}")
        pareto_plot(report["results"], args.plot, title)
    return 130 if run.interrupted else 0


def _decoders(specs: list[str], seed: int):
    from decoding.config import DecodeConfig

    decoders = [parse_spec(spec, DecodeConfig(seed=seed)) for spec in specs]
    names = [d.spec for d in decoders]
    if len(set(names)) != len(names):
        raise ValueError(f"a decoder spec is given twice: {names}")
    return decoders


def interruptible() -> None:
    """Let Ctrl-C (SIGINT) stop a benchmark with what finished, also when the shell started it as a background
    job: bash without job control starts those with SIGINT ignored, and Python then installs no handler."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def setup_logging() -> None:
    """Progress messages of a benchmark command on stderr, without the libraries' chatter."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    for noisy in ("transformers", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def load_models_for(args: argparse.Namespace):
    """(models, max_context) from the model options and --threads / --max-context of a benchmark command."""
    import torch
    import transformers


    transformers.utils.logging.disable_progress_bar()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    models = load_models_from_args(args)
    limit = models.dlm.model.config.max_position_embeddings
    max_context = args.max_context or limit
    if not 2 <= max_context <= limit:
        raise ValueError(f"--max-context must be between 2 and the DLM's {limit} positions; got {max_context}")
    return models, max_context


def _model_info(args: argparse.Namespace) -> dict:
    from decoding import default_model_dir

    return {"dlm": str((args.dlm or default_model_dir() / "dlm").resolve()),
            "ar": str((args.ar or default_model_dir() / "ar").resolve())}


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def format_table(report: dict) -> str:
    """The results as an aligned text table, the headline first (pass@1, exact match), and a line that says
    over how many tasks each column is computed (the header carries the counts when all rows share them)."""
    results = report["results"]
    tested, total = _shared(r["n_tested"] for r in results), _shared(r["n"] for r in results)
    header = ["decoder", "pass@1" if not tested else f"pass@1 of {tested}",
              "exact" if total is None else f"exact of {total}", "syntax_ok", "sim", "top", "empty", "fill",
              "NFE/tok", "tok/s", "mean ms", "p95 ms"]
    rows = [header]
    for r in results:
        rows.append([
            r["decoder"], _pct(r["pass_at_1"]) + ("" if tested is not None or r["pass_at_1"] is None
                                                   else f" of {r['n_tested']}"),
            _pct(r["exact_match"]) + ("" if total is not None else f" of {r['n']}"), _pct(r["syntax_ok"]),
            _num(r["similarity"], 3), _pct(r["top_middle_share"]), _pct(r["empty"]), _num(r["fill"], 2),
            _num(r["nfe_per_token"], 3), _num(r["tokens_per_second"], 1), _num(r["mean_latency_ms"], 0),
            _num(r["p95_latency_ms"], 0),
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    tasks = "all tasks" if total is None else f"all {total} tasks"
    if tested == 0:
        lines.append(f"pass@1: no task has tests; exact and every other column: over {tasks}")
    else:
        with_tests = "the tasks with tests" if tested is None else f"the {tested} tasks with tests"
        lines.append(f"pass@1: share of {with_tests} whose tests pass; exact and every other column: over {tasks}")
    return "\n".join(lines)


def _shared(counts) -> int | None:
    """The one value of `counts`, or None when the rows differ (or there are none)."""
    values = set(counts)
    return values.pop() if len(values) == 1 else None


def write_json_atomic(path: Path, data: dict, indent: int = 1) -> None:
    """Write JSON to a temporary file beside `path`, then rename it over `path` (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=indent)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


if __name__ == "__main__":
    sys.exit(main())
