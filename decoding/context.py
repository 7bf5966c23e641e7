"""What the model sees around the gap: the one context policy of the server, the benchmark and evaluation.

    split_context(prefix_tokens, suffix_tokens, budget) -> (prefix tokens kept, suffix tokens kept)

A budget of context tokens is shared 3/4 before the gap and 1/4 after it (the code just before the cursor
matters most); what one side does not need goes to the other, so everything is kept when it fits. The
language server applies it to the text around the cursor (lsp_server/text.py `window`), the benchmark
harness to a task's prompt and suffix, training.evaluate to the benchmark's middles. Torch-free.
"""

from __future__ import annotations

SUFFIX_SHARE = 4  # the suffix's share is budget // SUFFIX_SHARE tokens when both sides are long


def split_context(prefix_tokens: int, suffix_tokens: int, budget: int) -> tuple[int, int]:
    """(prefix tokens kept, suffix tokens kept): the LAST ones of the prefix, the FIRST of the suffix.

    prefix_tokens / suffix_tokens: how many each side has (a count at least the budget stands for "long").
    Raises ValueError for a negative budget (the middle alone does not fit the model).
    """
    if budget < 0:
        raise ValueError(f"no room for context: budget {budget} tokens")
    keep_suffix = min(suffix_tokens, max(budget // SUFFIX_SHARE, budget - prefix_tokens))
    keep_prefix = min(prefix_tokens, budget - keep_suffix)
    return keep_prefix, keep_suffix
