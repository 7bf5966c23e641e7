"""int8 weights for CPU decoding: torch's dynamic quantization of a model's Linear layers.

On a CPU one decoding pass reads every weight once, so its time is the bytes it reads. With the Linear
weights stored as int8 (one scale per output channel) a pass reads half of what bfloat16 reads; activations
stay float32 and are quantized per pass by the kernels (fbgemm / oneDNN). Measured on 2 cores, Qwen2.5-Coder-
0.5B with 464 cached tokens: one position 31 ms in int8 against 96 ms in bfloat16; a 464-token prefill is
compute-bound and about the same in both (~1.6 s).

What changes: every nn.Linear of the base (the LM head included) becomes a dynamic int8 Linear; LoRA adapter
matrices stay float (they are small and trained in float); the rest of the model runs in float32, except the
input embedding, which keeps its dtype and hands float32 on. The model is its own reference from then on: the
`verified` method's output is the int8 base's greedy output.
"""

from __future__ import annotations

import ctypes
import gc

import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as Int8Linear
from torch.ao.quantization import per_channel_dynamic_qconfig


def quantize_int8(model: nn.Module) -> int:
    """Replace, in place, every nn.Linear of `model` except LoRA matrices by a dynamic int8 Linear, one layer
    at a time (peak memory: one layer in float32 on top of the model). Returns how many were replaced."""
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("int8 weights are for CPU decoding (torch's dynamic quantization runs on CPU only)")
    # names, not modules: a list of the modules would keep every float32 copy alive to the end (+2 GB); the
    # largest first (the LM head), while few of the checkpoint's mapped pages have been read in
    linears = [(module.weight.numel(), name) for name, module in model.named_modules()
               if type(module) is nn.Linear and not _is_adapter(name)]
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


def _is_adapter(name: str) -> bool:
    parts = name.split(".")
    return any(p in ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B") for p in parts)


def output_rows(model: nn.Module) -> int:
    """Rows of the model's LM head (its vocabulary of outputs), int8 or not (never by reading an int8 weight:
    that unpacks it, 0.7 s for the LM head)."""
    head = model.get_output_embeddings()
    rows = getattr(head, "out_features", None)
    return rows if isinstance(rows, int) else head.weight.shape[0]
