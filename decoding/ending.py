"""Where a completion ends: the editor's rule, one for every decoder and every caller.

    ending(prefix, suffix) -> Ending        Ending(text) -> the finished completion, or None to go on

The language server's pipeline passes it to the decoder (methods ar and verified stop there; the canvas
methods cut their text with it), the benchmark's preset: and ar rows run that pipeline, and `python -m decoding`
uses it unless told to write the whole budget. Pure string rules: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

SAMPLE = 20_000  # characters each side of the cursor the rule reads
OPENERS = (":", "{", "(", "[")  # a line ending with one of these opens a block
CLOSERS = ("}", ")", "]")


@dataclass(frozen=True)
class Ending:
    """Where a completion ends: the editor's decision, the same for every decoder (llama.vim's n_indent
    stop, Copilot's one line inside a line; measured against the plain AR on the public set).

    block:   several lines (the cursor is on a blank line after a line that opens a block, and the code
             after it is not at the cursor's indentation); otherwise one line, unless that line opens a block
             itself (`with open(p) as f:`): then its body comes with it, up to the first line back at the
             line's own indentation (a closing bracket there is the block's last line). One opener line alone
             is not code an editor can show: the syntax check would drop it.
    newline: what a one-line completion ends with: "" (it ends at its line's end), or a newline and the
             indentation the code after the cursor needs (the cursor sits in the indentation in front of
             code: the completion becomes a line of its own above that code).
    indent:  block mode ends before a line indented less than this; `next_line`: or one that repeats the
             suffix's next non-blank line.
    inline:  the cursor's line has code after the cursor (then one line, whatever it ends with).
    """

    block: bool
    newline: str
    indent: int
    next_line: str | None
    inline: bool = False

    def __call__(self, text: str) -> str | None:
        """The finished completion if `text` (what has been written so far) ends here, else None."""
        if "\n" not in text:
            return None
        first = text.split("\n", 1)[0]
        if self.block:
            return self._block(text, self.indent)
        if not self.inline and not self.newline and first.rstrip().endswith(OPENERS):
            return self._block(text, self.indent + 1, closes=True)
        return first + self.newline if first.strip() else first

    def _block(self, text: str, indent: int, closes: bool = False) -> str | None:
        """The lines of `text` before the first whole line indented less than `indent` or repeating the
        suffix's next line (closes: a line that starts with a closing bracket there is kept as the last)."""
        lines = text.split("\n")
        for i, line in enumerate(lines[1:-1], start=1):  # whole lines only (the last may be partial)
            if line.strip() and (_indent(line) < indent or line.strip() == self.next_line):
                kept = i + 1 if closes and line.lstrip()[:1] in CLOSERS and line.strip() != self.next_line else i
                return "\n".join(lines[:kept])
        return None


def ending(prefix: str, suffix: str) -> Ending:
    """The Ending rule for a cursor between prefix and suffix: one line when its line already has code (before
    or after the cursor) or the code after it continues at its indentation; a block on a blank line after an
    opener."""
    head, _, before = prefix[-SAMPLE:].rpartition("\n")
    after, _, rest = suffix[:SAMPLE].partition("\n")
    previous = next((line.rstrip() for line in reversed(head.split("\n")) if line.strip()), "")
    following = next((line for line in rest.split("\n") if line.strip()), None)
    indent = _indent(before) if not before.strip() else _indent(before + "x")
    continues = following is not None and _indent(following) >= indent and not after.strip()
    block = not before.strip() and not after.strip() and previous.endswith(OPENERS) and not continues
    # in front of code: a line of its own, and the code keeps its indentation (the suffix's own, else the cursor's)
    newline = "\n" + ("" if after[:1] in " \t" else before) if after.strip() and not before.strip() else ""
    return Ending(block=block, newline=newline, indent=indent,
                  next_line=(after.strip() or (following.strip() if following else None)) or None,
                  inline=bool(after.strip()))


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))
