"""Which grammar a document gets, and one cached tree-sitter parser per grammar.

Languages are named by the tree-sitter grammar that parses them: "python", "javascript" (also JSX),
"typescript", "tsx", "go", "rust", "c", "cpp". Anything else is unsupported and passes through unverified.
"""

from __future__ import annotations

import threading
from functools import cache
from pathlib import PurePosixPath
from typing import Callable

import tree_sitter

LANGUAGES = ("python", "javascript", "typescript", "tsx", "go", "rust", "c", "cpp")

# LSP language ids (https://microsoft.github.io/language-server-protocol/specification#textDocumentItem)
# and common aliases -> grammar name.
_LANGUAGE_IDS = {
    **{name: name for name in LANGUAGES},
    "javascriptreact": "javascript", "jsx": "javascript", "js": "javascript",
    "typescriptreact": "tsx", "ts": "typescript",
    "golang": "go",
    "c++": "cpp", "cuda-cpp": "cpp",
    "py": "python", "python3": "python",
}

_EXTENSIONS = {
    ".py": "python", ".pyi": "python", ".pyw": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
    ".rs": "rust",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".c++": "cpp", ".hpp": "cpp", ".hh": "cpp", ".hxx": "cpp",
    ".h++": "cpp", ".ipp": "cpp", ".tpp": "cpp", ".inl": "cpp", ".cu": "cpp", ".cuh": "cpp",
}


def language_for(path_or_language_id: str) -> str | None:
    """Grammar name for an LSP language id ("typescriptreact"), a file path or a file URI; None if unsupported.

    A language id wins over an extension: "c" is the C language, "x.c" a C file, "file:///a/b.tsx" TSX.
    """
    key = path_or_language_id.strip()
    if key.lower() in _LANGUAGE_IDS:
        return _LANGUAGE_IDS[key.lower()]
    suffix = PurePosixPath(key.replace("\\", "/")).suffix.lower()
    return _EXTENSIONS.get(suffix)


def _grammar_loaders() -> dict[str, Callable[[], object]]:
    """Grammar name -> function returning the grammar's language pointer (imported lazily, one package each)."""

    def python():
        import tree_sitter_python
        return tree_sitter_python.language()

    def javascript():
        import tree_sitter_javascript
        return tree_sitter_javascript.language()

    def typescript():
        import tree_sitter_typescript
        return tree_sitter_typescript.language_typescript()

    def tsx():
        import tree_sitter_typescript
        return tree_sitter_typescript.language_tsx()

    def go():
        import tree_sitter_go
        return tree_sitter_go.language()

    def rust():
        import tree_sitter_rust
        return tree_sitter_rust.language()

    def c():
        import tree_sitter_c
        return tree_sitter_c.language()

    def cpp():
        import tree_sitter_cpp
        return tree_sitter_cpp.language()

    return dict(python=python, javascript=javascript, typescript=typescript, tsx=tsx, go=go, rust=rust, c=c,
                cpp=cpp)


def check_language(language: str) -> str:
    """`language` itself if it is a supported grammar name; ValueError listing the valid names otherwise."""
    if language not in LANGUAGES:
        raise ValueError(f"unsupported language {language!r}; use one of {', '.join(LANGUAGES)} "
                         "(verify.language_for maps file names and LSP language ids onto these)")
    return language


@cache
def grammar(language: str) -> tree_sitter.Language:
    """The tree-sitter Language for a grammar name (loaded once)."""
    return tree_sitter.Language(_grammar_loaders()[check_language(language)]())


class ParserSlot:
    """One parser per grammar plus the last tree it produced, guarded by a lock.

    tree-sitter parsers are not thread-safe; every use goes through `with slot.lock:`. The last
    (source, tree) pair lets the next parse of a similar text be incremental.
    """

    def __init__(self, language: str):
        self.parser = tree_sitter.Parser(grammar(language))
        self.lock = threading.Lock()
        self.source: bytes | None = None
        self.tree: tree_sitter.Tree | None = None


_SLOTS: dict[str, ParserSlot] = {}
_SLOTS_LOCK = threading.Lock()


def parser_slot(language: str) -> ParserSlot:
    """The process-wide ParserSlot of a grammar, created on first use."""
    check_language(language)
    with _SLOTS_LOCK:
        if language not in _SLOTS:
            _SLOTS[language] = ParserSlot(language)
        return _SLOTS[language]
