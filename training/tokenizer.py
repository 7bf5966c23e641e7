"""The default model's tokenizer: a byte-level BPE trained on the training split of the corpus.

Both models of the default pair use this one tokenizer (same ids), so the DLM -> AR vocabulary alignment
is the identity except for the mask token, as for Dream-Coder + Qwen3 below id 151665.
Special tokens take ids 0..3: `<|endoftext|>` (eos = pad), `<|mask|>` (the DLM's mask), `<think>` and
`</think>` (the AR executor's boundary tokens around the soft block embeddings).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from training.corpus import read_text

log = logging.getLogger(__name__)

EOS, MASK, THINK_OPEN, THINK_CLOSE = "<|endoftext|>", "<|mask|>", "<think>", "</think>"
SPECIAL_TOKENS = [EOS, MASK, THINK_OPEN, THINK_CLOSE]


def train_tokenizer(files: Iterable[Path], vocab_size: int = 4096) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on the text of `files`; every string round-trips (no unknown token)."""
    return tokenizer_from_texts((read_text(p) for p in files), vocab_size)


def tokenizer_from_texts(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts`; the special tokens take ids 0..3."""
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)} (bytes + specials); got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS, mask_token=MASK,
                                   additional_special_tokens=[THINK_OPEN, THINK_CLOSE])
    assert [fast.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    log.info("trained byte-level BPE: %d tokens", len(fast))
    return fast


def main(argv: list[str] | None = None) -> None:
    """python -m training.tokenizer --output DIR [--vocab-size 4096]: train on the training split, save to DIR."""
    import argparse

    from training.corpus import split_validation, stdlib_files

    p = argparse.ArgumentParser(description="Train the default model's byte-level BPE on the training split.")
    p.add_argument("--output", required=True, help="folder for tokenizer.json + tokenizer_config.json")
    p.add_argument("--vocab-size", type=int, default=4096, help="vocabulary size, special tokens included")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    train_files, _ = split_validation(stdlib_files("train"))
    train_tokenizer(train_files, args.vocab_size).save_pretrained(args.output)


if __name__ == "__main__":
    main()
