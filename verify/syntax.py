"""Whole-text syntax checks: tree-sitter error counts, plus Python's own compiler for Python.

tree-sitter recovers from errors by inserting ERROR nodes (unexpected text) and zero-width MISSING nodes
(an expected token that is absent); both count as one error each. tree-sitter's Python grammar is lenient
about indentation and about statements in the wrong place (`return` at module level), so Python text must
also pass `compile`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import tree_sitter

from verify.languages import check_language, parser_slot


def parse(source: bytes, language: str) -> tree_sitter.Tree:
    """A fresh tree for `source` (no incremental reuse), parsed by the grammar's shared parser."""
    slot = parser_slot(language)
    with slot.lock:
        return slot.parser.parse(source)


def error_nodes(node: tree_sitter.Node, lo: int = 0, hi: int | None = None) -> Iterator[tree_sitter.Node]:
    """ERROR and MISSING nodes at or below `node` that overlap the byte range [lo, hi] (inclusive ends).

    Only subtrees flagged `has_error` are visited, and only children overlapping the range, so the cost
    follows the number of errors, not the size of the file.
    """
    hi = node.end_byte if hi is None else hi
    stack = [node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            yield node
        if not node.has_error:
            continue
        cursor = node.walk()
        # first child ending after lo - 1, so a zero-width MISSING node at lo is still seen
        moved = cursor.goto_first_child_for_byte(lo - 1) is not None if lo > 0 else cursor.goto_first_child()
        while moved:
            child = cursor.node
            if child.start_byte > hi:
                break
            if child.has_error and child.end_byte >= lo:
                stack.append(child)
            moved = cursor.goto_next_sibling()


def count_errors(node: tree_sitter.Node, lo: int = 0, hi: int | None = None) -> int:
    """How many ERROR and MISSING nodes `error_nodes` finds."""
    return sum(1 for _ in error_nodes(node, lo, hi))


def python_compiles(source: str | bytes) -> bool:
    """True if CPython compiles `source` as a module (catches indentation and placement errors)."""
    with warnings.catch_warnings():
        # invalid escape sequences etc. warn at compile time; a warning is not a syntax error
        warnings.simplefilter("ignore")
        try:
            compile(source, "<infill>", "exec", dont_inherit=True)
        except (SyntaxError, ValueError, RecursionError, MemoryError):  # ValueError: NUL bytes
            return False
    return True


def parse_errors(text: str, language: str) -> int:
    """Number of ERROR and MISSING nodes in the tree-sitter tree of `text` (0 = tree-sitter accepts it)."""
    check_language(language)
    return count_errors(parse(_encode(text), language).root_node)


def syntax_ok(text: str, language: str) -> bool:
    """True if `text` parses without errors; Python text must also compile with Python's own parser."""
    check_language(language)
    if parse(_encode(text), language).root_node.has_error:
        return False
    return language != "python" or python_compiles(text)


def _encode(text: str) -> bytes:
    # surrogatepass: LSP clients can send lone surrogates; keep byte offsets defined instead of raising
    return text.encode("utf-8", "surrogatepass")
