"""Tiny models of the real layouts, built in a second with no download: for tests and the benchmarks' --tiny.

    python -m training.tiny_models DIR      # writes DIR/dlm and DIR/ar

- a byte-level BPE tokenizer (training.tokenizer's, on a few lines of code) with the special tokens the
  method needs: <|endoftext|> (eos = pad), <|mask|>, <think>, </think>;
- a DLM in the Dream layout: Qwen2 architecture, `dlm_logit_shift` and `mask_token_id` in config.json;
- an AR executor in the Qwen3 layout with tied embeddings;
- the default model's shape (`build_tiny_fim_dlm`): a Qwen2 causal base whose tokenizer has Qwen2.5-Coder's FIM
  tokens, and a drafting LoRA adapter folder over it (`codila_dlm_layout` "fim", decoding.fim);
  `build_tiny_fim_executor`: its executor, a LoRA adapter folder over the base's first layer
  (`codila_executor_layers`, decoding.models.base_slice).
Weights are random (seeded): these models test plumbing, not quality.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

from training.tokenizer import EOS, MASK, tokenizer_from_texts

_SAMPLE = [
    "def add(a, b):\n    return a + b\n",
    "for i in range(10):\n    print(i)\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "import os\nimport sys\n\nif __name__ == '__main__':\n    main()\n",
]


def build_tokenizer(folder: Path, vocab_size: int = 320) -> PreTrainedTokenizerFast:
    """Byte-level BPE saved in `folder`: every string round-trips; specials get ids 0..3."""
    tokenizer = tokenizer_from_texts(_SAMPLE * 4, vocab_size)
    tokenizer.save_pretrained(folder)
    return tokenizer


def build_tiny_models(root: Path, seed: int = 0, hidden: int = 32, layers: int = 2) -> tuple[Path, Path]:
    """Write a tiny DLM and AR under root/dlm and root/ar; returns (dlm_dir, ar_dir)."""
    root = Path(root)
    dlm_dir, ar_dir = root / "dlm", root / "ar"
    torch.manual_seed(seed)
    for folder in (dlm_dir, ar_dir):
        folder.mkdir(parents=True, exist_ok=True)
        tok = build_tokenizer(folder)
    vocab = len(tok)
    eos, mask = tok.convert_tokens_to_ids(EOS), tok.convert_tokens_to_ids(MASK)
    dlm = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        eos_token_id=eos, pad_token_id=eos, bos_token_id=eos, tie_word_embeddings=False))
    dlm.save_pretrained(dlm_dir)
    cfg = json.loads((dlm_dir / "config.json").read_text())
    cfg.update(dlm_logit_shift=True, mask_token_id=mask)
    (dlm_dir / "config.json").write_text(json.dumps(cfg, indent=2))
    ar = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4, max_position_embeddings=64,
        eos_token_id=eos, pad_token_id=eos, bos_token_id=eos, tie_word_embeddings=True))
    ar.save_pretrained(ar_dir)
    return dlm_dir, ar_dir



FIM_SPECIALS = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|fim_pad|>",
                "<|quad_start|>", "<|quad_end|>"]  # the last two: the executor's boundary tokens (EXECUTOR_BOUNDARY)
EXECUTOR_BOUNDARY = ("<|quad_start|>", "<|quad_end|>")


def build_tiny_fim_base(folder: Path, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """A tiny Qwen2 causal LM whose tokenizer has Qwen2.5-Coder's FIM tokens: the default model's base shape."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=FIM_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_SAMPLE * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=FIM_SPECIALS[1:])
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    eos = fast.convert_tokens_to_ids("<|endoftext|>")
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=len(fast), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        eos_token_id=eos, pad_token_id=eos, bos_token_id=eos, tie_word_embeddings=False))
    model.save_pretrained(folder)
    return folder


def build_tiny_fim_dlm(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """A tiny causal-context DLM as the default model ships one: a drafting LoRA adapter folder (random,
    non-zero weights) over a tiny FIM base. Returns (base folder, adapter folder)."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from safetensors.torch import save_file

    root = Path(root)
    base = build_tiny_fim_base(root / "base", seed)
    adapter = root / "dlm"
    adapter.mkdir(parents=True, exist_ok=True)
    spec = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    torch.manual_seed(seed + 1)
    model = get_peft_model(Qwen2ForCausalLM.from_pretrained(base), spec)
    save_file({k: v.contiguous() for k, v in get_peft_model_state_dict(model).items()},
              str(adapter / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in spec.to_dict().items()}
    config["base_model_name_or_path"] = str(base)
    (adapter / "adapter_config.json").write_text(json.dumps(config, default=str))
    (adapter / "config.json").write_text(json.dumps({"codila_dlm_layout": "fim", "dlm_logit_shift": True}))
    return base, adapter


def build_tiny_fim_executor(root: Path, base: Path, seed: int = 0, layers: int = 1, block_size: int = 4) -> Path:
    """The executor of a tiny causal-context DLM (build_tiny_fim_dlm's `base`), as an executor folder ships: a
    LoRA adapter (random, non-zero weights) on every projection of the base's first `layers` layers, with
    config.json's `codila_executor_layers`, `codila_block_size` and `codila_boundary_tokens`. Returns its folder."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from safetensors.torch import save_file

    from decoding.models import base_slice
    from training.config import LORA_TARGETS

    folder = Path(root) / "ar"
    folder.mkdir(parents=True, exist_ok=True)
    spec = LoraConfig(r=4, lora_alpha=8, target_modules=list(LORA_TARGETS), init_lora_weights=False)
    torch.manual_seed(seed + 2)
    model = get_peft_model(base_slice(Qwen2ForCausalLM.from_pretrained(base), layers), spec)
    save_file({k: v.contiguous() for k, v in get_peft_model_state_dict(model).items()},
              str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in spec.to_dict().items()}
    config["base_model_name_or_path"] = str(base)
    (folder / "adapter_config.json").write_text(json.dumps(config, default=str))
    (folder / "config.json").write_text(json.dumps({"codila_executor_layers": layers, "codila_block_size": block_size,
                                                    "codila_boundary_tokens": list(EXECUTOR_BOUNDARY)}))
    return folder


if __name__ == "__main__":
    import sys

    print(*build_tiny_models(Path(sys.argv[1])))
