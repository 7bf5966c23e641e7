"""Tiny checkpoints laid out exactly like the published folders of the paper's pair (no hub, no download).

- `write_dream_coder(folder)`: Dream-Coder-v0-Instruct-7B's layout: config.json with model_type "Dream",
  DreamModel and auto_map to its remote code, sharded safetensors (model-0000N-of-0000M.safetensors +
  model.safetensors.index.json) in bfloat16, generation_config.json, and the tokenizer as Dream ships it:
  vocab.json + merges.txt + tokenizer_config.json naming the remote `DreamTokenizer` + special_tokens_map.json,
  no tokenizer.json. Vocabulary rows 152,064; special tokens at their real ids 151643-151666 (eos = pad =
  <|endoftext|> 151643, <|im_end|> 151645, <|beginoftext|> 151665 = bos, <|mask|> 151666).
- `write_qwen3(folder)`: Qwen3-0.6B's layout: Qwen3ForCausalLM with tied embeddings, 151,936 rows, one
  model.safetensors in bfloat16, tokenizer.json + vocab.json + merges.txt + tokenizer_config.json
  (Qwen2Tokenizer, eos <|im_end|>, pad <|endoftext|>, no bos), specials 151643-151668 (<think> 151667,
  </think> 151668; 151665/151666 are <tool_response>/</tool_response>).

Both share the same byte-level BPE for ids 0..151642 (a small BPE trained here, padded with tokens no merge
reaches), so ids 0..151664 mean the same in both, as in the real pair. Hidden sizes are tiny and the weights
random (seeded). The remote-code files only raise: loading must never run them unless asked to.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch

N_REGULAR = 151_643  # ids 0..151642 are BPE tokens in both real tokenizers
DREAM_ROWS = 152_064
QWEN3_ROWS = 151_936
QWEN_SPECIALS = [  # ids 151643.. in both; special=False where Qwen marks them so
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True), ("<|quad_start|>", True),
    ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False),
]
DREAM_SPECIALS = QWEN_SPECIALS + [("<|beginoftext|>", True), ("<|mask|>", True)]
QWEN3_SPECIALS = QWEN_SPECIALS + [("<tool_response>", False), ("</tool_response>", False), ("<think>", False),
                                  ("</think>", False)]
# chat templates in the ChatML shape both models use (written here, not copied from the published files)
DREAM_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN3_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n\n</think>\n\n{% endif %}"
)
PRETOKENIZE_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                     r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_CODE = [
    "def add(a, b):\n    return a + b\n",
    "for i in range(10):\n    print(i)\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "import os\nimport sys\n\nif __name__ == '__main__':\n    main()\n",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "Write a function that returns the sum of a list of numbers.\n",
]
REMOTE_CODE = 'raise RuntimeError("remote code executed")\n'


@lru_cache(maxsize=1)
def bpe_vocab() -> tuple[tuple[tuple[str, int], ...], tuple[str, ...]]:
    """The shared BPE: (vocab items (token, id) for ids 0..151642, merges). A small byte-level BPE trained on
    code with Qwen2's pre-tokenizer, then padded with `<fillerN>` tokens that no merge produces."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_CODE * 8, trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = dict(model["vocab"])
    merges = tuple(" ".join(m) if isinstance(m, list) else m for m in model["merges"])
    for i in range(len(vocab), N_REGULAR):
        vocab[f"<filler{i}>"] = i
    assert len(vocab) == N_REGULAR and sorted(vocab.values()) == list(range(N_REGULAR))
    return tuple(vocab.items()), merges


def _added_tokens_decoder(specials: list[tuple[str, bool]]) -> dict:
    return {str(N_REGULAR + i): {"content": text, "lstrip": False, "normalized": False, "rstrip": False,
                                 "single_word": False, "special": special}
            for i, (text, special) in enumerate(specials)}


def _write_bpe_files(folder: Path) -> None:
    vocab, merges = bpe_vocab()
    (folder / "vocab.json").write_text(json.dumps(dict(vocab), ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def _tokenizer_json(specials: list[tuple[str, bool]]) -> str:
    """tokenizer.json in the shape Qwen ships it (BPE, Qwen2 split regex + byte level, NFC)."""
    vocab, merges = bpe_vocab()
    added = [{"id": N_REGULAR + i, "content": text, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": special} for i, (text, special) in enumerate(specials)]
    spec = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": PRETOKENIZE_REGEX}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": dict(vocab), "merges": list(merges)},
    }
    return json.dumps(spec, ensure_ascii=False)


def _save_weights(model: torch.nn.Module, folder: Path, shard: str | None) -> None:
    model.to(torch.bfloat16).save_pretrained(folder, max_shard_size=shard or "2GB")
    for name in ("config.json", "generation_config.json"):
        (folder / name).unlink(missing_ok=True)


def write_dream_coder(folder: Path, hidden: int = 16, layers: int = 2, seed: int = 0) -> Path:
    """A Dream-Coder-v0-Instruct-7B-shaped folder (see the module docstring); returns it."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    arch = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=2,
                num_key_value_heads=1, max_position_embeddings=32768, rms_norm_eps=1e-6, vocab_size=DREAM_ROWS,
                tie_word_embeddings=False, bos_token_id=151665, eos_token_id=151643, pad_token_id=151643)
    _save_weights(Qwen2ForCausalLM(Qwen2Config(**arch, rope_theta=1e6)), folder, shard="4MB")
    assert (folder / "model.safetensors.index.json").exists(), "the fixture must be sharded like the real folder"
    config = dict(
        architectures=["DreamModel"], attention_dropout=0.0,
        auto_map={"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
        hidden_act="silu", initializer_range=0.02, mask_token_id=151666, max_window_layers=layers,
        model_type="Dream", rope_scaling=None, rope_theta=1000000.0, sliding_window=None, torch_dtype="bfloat16",
        transformers_version="4.46.2", use_cache=True, use_sliding_window=False, **arch)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 151665, "eos_token_id": 151643, "pad_token_id": 151643, "transformers_version": "4.46.2"}))
    _write_bpe_files(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps(dict(
        add_bos_token=False, add_prefix_space=False, added_tokens_decoder=_added_tokens_decoder(DREAM_SPECIALS),
        additional_special_tokens=[t for t, _ in DREAM_SPECIALS[1:14]],
        auto_map={"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]},
        bos_token="<|beginoftext|>", chat_template=DREAM_CHAT_TEMPLATE, clean_up_tokenization_spaces=False,
        eos_token="<|endoftext|>", errors="replace", mask_token="<|mask|>", model_max_length=32768,
        pad_token="<|endoftext|>", split_special_tokens=False, tokenizer_class="DreamTokenizer", unk_token=None,
    ), indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps(dict(
        additional_special_tokens=[t for t, _ in DREAM_SPECIALS[1:14]], bos_token="<|beginoftext|>",
        eos_token="<|endoftext|>", mask_token="<|mask|>", pad_token="<|endoftext|>"), indent=2))
    for name in ("configuration_dream.py", "modeling_dream.py", "tokenization_dream.py", "generation_utils.py"):
        (folder / name).write_text(REMOTE_CODE)
    return folder


def write_qwen3(folder: Path, hidden: int = 16, layers: int = 2, seed: int = 1) -> Path:
    """A Qwen3-0.6B-shaped folder (see the module docstring); returns it."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    arch = dict(hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers, num_attention_heads=2,
                num_key_value_heads=1, head_dim=hidden // 2, max_position_embeddings=40960, rms_norm_eps=1e-6,
                vocab_size=QWEN3_ROWS, tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151645)
    _save_weights(Qwen3ForCausalLM(Qwen3Config(**arch, rope_theta=1e6)), folder, shard=None)
    config = dict(architectures=["Qwen3ForCausalLM"], attention_bias=False, attention_dropout=0.0, hidden_act="silu",
                  initializer_range=0.02, max_window_layers=layers, model_type="qwen3", rope_scaling=None,
                  rope_theta=1000000, sliding_window=None, torch_dtype="bfloat16", transformers_version="4.51.0",
                  use_cache=True, use_sliding_window=False, **arch)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 151643, "do_sample": True, "eos_token_id": [151645, 151643], "pad_token_id": 151643,
         "temperature": 0.6, "top_k": 20, "top_p": 0.95, "transformers_version": "4.51.0"}))
    _write_bpe_files(folder)
    (folder / "tokenizer.json").write_text(_tokenizer_json(QWEN3_SPECIALS), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(dict(
        add_bos_token=False, add_prefix_space=False, added_tokens_decoder=_added_tokens_decoder(QWEN3_SPECIALS),
        additional_special_tokens=[t for t, _ in QWEN3_SPECIALS[1:14]], bos_token=None,
        chat_template=QWEN3_CHAT_TEMPLATE, clean_up_tokenization_spaces=False, eos_token="<|im_end|>",
        errors="replace", model_max_length=131072, pad_token="<|endoftext|>", split_special_tokens=False,
        tokenizer_class="Qwen2Tokenizer", unk_token=None,
    ), indent=2))
    return folder
