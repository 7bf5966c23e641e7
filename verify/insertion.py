"""Is it safe to insert a completion? Compare the file with and without it, around the insertion only.

A file being edited often has syntax errors already, so the question is not "does the result parse" but
"does the insertion add an error where it lands". Stages:

    window      a slice of whole lines around the cursor (the whole file unless it is large); when
                tree-sitter cannot make sense of the text around the cursor, the cursor's own top-level
                definition
    base tree   tree-sitter tree of the window *without* the insertion, parsed incrementally from the
                previous call's tree (the server checks the same document again and again)
    probe       edit a copy of the base tree, reparse incrementally, and compare the ERROR/MISSING nodes in
                the region whose structure changed (tree-sitter's changed ranges plus the inserted bytes)
                with those of the base tree: any error that was not there before refuses the insertion;
                for Python, also compile the top-level statements around it with and without it
    trim        the longest prefix that passes the probe, cut at line ends first, then at token boundaries
                of the first line; searched with a bounded number of probes (see `_trim`), so a long
                insertion of junk costs a dozen probes, not one per line and token
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import tree_sitter

from verify.languages import ParserSlot, check_language, parser_slot
from verify.syntax import error_nodes, python_compiles

MODES = ("off", "trim", "reject")
STATUSES = ("ok", "trimmed", "rejected", "unverified")

# Files larger than this (characters before + after the cursor) are checked in a window of about
# 2 * WINDOW_CHARS around the cursor: tree-sitter's incremental reparse still costs time linear in the
# file (about 140 ms for 5 MB of Python); a window keeps every probe at a few milliseconds.
WINDOW_CHARS = 32_000
MAX_TOKEN_CUTS = 64  # token-boundary prefixes tried inside the first line when no whole line survives
# Trimming probes the TRIM_SCAN longest candidate prefixes of a kind one by one (an insertion that only
# overshoots at its end keeps exactly its longest good prefix), then bisects the rest by length (see _trim).
TRIM_SCAN = 4

# A window edge: a blank line followed by a line starting in column 0 with code (a top-level statement
# in every supported language, in practice). Cutting there keeps the window's own parse clean.
_TOP_LEVEL_GAP = re.compile(r"\n[ \t]*\n(?=[A-Za-z_@#$])")
_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")


@dataclass(frozen=True)
class VerifyResult:
    """What to insert, and why.

    text:          the insertion to use: the original, a prefix of it ("trimmed"), or "" ("rejected").
    status:        "ok" (kept whole), "trimmed", "rejected", or "unverified" (language unsupported or
                   verification off; text is the original).
    errors_before: syntax errors (tree-sitter ERROR/MISSING nodes, plus one if Python's compiler rejects
                   the enclosing top-level statements) in the region the insertion touches, without it.
    errors_after:  the same with the *original* insertion, so a trimmed or rejected result shows why.
                   The original is kept when it adds no error: every error after it is one that was there
                   before. So errors_after may equal errors_before on a rejection (it fixed one error at the
                   cursor and made another).
    millis:        wall time of the check.
    """

    text: str
    status: str
    errors_before: int
    errors_after: int
    millis: float


@dataclass(frozen=True)
class _Verdict:
    errors_before: int
    errors_after: int
    added: int  # errors present only with the insertion

    @property
    def ok(self) -> bool:
        return self.added == 0


def check_insertion(before: str, inserted: str, after: str, language: str | None,
                    mode: str = "trim") -> VerifyResult:
    """Verify inserting `inserted` between `before` and `after` (the whole document around the cursor).

    mode: "off" returns the insertion unverified; "trim" returns the longest acceptable prefix (or "");
    "reject" returns the insertion whole or "". language: a grammar name (see verify.language_for);
    None means unsupported and returns the insertion unverified.
    """
    started = time.perf_counter()
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    if language is None or mode == "off":
        return VerifyResult(inserted, "unverified", 0, 0, _millis(started))
    check_language(language)
    if not inserted:
        return VerifyResult("", "ok", 0, 0, _millis(started))

    head, tail = _window(before, after)
    slot = parser_slot(language)
    with slot.lock:
        probe = _Probe(slot, _encode(head), _encode(tail), language, reuse=True)
        if probe.cursor_in_error():
            # tree-sitter could not recover around the cursor (an unclosed bracket far above can swallow
            # the rest of the file into one ERROR): judge in the cursor's own top-level definition instead
            local_head, local_tail = _local_window(head, tail)
            if len(local_head) < len(head) or len(local_tail) < len(tail):
                probe = _Probe(slot, _encode(local_head), _encode(local_tail), language, reuse=False)
        first = probe.check(inserted)
        if first.ok:
            return VerifyResult(inserted, "ok", first.errors_before, first.errors_after, _millis(started))
        if mode == "trim" and (prefix := _trim(probe, inserted)) is not None:
            return VerifyResult(prefix, "trimmed", first.errors_before, first.errors_after, _millis(started))
    return VerifyResult("", "rejected", first.errors_before, first.errors_after, _millis(started))


class _Probe:
    """Checks candidate insertions at one cursor position against one base tree.

    head, tail: the window's bytes before and after the cursor. The base tree is parsed once (with reuse,
    incrementally from the slot's previous tree, which it then replaces) and every candidate reparses an
    edited copy of it.
    """

    def __init__(self, slot: ParserSlot, head: bytes, tail: bytes, language: str, reuse: bool):
        self.parser = slot.parser
        self.at = len(head)
        self.base = head + tail
        self.base_tree = _reparse(slot, self.base) if reuse else slot.parser.parse(self.base)
        self.start_point = _point(self.base, self.at)
        self.python = language == "python"
        self._compiles_before: dict[tuple[int, int], bool] = {}  # Python's verdict on base[lo:hi]

    def cursor_in_error(self) -> bool:
        """True if an error node of the base tree strictly spans the cursor."""
        return any(node.start_byte < self.at < node.end_byte
                   for node in error_nodes(self.base_tree.root_node, self.at, self.at))

    def check(self, inserted: str, count_all: bool = True) -> _Verdict:
        """Errors the insertion adds. count_all=False (trimming) skips Python's compiler once tree-sitter
        has already found an added error: the verdict is the same, errors_after may be one short."""
        ins = _encode(inserted)
        at, n = self.at, len(ins)
        new = self.base[:at] + ins + self.base[at:]
        edited = self.base_tree.copy()
        edited.edit(at, at, at + n, self.start_point, self.start_point, _point(new, at + n))
        tree = self.parser.parse(new, edited)

        # the touched region, in the new text's bytes; it always contains [at, at + n], so the same region
        # of the base text is [lo, hi - n]
        ranges = edited.changed_ranges(tree)
        lo = min([at, *(r.start_byte for r in ranges)])
        hi = max([at + n, *(r.end_byte for r in ranges)])
        old_errors = [_error_key(node) for node in error_nodes(self.base_tree.root_node, lo, hi - n)]
        new_errors = [_error_key(node) for node in error_nodes(tree.root_node, lo, hi)]
        verdict = _Verdict(len(old_errors), len(new_errors), _added_errors(old_errors, new_errors, at, n))

        if self.python and (count_all or verdict.ok):
            lo, hi = self._python_region(tree, at, n, new)
            if (compiled_before := self._compiles_before.get((lo, hi - n))) is None:
                compiled_before = self._compiles_before[lo, hi - n] = python_compiles(self.base[lo:hi - n])
            compiled_after = python_compiles(new[lo:hi])
            # Python's verdict only says something new where the region compiled without the insertion
            verdict = _Verdict(verdict.errors_before + (not compiled_before),
                               verdict.errors_after + (not compiled_after),
                               verdict.added + (compiled_before and not compiled_after))
        return verdict

    def _python_region(self, tree: tree_sitter.Tree, at: int, n: int, new: bytes) -> tuple[int, int]:
        """Byte range in `new` of the whole lines and top-level statements touching the insertion,
        in either tree (the base tree's ranges shifted past the insertion)."""
        lo = new.rfind(b"\n", 0, at) + 1
        end = new.find(b"\n", at + n)
        hi = len(new) if end < 0 else end
        for node in _top_level_touching(tree.root_node, at, at + n):
            lo, hi = min(lo, node.start_byte), max(hi, node.end_byte)
        for node in _top_level_touching(self.base_tree.root_node, at, at):
            start = node.start_byte if node.start_byte < at else node.start_byte + n
            end = node.end_byte if node.end_byte < at else node.end_byte + n
            lo, hi = min(lo, start), max(hi, end)
        return new.rfind(b"\n", 0, lo) + 1, hi


def _top_level_touching(root: tree_sitter.Node, lo: int, hi: int) -> list[tree_sitter.Node]:
    """Children of the root overlapping or touching [lo, hi]."""
    out = []
    cursor = root.walk()
    moved = cursor.goto_first_child_for_byte(lo - 1) is not None if lo > 0 else cursor.goto_first_child()
    while moved and cursor.node.start_byte <= hi:
        out.append(cursor.node)
        moved = cursor.goto_next_sibling()
    return out


def _error_key(node: tree_sitter.Node) -> tuple[str, int, int]:
    kind = f"MISSING {node.type}" if node.is_missing else "ERROR"
    return kind, node.start_byte, node.end_byte


def _added_errors(old: list[tuple[str, int, int]], new: list[tuple[str, int, int]], at: int, n: int) -> int:
    """How many of the new tree's errors the insertion of n bytes at `at` created.

    Offsets after the insertion shift back by n to compare with the old tree. A new error away from the
    inserted bytes is old if an old error has the same kind and span, or if it lies inside an old ERROR
    node (the insertion fixed part of a larger error). A new error over the inserted bytes is old only if
    it is an old error that already spanned the cursor, stretched by the insertion (typing inside an
    unclosed bracket); an error that ended at the cursor (`x = ` before `foo(a,`) and now covers the
    insertion is new.
    """

    def unshift(offset: int) -> int:
        return offset if offset <= at else max(at, offset - n)

    old_keys = set(old)
    # innermost old ERROR nodes (no other old error inside): an ERROR that swallowed the whole file
    # around an unrelated mistake must not excuse every new error within it
    old_spans = [(start, end) for kind, start, end in old if kind == "ERROR" and not any(
        (s, e) != (start, end) and start <= s and e <= end for _, s, e in old)]
    added = 0
    for kind, start, end in new:
        if n > 0 and start < at + n and end > at:  # over the inserted bytes
            is_old = start < at and end > at + n and (kind, start, end - n) in old_keys
        else:
            start, end = unshift(start), unshift(end)
            is_old = (kind, start, end) in old_keys or any(s <= start and end <= e for s, e in old_spans)
        added += not is_old
    return added


def _reparse(slot: ParserSlot, source: bytes) -> tree_sitter.Tree:
    """Tree for `source`, reusing the slot's previous tree through one edit (common prefix/suffix diff)."""
    if slot.tree is None or slot.source is None:
        tree = slot.parser.parse(source)
    elif slot.source == source:
        return slot.tree
    else:
        old = slot.source
        start = _common_prefix(old, source)
        keep = _common_suffix(old, source, min(len(old), len(source)) - start)
        old_end, new_end = len(old) - keep, len(source) - keep
        slot.tree.edit(start, old_end, new_end, _point(old, start), _point(old, old_end), _point(source, new_end))
        tree = slot.parser.parse(source, slot.tree)
    slot.source, slot.tree = source, tree
    return tree


def _common_prefix(a: bytes, b: bytes) -> int:
    """Length of the longest common prefix (binary search over slices: memcmp speed, O(log n) steps)."""
    lo, hi = 0, min(len(a), len(b)) + 1  # a[:lo] == b[:lo]; a[:hi] != b[:hi] (or hi past the end)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def _common_suffix(a: bytes, b: bytes, limit: int) -> int:
    """Length of the longest common suffix, at most `limit`."""
    la, lb = len(a), len(b)
    lo, hi = 0, limit + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[la - mid:la - lo] == b[lb - mid:lb - lo]:
            lo = mid
        else:
            hi = mid
    return lo


def _point(source: bytes, offset: int) -> tuple[int, int]:
    """tree-sitter point (row, byte column) of a byte offset."""
    row = source.count(b"\n", 0, offset)
    return row, offset - (source.rfind(b"\n", 0, offset) + 1)


def _window(before: str, after: str) -> tuple[str, str]:
    """The slices of `before` and `after` that get parsed: everything for ordinary files; for large ones
    about WINDOW_CHARS on each side, cut at top-level boundaries so the cut does not split a statement."""
    start = 0
    if len(before) > WINDOW_CHARS:
        target = len(before) - WINDOW_CHARS
        gap = _TOP_LEVEL_GAP.search(before, target)
        start = gap.end() if gap else before.find("\n", target) + 1
    end = len(after)
    if len(after) > WINDOW_CHARS:
        gaps = list(_TOP_LEVEL_GAP.finditer(after, 0, WINDOW_CHARS))
        newline = after.find("\n", WINDOW_CHARS)
        end = gaps[-1].start() + 1 if gaps else (len(after) if newline < 0 else newline + 1)
    return before[start:], after[:end]


def _local_window(head: str, tail: str) -> tuple[str, str]:
    """The cursor's own top-level definition: from the last top-level boundary before the cursor to the
    first one after it."""
    starts = [gap.end() for gap in _TOP_LEVEL_GAP.finditer(head)]
    end = _TOP_LEVEL_GAP.search(tail)
    return head[starts[-1] if starts else 0:], tail[:end.start() + 1 if end else len(tail)]


def _trim(probe: _Probe, inserted: str) -> str | None:
    """The longest candidate prefix that passes the probe, or None, in a bounded number of probes.

    Candidates, best first: prefixes ending at a line end (with, then without, its newline), longest first;
    then, for the first line only, prefixes ending at token boundaries, longest first. Whitespace-only
    prefixes are never offered. Each of the two groups is searched the same way: its TRIM_SCAN longest are
    probed in turn, then the rest are bisected by length as if passing were monotone (an error, once in,
    stays: junk after a good start). It is not always (a prefix stopping inside an unclosed bracket fails
    where a longer one passes), so the answer may be shorter than the longest passing prefix; but it has
    always passed the probe itself. At most 2 * (TRIM_SCAN + log2(candidates) + 1) probes.
    """
    lines, tokens = _trim_candidates(inserted)
    for group in (lines, tokens):
        for prefix in group[:TRIM_SCAN]:
            if probe.check(prefix, count_all=False).ok:
                return prefix
        rest = group[TRIM_SCAN:][::-1]  # shortest first
        passed, failed = -1, len(rest)  # indices known to pass / fail
        while failed - passed > 1:
            mid = (passed + failed) // 2
            if probe.check(rest[mid], count_all=False).ok:
                passed = mid
            else:
                failed = mid
        if passed >= 0:
            return rest[passed]
    return None


def _trim_candidates(inserted: str) -> tuple[list[str], list[str]]:
    """(line cuts, token cuts) of `inserted`, each longest first (see `_trim`)."""
    line_cuts = []
    for match in reversed(list(re.finditer("\n", inserted))):
        line_cuts += [match.end(), match.start()]
    first_line = inserted.split("\n", 1)[0]
    token_ends = [m.end() for m in _TOKEN.finditer(first_line) if not m.group().isspace()]
    token_cuts = list(reversed(token_ends[-MAX_TOKEN_CUTS:]))
    seen, groups = set(), ([], [])
    for cuts, out in zip((line_cuts, token_cuts), groups):
        for cut in cuts:
            prefix = inserted[:cut]
            if cut < len(inserted) and prefix.strip() and prefix not in seen:
                seen.add(prefix)
                out.append(prefix)
    return groups


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _millis(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
