"""Compare diffusion LMs on the pretraining validation split: masked-token accuracy and cross-entropy.

    python -m training.evaluate runs/pretrain/dlm4 runs/pretrain/dlm5
    python -m training.evaluate decoding/default_model/dlm --corpus ~/my-project --rates 0.15,0.5,0.9

The text is the validation files `training.pretrain` keeps aside for the same --corpus, cut into
non-overlapping windows of --seq-len tokens, and every model sees the same masks (seeded), so differences
between rows are the models'. Per masking rate r (each position masked with probability r): acc = argmax
hits over masked tokens, ce = mean cross-entropy over them (nats), n = masked tokens. The standard error of
an accuracy p is sqrt(p (1 - p) / n): about 0.5 points on the default corpus at r = 0.15. Pretraining's own
`acc@0.15` uses 8 windows (about 600 masked tokens, 2 points of noise); use this to decide between models.

The benchmark's own middles, masked whole in the harness's canvas, are scored by
`python -m benchmarks.dlm_middles`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from decoding.models import DiffusionLM, dlm_logits, load_dlm
from training.pretrain import Corpus, corpus_files


def validation_windows(dlm: DiffusionLM, corpus: str, seq_len: int) -> torch.Tensor:
    """(W, seq_len) token ids: the validation files of `corpus` as one stream (EOS between files), cut."""
    _, val_files = corpus_files(corpus)
    stream = Corpus(val_files, dlm.tokenizer, dlm.eos_id).stream
    count = len(stream) // seq_len
    if count < 1:
        raise ValueError(f"the validation files of {corpus!r} hold {len(stream)} tokens, "
                         f"less than one window of {seq_len}")
    return stream[:count * seq_len].view(count, seq_len)


@torch.no_grad()
def masked_scores(dlm: DiffusionLM, windows: torch.Tensor, rate: float, seed: int = 0, batch: int = 8) -> dict:
    """{"acc", "ce", "n"} over positions masked with probability `rate` (masks depend on seed and shape only)."""
    masked = torch.rand(windows.shape, generator=torch.Generator().manual_seed(seed)) < rate
    hits, ce, n = 0, 0.0, 0
    for i in range(0, len(windows), batch):
        ids, m = windows[i:i + batch].to(dlm.device), masked[i:i + batch].to(dlm.device)
        logits = dlm_logits(dlm, ids.masked_fill(m, dlm.mask_id))[m].float()  # (M, V)
        hits += int((logits.argmax(-1) == ids[m]).sum())
        ce += float(F.cross_entropy(logits, ids[m], reduction="sum"))
        n += int(m.sum())
    return {"acc": hits / max(n, 1), "ce": ce / max(n, 1), "n": n}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("dlm", nargs="+", type=Path, help="DLM folders to compare (same tokenizer)")
    p.add_argument("--corpus", default="stdlib", help="stdlib (default) or the folder a model was pretrained on")
    p.add_argument("--rates", default="0.15,0.5", help="masking rates, comma-separated (default 0.15,0.5)")
    p.add_argument("--seq-len", type=int, default=512, help="tokens per window (default 512, pretraining's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the masks (default 0)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, ...")
    p.add_argument("--json", action="store_true", help="print the scores as one JSON list instead of text")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    try:
        rates = [float(r) for r in args.rates.split(",") if r.strip()]
        if not rates or not all(0 < r <= 1 for r in rates) or args.seq_len < 2:
            raise ValueError("--rates must be numbers in (0, 1] and --seq-len at least 2")
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        rows, windows, vocab = [], None, None
        for folder in args.dlm:
            dlm = load_dlm(folder, device=args.device, dtype="float32")
            if windows is None:
                windows, vocab = validation_windows(dlm, args.corpus, args.seq_len), dlm.tokenizer.get_vocab()
            elif dlm.tokenizer.get_vocab() != vocab:
                raise ValueError(f"{folder} has another tokenizer than {args.dlm[0]}: token accuracies do not compare")
            scores = {f"{r:g}": masked_scores(dlm, windows, r, args.seed) for r in rates}
            rows.append({"dlm": str(folder), "windows": len(windows), **scores})
            if not args.json:
                print(f"{folder}: " + "  ".join(f"@{key}: acc {s['acc']:.4f} ce {s['ce']:.4f} (n {s['n']})"
                                                for key, s in scores.items()), flush=True)
    except ValueError as err:
        p.exit(2, f"python -m training.evaluate: error: {err}\n")
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
