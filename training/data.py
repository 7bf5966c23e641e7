"""Training samples in the shapes the models meet at inference.

The editor's canvas is prefix + N masks + suffix, where the true middle is usually shorter than the budget
N and the unused tail becomes `<|endoftext|>`. `sample_infill` cuts such a middle out of a source file (from
the cursor to the end of a line, 1 line up to `max_middle` tokens) and `infill_sequence` lays it out as
prefix + middle + EOS padding + suffix, so that the DLM learns to close a middle with EOS and the AR
executor is fine-tuned on the blocks it will decode.

Every random choice takes a `random.Random`, so a sample is a function of its seed (exact resume).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from decoding.healing import heal_split


@dataclass(frozen=True)
class InfillSpan:
    """Token ids of one cut: the text before the cursor, the middle to generate, the text after it."""

    prefix: list[int]
    middle: list[int]
    suffix: list[int]


@dataclass(frozen=True)
class Example:
    """One fine-tuning / infilling sample.

    ids:    (L,) context + response + context, already laid out (response padded with EOS to its budget).
    start:  index of the response's first token in ids.
    length: number of response positions (the region split into blocks; a multiple of the block size
            once `pad_response` has run).
    """

    ids: list[int]
    start: int
    length: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.start + self.length <= len(self.ids) or self.length < 1:
            raise ValueError(f"response [{self.start}, {self.start + self.length}) does not fit in {len(self.ids)} ids")


def sample_infill(text: str, tokenizer, rng: random.Random, max_middle: int = 64,
                  context_chars: int = 4096, heal: bool = False) -> InfillSpan | None:
    """Cut an editor-shaped middle out of `text`: from a cursor to the end of a line, 1+ lines.

    The cursor sits at a line start, after the indentation, or anywhere in the line (one third each); the
    middle runs to the end of that line or of one of the next few, with or without its final newline,
    and is cut to at most `max_middle` tokens. Returns None for text with no non-blank line.
    heal: lay the boundary out as token healing does at inference (decoding.healing.heal_split): the
    prefix loses its last token and the middle starts with that token's text.
    """
    lines = text.splitlines(keepends=True)
    candidates = [i for i, line in enumerate(lines) if line.strip()]
    if not candidates:
        return None
    i = rng.choice(candidates)
    line_start = sum(len(line) for line in lines[:i])
    line = lines[i]
    indent = len(line) - len(line.lstrip())
    content_end = len(line.rstrip("\r\n"))
    col = rng.choice((0, indent, rng.randrange(indent, max(indent + 1, content_end))))
    extra = min(int(rng.expovariate(1.0)), len(lines) - 1 - i)  # 0 more lines most often
    end_line = lines[i + extra]
    end = sum(len(x) for x in lines[: i + extra]) + len(end_line)
    if rng.random() < 0.7:
        end -= len(end_line) - len(end_line.rstrip("\r\n"))  # stop before the newline
    cursor = line_start + col
    if end <= cursor:
        end = line_start + content_end
    if end <= cursor:
        return None
    if heal:
        prefix, middle = heal_split(tokenizer, text[max(0, cursor - context_chars):cursor], text[cursor:end])
    else:
        prefix = tokenizer.encode(text[max(0, cursor - context_chars):cursor], add_special_tokens=False)
        middle = tokenizer.encode(text[cursor:end], add_special_tokens=False)
    suffix = tokenizer.encode(text[end:end + context_chars], add_special_tokens=False)
    if not middle:
        return None
    return InfillSpan(prefix, middle[:max_middle], middle[max_middle:] + suffix)


def infill_sequence(span: InfillSpan, budget: int, seq_len: int, eos_id: int, rng: random.Random,
                    max_suffix: int | None = None) -> Example:
    """Lay out prefix + middle + EOS * (budget - len(middle)) + suffix in exactly `seq_len` ids.

    The suffix keeps a random share of what is left (up to `max_suffix`, default a third of seq_len) and
    the prefix fills the rest from its end; a short file is right-padded with EOS (end of document).
    """
    if budget < len(span.middle):
        raise ValueError(f"budget {budget} is shorter than the middle ({len(span.middle)} tokens)")
    if budget >= seq_len:
        raise ValueError(f"budget {budget} leaves no room for context in seq_len {seq_len}")
    room = seq_len - budget
    max_suffix = seq_len // 3 if max_suffix is None else max_suffix
    n_suffix = min(len(span.suffix), rng.randint(0, min(room, max_suffix)))
    n_prefix = min(len(span.prefix), room - n_suffix)
    prefix = span.prefix[len(span.prefix) - n_prefix:]
    region = span.middle + [eos_id] * (budget - len(span.middle))
    ids = prefix + region + span.suffix[:n_suffix]
    ids = ids + [eos_id] * (seq_len - len(ids))
    return Example(ids, len(prefix), budget)


def pad_response(example: Example, block_size: int, eos_id: int) -> Example:
    """Extend the response with EOS so that it is a whole number of blocks (EOS ids inserted after it)."""
    extra = -example.length % block_size
    if extra == 0:
        return example
    end = example.start + example.length
    ids = example.ids[:end] + [eos_id] * extra + example.ids[end:]
    return Example(ids, example.start, example.length + extra)
