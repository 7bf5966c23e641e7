"""Token healing: the prefix/middle boundary tokenised the way the model saw text in training.

A byte-level BPE merges across the place where the editor cuts the text. SmolLM2's tokenizer, for one,
joins a newline with the indentation after it: "\\n    for" is "\\n   " + " for", so a prefix that ends at
"\\n    " ends on a token the model almost never saw followed by code, and it answers with `#`, fences or
blank lines. Healing backs the prefix off by its last token and makes the middle start with that token's
text (`removed`), so the model writes the boundary in its own tokenisation.

The constraint is on text, not on one token: the first middle token must either start with `removed`
("\\n        " after "\\n    ") or be a proper prefix of it ("\\n   " before " for"), and in that second case
the next token continues the same rule with what is left. `TokenTexts.allowed` gives the ids that keep the
middle consistent with the remaining text; `advance` says what remains after a token.

Training lays its samples out with `heal_split` too, so the models learn exactly the boundaries they meet.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch


@dataclass(frozen=True)
class Healed:
    """prefix_ids: the prefix without its last token; removed: that token's text (bytes), which the middle
    must begin with (b"" when nothing was removed)."""

    prefix_ids: list[int]
    removed: bytes


class TokenTexts:
    """The byte string of every token id of a tokenizer, and the healing constraint over them.

    texts: one bytes object per id in [0, vocab); special tokens get b"" (never allowed while healing).
    """

    def __init__(self, texts: list[bytes]):
        self.texts = texts

    @classmethod
    def of(cls, tokenizer, vocab: int | None = None) -> "TokenTexts":
        return _token_texts(tokenizer, vocab or len(tokenizer))

    def allowed(self, remaining: bytes) -> torch.Tensor:
        """(V,) bool: ids whose text starts with `remaining` or is a non-empty proper prefix of it."""
        return _allowed(self, remaining)

    def advance(self, remaining: bytes, token: int) -> bytes:
        """What is left of `remaining` after `token` (b"" once the token covers it)."""
        text = self.texts[token] if 0 <= token < len(self.texts) else b""
        return remaining[len(text):] if remaining.startswith(text) and text else b""


def heal_prefix(prefix_ids: list[int], texts: TokenTexts, special_ids: frozenset[int] = frozenset()) -> Healed:
    """Remove the prefix's last token unless there is none or it is special (a special token is not text)."""
    if not prefix_ids or prefix_ids[-1] in special_ids or not texts.texts[prefix_ids[-1]]:
        return Healed(list(prefix_ids), b"")
    return Healed(list(prefix_ids[:-1]), texts.texts[prefix_ids[-1]])


def heal_split(tokenizer, prefix: str, middle: str) -> tuple[list[int], list[int]]:
    """Training's view of one cut: (prefix ids without their last token, ids of that token's text + middle).

    Exactly what inference produces with healing on: the canvas holds the first list, and the middle the
    model must write is the natural tokenisation of the removed text followed by the true middle.
    """
    prefix_ids = tokenizer.encode(prefix, add_special_tokens=False)
    if not prefix_ids:
        return [], tokenizer.encode(middle, add_special_tokens=False)
    removed = tokenizer.decode(prefix_ids[-1:])
    if not prefix.endswith(removed):  # a token that is not whole characters: leave the boundary alone
        return prefix_ids, tokenizer.encode(middle, add_special_tokens=False)
    return prefix_ids[:-1], tokenizer.encode(removed + middle, add_special_tokens=False)


def _byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's byte-to-unicode table that byte-level BPE vocabularies are written in."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, codes)}


@lru_cache(maxsize=8)
def _token_texts_cached(key: int, tokenizer, vocab: int) -> TokenTexts:
    decoder = _byte_decoder()
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    special |= {i for i, tok in added.items() if getattr(tok, "special", False)}
    pieces = tokenizer.convert_ids_to_tokens(list(range(min(vocab, len(tokenizer)))))
    texts: list[bytes] = []
    for i, piece in enumerate(pieces):
        if piece is None or i in special:
            texts.append(b"")
        elif all(ch in decoder for ch in piece):
            texts.append(bytes(decoder[ch] for ch in piece))
        else:  # not a byte-level vocabulary entry: fall back to the tokenizer's own decoding
            texts.append(tokenizer.decode([i]).encode("utf-8"))
    texts.extend(b"" for _ in range(vocab - len(texts)))  # rows beyond the tokenizer (padding of the matrix)
    return TokenTexts(texts)


def _token_texts(tokenizer, vocab: int) -> TokenTexts:
    return _token_texts_cached(id(tokenizer), tokenizer, vocab)


_ALLOWED_CACHE: dict[tuple[int, bytes], torch.Tensor] = {}


def _allowed(texts: TokenTexts, remaining: bytes) -> torch.Tensor:
    key = (id(texts), remaining)
    hit = _ALLOWED_CACHE.get(key)
    if hit is None:
        hit = torch.tensor([bool(t) and (t.startswith(remaining) or remaining.startswith(t)) for t in texts.texts])
        if len(_ALLOWED_CACHE) > 4096:
            _ALLOWED_CACHE.clear()
        _ALLOWED_CACHE[key] = hit
    return hit


class Healing:
    """One decode's healing constraint: the middle's first tokens must spell `removed` (then anything).

    position: the first middle index whose token is still constrained; remaining: the text it must cover.
    The constraint applies to the DLM's marginals at that position (so the AR is conditioned on them, and
    the DLM commits from them) and inside the AR's block decode, step by step (`step_mask`).
    """

    def __init__(self, texts: TokenTexts, removed: bytes):
        self.texts = texts
        self.removed = removed
        self.remaining = removed
        self.position = 0
        self.failed = False

    @property
    def active(self) -> bool:
        return bool(self.remaining) and not self.failed

    def mask_marginals(self, logits: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """logits (M, V) of middle `positions` (M,) -> a copy with the constrained row restricted."""
        if not self.active:
            return logits
        rows = (positions == self.position).nonzero().flatten()
        if rows.numel() == 0:
            return logits
        allowed = self.allowed(self.remaining, logits.shape[-1], logits.device)
        out = logits.clone()
        out[rows] = out[rows].masked_fill(~allowed, float("-inf"))
        return out

    def allowed(self, remaining: bytes, vocab: int, device: torch.device) -> torch.Tensor:
        """(vocab,) bool on `device`; ids beyond the tokenizer's texts are never allowed."""
        mask = self.texts.allowed(remaining)
        if mask.numel() < vocab:
            mask = torch.cat([mask, torch.zeros(vocab - mask.numel(), dtype=torch.bool)])
        return mask[:vocab].to(device)

    def step_mask(self, positions: torch.Tensor, vocab: int, device: torch.device):
        """For an AR block decode over `positions` (nc, B) middle indices: a function (j, tokens (nc, j))
        -> (nc, vocab) bool of the ids allowed at step j, or None where nothing is constrained."""
        if not self.active:
            return None
        hit = (positions == self.position).nonzero()
        if hit.numel() == 0:
            return None
        row, col = (int(x) for x in hit[0])

        def mask(j: int, tokens: torch.Tensor) -> torch.Tensor | None:
            if j < col:
                return None
            remaining = self.remaining
            for t in tokens[row, col:j].tolist():  # the block's own tokens before step j
                remaining = self.texts.advance(remaining, t)
                if not remaining:
                    return None
            out = torch.ones(positions.shape[0], vocab, dtype=torch.bool, device=device)
            out[row] = self.allowed(remaining, vocab, device)
            return out

        return mask

    def commit(self, middle: torch.Tensor, mask_id: int) -> None:
        """Advance over the committed tokens at the constrained position (middle: (Npad,) ids)."""
        while self.active and self.position < middle.numel():
            token = int(middle[self.position])
            if token == mask_id:
                return
            text = self.texts.texts[token] if token < len(self.texts.texts) else b""
            if not text or not (text.startswith(self.remaining) or self.remaining.startswith(text)):
                self.failed = True  # e.g. a later position committed first with a token that does not fit
                return
            self.remaining = self.texts.advance(self.remaining, token)
            self.position += 1

    def strip(self, text: str) -> str | None:
        """The middle text without the healed part, or None when the middle does not start with it."""
        removed = self.removed.decode("utf-8", errors="replace")
        if self.failed or self.remaining or not text.startswith(removed):
            return None
        return text[len(removed):]
