"""Text stages around the decoder: where the cursor is, what the model sees, and tidying what it wrote.

    context_at(doc, position) / context_for_range(doc, range)   LSP position (UTF-16) -> prefix | suffix
    window(context, budget, token_starts)                        what the decoder reads around the cursor
    tidy(text, context)                                          drop what already follows the cursor,
                                                                 indent like the file
    worth_showing(text, context)                                 not whitespace, not a repeat of the suffix

Pure functions on strings and pygls documents; no model, no I/O (`window` is handed the tokenizer's
token start offsets).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pygls.workspace import TextDocument

from decoding.context import SUFFIX_SHARE, split_context
from verify import language_for

CHARS_PER_TOKEN = 8  # a generous upper bound for code: the character cut before tokenizing never bites first
ANCHOR_CHARS = 512  # a long prefix's window starts at a line after a multiple of this many characters
ANCHOR_MARGIN = 4  # tokens left free under the budget (a cut at a line start may tokenize a little longer)
MAX_OVERLAP = 400  # characters of the suffix compared with the end of a completion
TIDY_SAMPLE = 20_000  # characters each side of the cursor that tidying reads (lines, indentation)
BINARY_CONTROL_SHARE = 0.1  # more control characters than this in the visible context: binary content
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f]")
_BRACKETS = {")": "(", "]": "[", "}": "{"}


@dataclass(frozen=True)
class Context:
    """The document around one cursor (or selection): the decoder fills the gap between prefix and suffix.

    position: the cursor in client units (UTF-16), clamped to its line as the LSP specification says;
    range: the replaced span for a selection (None for a cursor); language: tree-sitter grammar for
    verification, None when unsupported (the completion then passes unverified).
    """

    uri: str
    version: int | None
    language_id: str | None
    language: str | None
    prefix: str
    suffix: str
    position: types.Position
    range: types.Range | None = None


def context_at(doc: TextDocument, position: types.Position) -> Context:
    """Split `doc` at `position` (UTF-16 code units, or the encoding the client negotiated).
    Raises JsonRpcInvalidParams outside the document."""
    lines = doc.lines
    source = doc.source
    cursor = _clamp(doc, lines, source, position)
    offset = _offset(doc, lines, cursor)
    return Context(doc.uri, doc.version, doc.language_id, _language(doc), source[:offset], source[offset:], cursor)


def context_for_range(doc: TextDocument, span: types.Range) -> Context:
    """Prefix before `span`, suffix after it: the decoder regenerates what the range covers."""
    lines = doc.lines
    source = doc.source
    start, end = _clamp(doc, lines, source, span.start), _clamp(doc, lines, source, span.end)
    lo, hi = _offset(doc, lines, start), _offset(doc, lines, end)
    if lo > hi:
        raise JsonRpcInvalidParams(message=f"range start {_show(span.start)} is after its end {_show(span.end)}")
    return Context(doc.uri, doc.version, doc.language_id, _language(doc), source[:lo], source[hi:], start,
                   types.Range(start=start, end=end))


@dataclass(frozen=True)
class Window:
    """The text the decoder reads: the decoder keeps the last prefix_tokens / first suffix_tokens of it."""

    prefix: str
    suffix: str
    prefix_tokens: int
    suffix_tokens: int


def window(context: Context, budget: int, token_starts: Callable[[str], list[int]]) -> Window:
    """`budget` tokens around the cursor, shared by decoding.context.split_context (3/4 before, 1/4 after;
    what one side does not need goes to the other).

    Characters are cut first, CHARS_PER_TOKEN per token, so a 5 MB file is never tokenized whole. A side
    with fewer characters than that for its share is counted exactly (`token_starts(text)`: the character
    offset where each token of `text` starts); a longer side counts as long, so the common cases (mid-file,
    end of file) tokenize a few lines at most. A prefix longer than its share starts at an anchor
    (`anchored_start`), so that the next keystrokes' windows start at the same place.
    """
    suffix_share = budget // SUFFIX_SHARE
    prefix_share = budget - suffix_share
    n_prefix = len(token_starts(context.prefix)) if len(context.prefix) < prefix_share * CHARS_PER_TOKEN else budget
    n_suffix = len(token_starts(context.suffix)) if len(context.suffix) < suffix_share * CHARS_PER_TOKEN else budget
    keep_prefix, keep_suffix = split_context(n_prefix, n_suffix, budget)
    prefix = ""
    if keep_prefix:
        prefix = context.prefix if keep_prefix >= n_prefix else \
            context.prefix[anchored_start(context.prefix, keep_prefix, token_starts):]
    return Window(prefix, context.suffix[: keep_suffix * CHARS_PER_TOKEN], keep_prefix, keep_suffix)


def anchored_start(prefix: str, tokens: int, token_starts: Callable[[str], list[int]]) -> int:
    """Where a window of at most `tokens` tokens before the cursor starts in a prefix longer than that.

    Not simply `tokens` tokens back: that start moves with every character typed, and the decoder could reuse
    none of the keys and values it cached for the last request (a full prefill per keystroke). The window
    starts instead at the first line that begins after the first multiple of ANCHOR_CHARS that fits: it stays
    put while the user types, until the text has grown by about ANCHOR_CHARS, at the price of up to that much
    context. A cursor line longer than that starts at the multiple itself.
    """
    text = prefix[-tokens * CHARS_PER_TOKEN:]
    offset = len(prefix) - len(text)
    starts = token_starts(text)
    first = len(starts) - tokens + ANCHOR_MARGIN  # the first token the window may keep
    earliest = offset + (starts[first] if 0 < first < len(starts) else 0 if first <= 0 else len(text))
    grid = -(-earliest // ANCHOR_CHARS) * ANCHOR_CHARS
    if grid >= len(prefix):
        return earliest
    if grid == 0 or prefix[grid - 1] == "\n":
        return grid
    newline = prefix.find("\n", grid, len(prefix))
    return newline + 1 if newline != -1 else grid


def worth_showing(text: str, context: Context) -> bool:
    """False for a completion an editor should not show: whitespace only, or a repeat of the code right after
    the cursor (the model wrote the suffix again instead of a middle)."""
    if not text.strip():
        return False
    head = context.suffix.lstrip()[: len(text.strip()) + 1]
    return not head.startswith(text.strip())


def looks_binary(text: str) -> bool:
    """NUL bytes, or many control characters: not text a code model should continue."""
    if "\x00" in text:
        return True
    return len(_CONTROL.findall(text)) > BINARY_CONTROL_SHARE * max(len(text), 1)


def tidy(text: str, context: Context) -> str:
    """The completion as the editor should show it: no repeat of what follows the cursor, the file's indents."""
    text = strip_overlap(text, context.suffix[:TIDY_SAMPLE])
    return match_indentation(text, indent_unit(context.prefix[-TIDY_SAMPLE:] + context.suffix[:TIDY_SAMPLE]))


def strip_overlap(text: str, suffix: str) -> str:
    """Drop the end of `text` that the suffix already starts with: a closing bracket, the next line(s).

    Two matches are tried: exact characters (`a)` before `)`), then whole lines ignoring indentation. A match
    is dropped only if that leaves the completion's own brackets no less balanced: in `print(|)` the
    completion `f(a)` keeps its `)`, while `a)` loses it.
    """
    if not text or not suffix:
        return text
    if suffix[0] == "\n" or suffix.startswith("\r\n"):
        text = text.rstrip(" \t")
    for k in range(min(len(text), len(suffix), MAX_OVERLAP), 0, -1):
        if text.endswith(suffix[:k]) and _unbalanced(text[:-k]) <= _unbalanced(text):
            return text[:-k]
    return _strip_repeated_lines(text, suffix)


def _strip_repeated_lines(text: str, suffix: str) -> str:
    lines = text.split("\n")
    following = [line.strip() for line in suffix.split("\n")[1:] if line.strip()]  # [0] is the cursor's line
    for m in range(len(lines) - 1, 0, -1):
        tail = [line.strip() for line in lines[-m:]]
        if all(tail) and tail == following[:m]:
            kept = "\n".join(lines[:-m])
            if _unbalanced(kept) <= _unbalanced(text):
                return kept
    return text


def _unbalanced(text: str) -> int:
    """Brackets without a partner inside `text` (strings are not parsed: a heuristic, used only to compare)."""
    stack: list[str] = []
    unmatched = 0
    for ch in text:
        if ch in "([{":
            stack.append(ch)
        elif ch in _BRACKETS:
            if stack and stack[-1] == _BRACKETS[ch]:
                stack.pop()
            else:
                unmatched += 1
    return unmatched + len(stack)


def indent_unit(sample: str) -> str:
    """The file's indentation step: "\\t", or N spaces (the most common step between indented lines; 4)."""
    tabs = spaces = 0
    widths = []
    for line in sample.split("\n"):
        if not line.strip():
            continue
        if line.startswith("\t"):
            tabs += 1
        elif line.startswith(" "):
            spaces += 1
        widths.append(len(line) - len(line.lstrip(" ")))
    if tabs > spaces:
        return "\t"
    steps = Counter(abs(b - a) for a, b in zip(widths, widths[1:]) if a != b)
    step = steps.most_common(1)[0][0] if steps else 4
    return " " * (step if step in (2, 3, 4, 8) else 4)


def match_indentation(text: str, unit: str) -> str:
    """Re-indent lines 2.. of `text` with the file's unit (tabs <-> spaces); line 1 continues the cursor's line."""
    lines = text.split("\n")
    out = [lines[0]]
    for line in lines[1:]:
        body = line.lstrip(" \t")
        lead = line[: len(line) - len(body)]
        if unit == "\t" and " " in lead:
            levels = lead.count("\t") + math.ceil(lead.count(" ") / 4)  # spaces -> tabs, 4 columns a tab
            lead = "\t" * levels
        elif unit != "\t" and "\t" in lead:
            lead = lead.replace("\t", unit)
        out.append(lead + body)
    return "\n".join(out)


def _clamp(doc: TextDocument, lines, source: str, position: types.Position) -> types.Position:
    """Check the line, clamp the character to the line's length (LSP: "defaults back to the line length").

    Lengths are counted in the negotiated position encoding (UTF-16 unless the client asked otherwise)."""
    line_count = len(lines)
    ends_open = not source or source.endswith(("\n", "\r"))  # the position after a final newline is valid
    if position.line < line_count:
        line = lines[position.line].rstrip("\r\n")
        units = doc.position_codec.client_num_units(line)
        return types.Position(line=position.line, character=min(position.character, units))
    if position.line == line_count and ends_open:
        return types.Position(line=position.line, character=0)
    raise JsonRpcInvalidParams(
        message=f"position {_show(position)} is outside the document ({line_count} lines)")


def _offset(doc: TextDocument, lines, position: types.Position) -> int:
    """Index into doc.source of a (clamped) client position, through pygls's UTF-16 codec."""
    if position.line >= len(lines):
        return sum(len(line) for line in lines)
    server = doc.position_codec.position_from_client_units(lines, position)
    return server.character + sum(len(line) for line in lines[: server.line])


def _language(doc: TextDocument) -> str | None:
    return (language_for(doc.language_id) if doc.language_id else None) or language_for(doc.uri)


def _show(position: types.Position) -> str:
    return f"{position.line}:{position.character}"
