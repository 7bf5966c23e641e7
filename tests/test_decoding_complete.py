"""The plain AR baseline: left to right from the prefix, stopping where an editor tool would."""

from decoding.complete import complete, stop_rule


def test_inside_a_line_or_a_plain_statement_it_completes_one_line():
    mid_line = stop_rule("    x = foo(", ")\n    return x\n")
    assert mid_line("a, b") is None and mid_line("a, b\n    y = 2") == "a, b"
    statement = stop_rule("def f(x):\n    y = x + 1\n    ", "\n    return y\n")
    assert statement("return y") is None and statement("z = y * 2\n    return z\n") == "z = y * 2"


def test_after_a_block_opener_it_writes_the_block_until_dedent_or_the_suffix():
    body = stop_rule("def f(items):\n    for x in items:\n        ", "\n    return total\n")
    text = "total += x\n        print(x)\n    return total\n"
    assert body(text) == "total += x\n        print(x)"  # "    return total" is less indented: the block ended
    same = stop_rule("if ok:\n    ", "\n    done()\n")
    assert same("a()\n    b()\n    done()\n    c()") == "a()\n    b()"  # the suffix's first line: already there
    assert body("total += x\n        print(x)") is None  # the last line may still be growing


def test_complete_heals_the_boundary_and_reports_its_tokens(tiny_models):
    ar = tiny_models.ar
    result = complete(ar.model, ar.tokenizer, "def add(a, b):\n    return a", "\n", max_new_tokens=6)
    assert result.stats.healing == "ok"  # a random model still has to spell the removed token first
    removed = ar.tokenizer.decode(ar.tokenizer.encode("def add(a, b):\n    return a")[-1:])
    full = ar.tokenizer.decode(result.tokens)
    assert full.startswith(removed) and result.text == full[len(removed):].split("\n", 1)[0]
    assert len(result.tokens) <= 6 and "\n" not in result.text
