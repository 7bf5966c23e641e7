"""Decode speed of the paper's pair on one GPU: Dream-Coder-v0-Instruct-7B + Qwen3-0.6B architectures with
random weights, static CoDiLA at B = 2, 4, 8 and the DLM alone at one token per step, against the paper's
A100 figures (HumanEval, batch 1: 18 / 33 / 60 tokens/s; DLM alone 9).

    python -m benchmarks.real_pair_speed --device cuda                        # on a GPU (about 17 GB of weights)
    python -m benchmarks.real_pair_speed --device cuda --max-new-tokens 768 --json benchmarks/results/real-pair-speed.json
    python -m benchmarks.real_pair_speed --tiny --device cpu --max-new-tokens 16    # the same code path, tiny layers

Random weights measure speed faithfully: every decode at static B commits exactly B positions per DLM
forward, so its cost is (N / B) DLM passes over the canvas plus as many batched AR block decodes, whatever
the weights say. The models are built on the device in bf16 from the published configurations (no
download, no weight files) and run through decoding.decode with EOS casting off and EOS banned, so every
run commits all N positions. tokens/s = N / decode seconds, median of --repeats after one warm-up decode.
Vocabulary alignment is the paper's (ids below 151665 shared); tokens are ids, never text.

Measured on an H200 on 2026-11-30: README.md ("The real pair on one GPU") and
benchmarks/results/real-pair-speed-h200.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen3Config

from decoding.config import DecodeConfig
from decoding.loop import decode
from decoding.models import DiffusionLM, ExecutorLM, ModelPair, make_bidirectional
from decoding.soft import VocabAlignment

PAPER_TOKENS_PER_S = {"codila:b=2": 18.0, "codila:b=4": 33.0, "codila:b=8": 60.0, "dlm:k=1": 9.0}  # A100, HumanEval
EOS, IM_END, BOS, MASK, THINK, END_THINK = 151_643, 151_645, 151_665, 151_666, 151_667, 151_668
SHARED = 151_665  # ids 0..151664 mean the same in both vocabularies
# the published config.json values (Dream-Coder-v0-Instruct-7B: Qwen2.5-7B layout; Qwen3-0.6B)
DREAM_CODER_7B = dict(vocab_size=152_064, hidden_size=3584, intermediate_size=18_944, num_hidden_layers=28,
                      num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32_768,
                      rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=False)
QWEN3_06B = dict(vocab_size=151_936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                 num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40_960,
                 rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


class _IdsOnly:
    """The little of a tokenizer that decode() touches when it is given ids: the pad id and decode."""

    pad_token_id = EOS

    def decode(self, ids, **kwargs) -> str:
        return f"<{len(ids)} tokens>"


def build_pair(device: torch.device, dtype: torch.dtype, tiny: bool = False) -> ModelPair:
    """The two architectures with random weights, built straight on `device` in `dtype`."""
    dlm_arch = {**DREAM_CODER_7B, **(TINY if tiny else {})}
    ar_arch = {**QWEN3_06B, **(dict(TINY, head_dim=16) if tiny else {})}
    torch.manual_seed(0)
    with torch.device(device):
        dlm = AutoModelForCausalLM.from_config(Qwen2Config(**dlm_arch, eos_token_id=EOS, pad_token_id=EOS,
                                                           bos_token_id=BOS), dtype=dtype, attn_implementation="sdpa")
        ar = AutoModelForCausalLM.from_config(Qwen3Config(**ar_arch, eos_token_id=IM_END, bos_token_id=EOS),
                                              dtype=dtype, attn_implementation="sdpa")
    make_bidirectional(dlm)
    for model in (dlm, ar):
        model.requires_grad_(False).eval()
    shared = torch.zeros(dlm_arch["vocab_size"], dtype=torch.bool)
    shared[:SHARED] = True
    return ModelPair(DiffusionLM(dlm, _IdsOnly(), MASK, EOS, logit_shift=True, stop_ids=(IM_END,)),
                     ExecutorLM(ar, _IdsOnly(), THINK, END_THINK),
                     VocabAlignment(shared, ar_arch["vocab_size"]).to(device))


@dataclass(frozen=True)
class Run:
    name: str
    config: DecodeConfig


def runs(max_new_tokens: int, kv_cache: str) -> list[Run]:
    """Static CoDiLA at the paper's three block sizes (scope 10) and the DLM alone at one token per step."""
    common = dict(max_new_tokens=max_new_tokens, eos_casting=False, eos_penalty=1e4, kv_cache=kv_cache)
    out = [Run(f"codila:b={b}", DecodeConfig(method="codila", block_size=b, mode="static", scope=10, **common))
           for b in (2, 4, 8)]
    return out + [Run("dlm:k=1", DecodeConfig(method="dlm", tokens_per_step=1, **common))]


def measure(pair: ModelPair, run: Run, prompt: list[int], repeats: int) -> dict:
    """Median tokens/s of `repeats` decodes after one warm-up; DLM passes and AR calls of the last one."""
    decode(pair, prompt, [], run.config)  # warm-up: kernels, allocator
    seconds, stats = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = decode(pair, prompt, [], run.config)
        seconds.append(time.perf_counter() - t0)
        stats = result.stats
    n = run.config.max_new_tokens
    median = statistics.median(seconds)
    return {"decoder": run.name, "tokens_per_s": n / median, "paper_tokens_per_s": PAPER_TOKENS_PER_S[run.name],
            "seconds_median": median, "seconds": seconds, "dlm_forwards": stats.dlm_forwards,
            "ar_calls": stats.ar_calls, "dlm_seconds": stats.dlm_seconds, "ar_seconds": stats.ar_seconds}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (only sensible with --tiny)")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"), help="weights' dtype")
    p.add_argument("--max-new-tokens", type=int, default=256, help="N, masked positions per decode (paper: 768 on HumanEval)")
    p.add_argument("--prompt-tokens", type=int, default=128, help="prompt length in tokens (random ids)")
    p.add_argument("--kv-cache", default="none", choices=("none", "prefix", "dual"), help="the DLM cache (paper: none)")
    p.add_argument("--repeats", type=int, default=3, help="timed decodes per decoder, after one warm-up")
    p.add_argument("--tiny", action="store_true", help="2-layer, 64-wide stand-ins with the real vocabularies (tests)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.exit(2, "real_pair_speed: no CUDA device here; run it on a GPU (or --tiny --device cpu to check the script)\n")
    pair = build_pair(device, getattr(torch, args.dtype), tiny=args.tiny)
    prompt = torch.randint(0, SHARED - 1, (args.prompt_tokens,), generator=torch.Generator().manual_seed(1)).tolist()
    rows = [measure(pair, run, prompt, args.repeats) for run in runs(args.max_new_tokens, args.kv_cache)]
    meta = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "dtype": args.dtype,
            "tiny": args.tiny, "max_new_tokens": args.max_new_tokens, "prompt_tokens": args.prompt_tokens,
            "kv_cache": args.kv_cache, "repeats": args.repeats, "torch": torch.__version__,
            "peak_gpu_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None}
    print(f"{'decoder':<12} {'tokens/s':>9} {'paper (A100)':>13} {'DLM passes':>11} {'AR calls':>9}")
    for r in rows:
        print(f"{r['decoder']:<12} {r['tokens_per_s']:>9.1f} {r['paper_tokens_per_s']:>13.0f} "
              f"{r['dlm_forwards']:>11d} {r['ar_calls']:>9d}")
    print(json.dumps(meta), file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
