"""Syntax verification of completions with tree-sitter (and Python's own compiler for Python).

    from verify import language_for, check_insertion
    result = check_insertion(before, completion, after, language_for("file:///x/app.py"), mode="trim")
    result.text, result.status   # what to insert; "ok" | "trimmed" | "rejected" | "unverified"

Used by the language server (before answering a completion) and by the benchmark (syntax_ok).
Pure tree-sitter + stdlib: no LSP, no torch.
"""

from verify.insertion import MODES, STATUSES, VerifyResult, check_insertion
from verify.languages import LANGUAGES, language_for
from verify.syntax import parse_errors, python_compiles, syntax_ok

__all__ = ["LANGUAGES", "MODES", "STATUSES", "VerifyResult", "check_insertion", "language_for", "parse_errors",
           "python_compiles", "syntax_ok"]
