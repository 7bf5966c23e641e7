"""int8 weights for CPU decoding: torch's dynamic quantization of a model's Linear layers.

On a CPU one decoding pass reads every weight once, so its time is the bytes it reads. With the Linear
weights stored as int8 (one scale per output channel) a pass reads half of what bfloat16 reads; activations
stay float32 and are quantized per pass by the kernels (fbgemm / oneDNN). Measured on 2 cores, Qwen2.5-Coder-
0.5B with 464 cached tokens: one position 35 ms in int8 against 96 ms in bfloat16; a 464-token prefill is
compute-bound and about the same in both (~1.6 s).

What changes: every nn.Linear of the base (the LM head included) becomes a dynamic int8 Linear, except those
the model's config names in `codila_int8_keep_float`; LoRA adapter matrices stay float (they are small and
trained in float); the rest of the model runs in float32, except the input embedding, which keeps its dtype and
hands float32 on. The model is its own reference from then on: the `verified` method's output is the int8
base's greedy output.

Where int8 loses the model, measured on Qwen2.5-Coder-0.5B (KL of the next-token distribution to float32 over
the middles of 6 FIM tasks; bfloat16's own: 0.001):
- torch's dynamic Linear quantizes activations to 7 bits (`reduce_range`, against int16 overflow on CPUs
  without VNNI): KL 0.48. With all 8 bits, on a CPU with VNNI (it accumulates in int32): 0.13.
- A few down projections carry activation outliers (layers 0, 2 and 23 of this model: one layer quantized
  alone costs 0.25 of KL): kept float, 0.036 (39 MB more).
- The first token is the attention sink, with activations ~30x every other token's in some layers; it is
  prefilled alone (decoding.fim.prefill), or one activation scale per pass would flatten every other token
  of the prompt to a few levels.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
from torch.ao.quantization import per_channel_dynamic_qconfig


class Int8Linear(DynamicLinear):
    """torch's dynamic int8 Linear, with 8-bit activations where the CPU accumulates int8 products in int32
    (VNNI), 7-bit elsewhere (as torch does everywhere)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reduce_range = not has_vnni()  # chosen once, here: every pass runs the same kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params,
                                                  reduce_range=self.reduce_range).to(x.dtype)


@lru_cache(maxsize=1)
def has_vnni() -> bool:
    """True on an x86 CPU with VNNI (AVX512-VNNI, AVX-VNNI or AMX-INT8): products of 8-bit activations and
    weights cannot overflow there. Read from /proc/cpuinfo; False where that says nothing."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


def quantize_int8(model: nn.Module, keep_float: Sequence[str] = ()) -> int:
    """Replace, in place, every nn.Linear of `model` except LoRA matrices and those named in `keep_float`
    (module names of the base, e.g. "model.layers.2.mlp.down_proj"; each must name one) by a dynamic int8
    Linear, one layer at a time (peak memory: one layer in float32 on top of the model). Returns how many were
    replaced."""
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("int8 weights are for CPU decoding (torch's dynamic quantization runs on CPU only)")
    if isinstance(keep_float, str) or not all(isinstance(key, str) and key for key in keep_float):
        raise ValueError(f"codila_int8_keep_float must be a list of module names, not {keep_float!r}")
    # names, not modules: a list of the modules would keep every float32 copy alive to the end (+2 GB); the
    # largest first (the LM head), while few of the checkpoint's mapped pages have been read in
    candidates = [(module.weight.numel(), name) for name, module in model.named_modules()
                  if type(module) is nn.Linear and not _is_adapter(name)]
    kept = {key: [name for _, name in candidates if _names(name, key)] for key in keep_float}
    missing = [key for key, names in kept.items() if not names]
    if missing:
        raise ValueError(f"codila_int8_keep_float names {', '.join(missing)}: the model has no such Linear")
    linears = [(size, name) for size, name in candidates if not any(_names(name, key) for key in keep_float)]
    targets = [name for _, name in sorted(linears, key=lambda pair: -pair[0])]
    for name in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        linear = getattr(parent, attr).float()
        linear.qconfig = per_channel_dynamic_qconfig
        setattr(parent, attr, Int8Linear.from_float(linear))
        del linear
    embedding = model.get_input_embeddings()
    for module in model.modules():  # norms and adapters: float32, the activations' dtype
        if module is not embedding and not isinstance(module, Int8Linear):
            for param in module.parameters(recurse=False):
                param.data = param.data.float()
    # a copy: the checkpoint's memory map (1.3 GB of bfloat16 pages, all read by the conversion) is released
    # once no tensor points into it
    embedding.weight.data = embedding.weight.data.clone()
    embedding.register_forward_hook(lambda module, inputs, output: output.float())
    model.config.codila_int8 = True  # so later code (and logs) can tell
    gc.collect()
    _return_freed_memory()
    return len(targets)


def _return_freed_memory() -> None:
    """Give the float32 copies the conversion freed back to the OS (glibc keeps freed heap pages otherwise)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the memory is reused by the process instead
        pass


def is_int8(model: nn.Module) -> bool:
    return bool(getattr(getattr(model, "config", None), "codila_int8", False))


def _names(name: str, key: str) -> bool:
    """True when module `name` is the base's module `key`, bare or inside peft's wrappers
    ("base_model.model.model.layers.2.mlp.down_proj.base_layer" is "model.layers.2.mlp.down_proj")."""
    return f".{key}." in f".{name}."


def _is_adapter(name: str) -> bool:
    parts = name.split(".")
    return any(p in ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B") for p in parts)


def output_rows(model: nn.Module) -> int:
    """Rows of the model's LM head (its vocabulary of outputs), int8 or not (never by reading an int8 weight:
    that unpacks it, 0.7 s for the LM head)."""
    head = model.get_output_embeddings()
    rows = getattr(head, "out_features", None)
    return rows if isinstance(rows, int) else head.weight.shape[0]
