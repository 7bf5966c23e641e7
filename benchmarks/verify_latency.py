"""How long syntax verification of one completion takes, on a large file.

    python -m benchmarks.verify_latency                  # ~5 MB of Python and of C, 20 checks each
    python -m benchmarks.verify_latency --size-mb 1 --repeat 50 --language python

The file is synthetic (many small functions) with one syntax error near its top, as in a file being edited.
Each round types one more character before the cursor (so the document changed since the last check, as in
the editor), then checks a completion that is valid ("ok") or one that must be cut back ("trimmed").
Reported: the first check (no tree cached yet), then median and max over the rounds, in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from verify import check_insertion

# language -> (a function of the file with {i} as its number, cursor marker, valid completion, breaking one)
FILES = {
    "python": ("def f{i}(x):\n    y = x + {i}\n    return y\n\n\n", "    return y\n",
               "    z = y * 2\n", "    z = y * 2\n    w = (z,\n"),
    "c": ("int f{i}(int x) {{\n  int y = x + {i};\n  return y;\n}}\n\n", "  return y;\n",
          "  int z = y * 2;\n", "  int z = y * 2;\n  int w = g(z,\n"),
}
BROKEN = {"python": "def broken(:\n    pass\n\n\n", "c": "int broken( {\n}\n\n"}


def measure(language: str, size_mb: float, repeat: int) -> dict:
    template, marker, good, bad = FILES[language]
    one = len(template.format(i=0))
    text = BROKEN[language] + "".join(template.format(i=i) for i in range(int(size_mb * 1e6 / one)))
    cut = text.index(marker, len(text) // 2)
    before, after = text[:cut], text[cut:]

    first = check_insertion(before, good, after, language)
    timings: dict[str, list[float]] = {"ok": [], "trimmed": []}
    for round_ in range(repeat):
        before = before[:-1] + "\n" + " " * (round_ % 2) + before[-1:]  # an edit above the cursor
        for name, completion in (("ok", good), ("trimmed", bad)):
            result = check_insertion(before, completion, after, language)
            assert result.status == name, (name, result)
            timings[name].append(result.millis)
    return {"language": language, "bytes": len(text.encode()), "first_ms": first.millis,
            **{f"{k}_median_ms": statistics.median(v) for k, v in timings.items()},
            **{f"{k}_max_ms": max(v) for k, v in timings.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.verify_latency", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--language", choices=sorted(FILES), action="append", help="default: all")
    parser.add_argument("--size-mb", type=float, default=5.0, help="file size in MB (default 5)")
    parser.add_argument("--repeat", type=int, default=20, help="rounds per language (default 20)")
    args = parser.parse_args(argv)
    if args.size_mb <= 0 or args.repeat < 1:
        parser.error("--size-mb must be > 0 and --repeat >= 1")
    print(f"{'language':8}  {'MB':>5}  {'first ms':>8}  {'ok median':>9}  {'ok max':>7}  "
          f"{'trim median':>11}  {'trim max':>8}")
    for language in args.language or sorted(FILES):
        r = measure(language, args.size_mb, args.repeat)
        print(f"{language:8}  {r['bytes'] / 1e6:5.1f}  {r['first_ms']:8.1f}  {r['ok_median_ms']:9.1f}  "
              f"{r['ok_max_ms']:7.1f}  {r['trimmed_median_ms']:11.1f}  {r['trimmed_max_ms']:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
