"""Decoding settings: one frozen, validated dataclass and the named presets users pick from.

The decode loop reads these once to choose its strategy; nothing here is tested inside the loop.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

METHODS = ("codila", "codila-top1", "dlm")
MODES = ("static", "dynamic")
KV_CACHES = ("none", "prefix", "dual")


@dataclass(frozen=True)
class DecodeConfig:
    """How one infill/completion is decoded.

    method:
        "codila"       - AR executor decodes blocks jointly from soft DLM marginals (the method).
        "codila-top1"  - ablation: the AR sees the embedding of each position's argmax token only.
        "dlm"          - baseline: the DLM alone commits tokens by its own confidence.
    block_size:      B, tokens per AR block (codila methods). 2, 4 or 8 in the paper; any 1..16 accepted.
    mode:            "static" commits exactly one block (B tokens) per iteration;
                     "dynamic" commits the longest block prefix whose mean AR entropy is below `tau`.
    tau:             dynamic threshold on mean per-token entropy, in nats. None = the AR's own (entropy
                     scales differ between models: `codila_tau` in its config.json, chosen by whoever
                     trained it; DEFAULT_TAU when it has none).
    scope:           candidate blocks considered per iteration, nearest the decoding frontier (paper: 10).
    tokens_per_step: k for method "dlm": the k lowest-entropy masked positions are committed per step
                     (k = 1 is Dream's own quality setting). Ignored when `confidence` is set.
    confidence:      method "dlm" threshold mode: commit every masked position whose top probability is
                     at least this (and at least the single most confident one). None = use tokens_per_step.
    max_new_tokens:  N, the number of masked positions between prefix and suffix (a budget: unused
                     positions become EOS and are dropped from the text).
    temperature, top_p:        sampling of the tokens the DLM commits itself (method "dlm", the dynamic
                               k = 1 fallback, the deadline flush); temperature 0 = argmax. The AR always
                               reads the DLM's temperature-1 marginals, as it was trained to.
    ar_temperature, ar_top_p:  sampling inside the AR executor (paper: 0.1 and 0.8).
    eos_penalty:     subtracted from the DLM's EOS logit before the softmax (0 = off). Counters EOS collapse.
    eos_casting:     once an EOS is committed, every later masked position becomes EOS (Dream-Coder).
    eos_min_prob:    a position becomes EOS only when the model (DLM or AR, whichever picks its token)
                     gives EOS at least this probability; below it EOS is banned from the choice
                     (decoding.sampling.eos_rule). 0 = EOS competes as an ordinary token.
    eos_frontier:    EOS may be committed only at the first masked position (for CoDiLA: inside the first
                     block with a masked position), where everything to its left is decided; elsewhere
                     positions get tokens and EOS casting clears them if the middle ends before. Off: EOS
                     anywhere, which lets a chain of EOS grow from the end of the budget into the middle.
    deadline_ms:     latency budget; the loop raises parallelism so the decode ends within it. None = off.
    kv_cache:        "none" recomputes the whole canvas every iteration; "prefix" caches the prefix's keys
                     and values, "dual" also the suffix's (approximate: refreshed every `cache_refresh`
                     iterations). Large speedups on CPU, where the prefix dominates each forward pass.
    cache_refresh:   iterations between full DLM forward passes when kv_cache is not "none".
    token_healing:   `infill` takes the prefix's last token off the canvas and makes the middle start
                     with its text (decoding.healing): a prefix cut mid-token, or at a newline the BPE
                     would have merged with the next line's indentation, is written as the model knows it.
    seed:            seeds every sampler used by one decode; the same seed gives the same output.
    """

    method: str = "codila"
    block_size: int = 4
    mode: str = "dynamic"
    tau: float | None = None
    scope: int = 10
    tokens_per_step: int = 1
    confidence: float | None = None
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    ar_temperature: float = 0.1
    ar_top_p: float = 0.8
    eos_penalty: float = 0.0
    eos_casting: bool = True
    eos_min_prob: float = 0.5
    eos_frontier: bool = True
    deadline_ms: float | None = None
    kv_cache: str = "none"
    cache_refresh: int = 4
    token_healing: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        _one_of("method", self.method, METHODS)
        _one_of("mode", self.mode, MODES)
        _one_of("kv_cache", self.kv_cache, KV_CACHES)
        _in_range("block_size", self.block_size, 1, 16, int)
        _in_range("scope", self.scope, 1, 10_000, int)
        _in_range("tokens_per_step", self.tokens_per_step, 1, 10_000, int)
        _in_range("max_new_tokens", self.max_new_tokens, 1, 8192, int)
        _in_range("cache_refresh", self.cache_refresh, 1, 10_000, int)
        if self.tau is not None:
            _in_range("tau", self.tau, 0.0, 100.0, (int, float))
        _in_range("temperature", self.temperature, 0.0, 100.0, (int, float))
        _in_range("ar_temperature", self.ar_temperature, 0.0, 100.0, (int, float))
        _in_range("top_p", self.top_p, 1e-6, 1.0, (int, float))
        _in_range("ar_top_p", self.ar_top_p, 1e-6, 1.0, (int, float))
        _in_range("eos_penalty", self.eos_penalty, 0.0, 1e4, (int, float))
        _in_range("eos_min_prob", self.eos_min_prob, 0.0, 1.0, (int, float))
        _in_range("seed", self.seed, 0, 2**63 - 1, int)
        if self.confidence is not None:
            _in_range("confidence", self.confidence, 0.0, 1.0, (int, float))
        if self.deadline_ms is not None:
            _in_range("deadline_ms", self.deadline_ms, 1.0, 3_600_000.0, (int, float))
        for name in ("eos_casting", "eos_frontier", "token_healing"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")

    def replace(self, **changes: Any) -> "DecodeConfig":
        """A copy with `changes` applied and validated (raises ValueError, leaving self untouched)."""
        return dataclasses.replace(self, **changes)


DEFAULT_TAU = 0.5  # dynamic threshold for an AR that does not name its own (`codila_tau`)

# Named presets for editor users: each sets several knobs at once. Values are starting points measured
# with `python -m benchmarks.infill` on the default model (see MODEL_CARD.md). None of them sets tau: an
# entropy threshold only means something for one model (the shipped AR's per-token entropy is ~6 nats where
# a fine-tuned Qwen3-0.6B's is well under 1), so dynamic modes use the AR's own `codila_tau`.
# scope 1 (only the frontier block is a candidate) in the editor presets: an editor's middle usually ends
# well before its token budget, and with a wider scope the lowest-entropy blocks are often far to the right,
# decoded and then thrown away when the middle ends. Measured with the default model over the server
# (`python -m benchmarks.server_latency --requests 30 --scope N`): p50 123 ms at scope 1, 513 ms at 2, 795 ms
# at 10, with syntax_ok within one task of each other on the public set at a 64-token budget (MODEL_CARD.md).
# accurate keeps the paper's scope 10: blocks in any order by entropy.
PRESETS: dict[str, dict[str, Any]] = {
    "fast": dict(method="codila", block_size=8, mode="dynamic", scope=1, kv_cache="dual"),
    # static: fewer iterations than dynamic at the same B (0.25 vs ~0.36 DLM passes per token on the
    # default model), hence the 32-token latency target; dynamic is the quality knob (MODEL_CARD.md)
    "balanced": dict(method="codila", block_size=4, mode="static", scope=1, kv_cache="dual"),
    "accurate": dict(method="codila", block_size=2, mode="dynamic", scope=10, kv_cache="none"),
}


def preset(name: str, **overrides: Any) -> DecodeConfig:
    """DecodeConfig for preset `name` ("fast", "balanced", "accurate") with `overrides` on top."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return DecodeConfig(**{**PRESETS[name], **overrides})


def _one_of(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _in_range(name: str, value: Any, low: float, high: float, types: type | tuple[type, ...]) -> None:
    if isinstance(value, bool) or not isinstance(value, types):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}; got {value!r}")
