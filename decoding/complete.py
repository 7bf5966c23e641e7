"""The plain left-to-right baseline: a causal LM completing from the prefix, as a local-AR editor tool does.

    complete(model, tokenizer, prefix, suffix, max_new_tokens=64) -> DecodeResult

It cannot read the suffix, so it stops the way such tools do: at an end-of-text token, at the end of the
line when the cursor is inside a line (text follows it on the same line), and at a line that repeats the
suffix's first non-blank line (the code after the cursor is already there). Greedy, with token healing
(decoding.healing) at the prefix boundary. Every benchmark table carries this row, so each number says
what a user would get from the executor's base alone.
"""

from __future__ import annotations

import time
from functools import lru_cache

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from decoding.base import resolve_model_path
from decoding.healing import Healing, TokenTexts, heal_prefix
from decoding.loop import DecodeResult, DecodeStats

STOP_TOKENS = ("<|endoftext|>", "<|im_end|>", "<|end_of_text|>", "<|eot_id|>")


class _HealingProcessor(LogitsProcessor):
    """Restricts the first generated tokens to those that spell the healed text."""

    def __init__(self, healing: Healing, start: int):
        self.healing = healing
        self.start = start  # length of the prompt: generated tokens begin here

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        remaining = self.healing.removed
        for token in input_ids[0, self.start:].tolist():
            remaining = self.healing.texts.advance(remaining, token)
            if not remaining:
                return scores
        allowed = self.healing.allowed(remaining, scores.shape[-1], scores.device)
        return scores.masked_fill(~allowed[None], float("-inf"))


class _StopAt(StoppingCriteria):
    """Stops once the completion text is finished by the rules in the module docstring."""

    def __init__(self, tokenizer, start: int, rule, removed: str):
        self.tokenizer, self.start, self.rule, self.removed = tokenizer, start, rule, removed

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        text = self.tokenizer.decode(input_ids[0, self.start:], skip_special_tokens=True)
        done = text.startswith(self.removed) and self.rule(text[len(self.removed):]) is not None
        return torch.tensor([done], device=input_ids.device)


def stop_rule(prefix: str, suffix: str):
    """A function text -> the finished completion (text cut where it should end), or None to go on.

    The policy of editor tools that complete with a plain AR (Copilot's and Continue's, in outline): inside
    a line, or on a line that does not open a block, complete one line; after a line that opens a block
    (ends with `:`, `{`, `(` or `[`) write several, until a line indented less than the cursor's, or one
    that repeats the suffix's first non-blank line.
    """
    same_line = suffix.split("\n", 1)[0].strip()
    next_line = next((line.strip() for line in suffix.split("\n") if line.strip()), None)
    before = prefix.rsplit("\n", 1)
    cursor_line = before[-1]
    previous = next((line.rstrip() for line in reversed(before[0].split("\n")) if line.strip()), "") if len(before) > 1 else ""
    multiline = not same_line and not cursor_line.strip() and previous.endswith((":", "{", "(", "["))
    indent = len(cursor_line) - len(cursor_line.lstrip())

    def rule(text: str) -> str | None:
        if "\n" not in text:
            return None
        if not multiline:
            return text.split("\n", 1)[0]
        lines = text.split("\n")
        for i, line in enumerate(lines[1:-1], start=1):  # whole lines only (the last may be partial)
            if line.strip() and (len(line) - len(line.lstrip()) < indent or line.strip() == next_line):
                return "\n".join(lines[:i])
        return None

    return rule


@lru_cache(maxsize=2)
def load_plain_ar(path: str, device: torch.device, dtype: torch.dtype):
    """(model, tokenizer) of a plain causal LM (a folder, base:NAME or .gguf), loaded once per process."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_model_path(path)
    if (folder / "adapter_config.json").exists():
        raise ValueError(f"{path} is an adapter folder; give the plain model it was trained from")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, use_safetensors=True).to(device).eval()
    return model, AutoTokenizer.from_pretrained(folder)


@torch.inference_mode()
def complete(model, tokenizer, prefix: str, suffix: str = "", max_new_tokens: int = 64,
             max_prefix_tokens: int | None = None, token_healing: bool = True) -> DecodeResult:
    """Greedy left-to-right completion of `prefix` (the suffix only decides where to stop)."""
    start = time.perf_counter()
    ids = tokenizer.encode(prefix, add_special_tokens=False)
    if max_prefix_tokens is not None:
        ids = ids[-max_prefix_tokens:] if max_prefix_tokens else []
    vocab = model.get_output_embeddings().weight.shape[0]
    texts = TokenTexts.of(tokenizer, vocab)
    healed = heal_prefix(ids, texts, frozenset(tokenizer.all_special_ids)) if token_healing else None
    if healed is not None:
        ids = healed.prefix_ids
    if not ids:  # nothing to condition on: start from the end-of-text token, as a new document
        ids = [tokenizer.convert_tokens_to_ids("<|endoftext|>") or 0]
    prompt = torch.tensor([ids], device=model.device)
    rule = stop_rule(prefix, suffix)
    removed = healed.removed.decode("utf-8", errors="replace") if healed is not None else ""
    processors = LogitsProcessorList()
    if healed is not None and healed.removed:
        processors.append(_HealingProcessor(Healing(texts, healed.removed), prompt.shape[1]))
    stop_ids = [i for t in STOP_TOKENS if isinstance(i := tokenizer.convert_tokens_to_ids(t), int)
                and i != tokenizer.unk_token_id]
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=max_new_tokens,
                         do_sample=False, logits_processor=processors, eos_token_id=stop_ids or None,
                         pad_token_id=stop_ids[0] if stop_ids else 0,
                         stopping_criteria=StoppingCriteriaList([_StopAt(tokenizer, prompt.shape[1], rule, removed)]))
    tokens = [t for t in out[0, prompt.shape[1]:].tolist() if t not in stop_ids]
    text = tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    stats = DecodeStats(tokens=len(tokens), iterations=len(tokens), committed_per_iteration=[1] * len(tokens))
    if removed:
        stats.healing = "ok" if text.startswith(removed) else "failed"
        text = text[len(removed):] if text.startswith(removed) else ""
    finished = rule(text)
    text = text if finished is None else finished
    stats.ar_calls = 1
    stats.ar_tokens = len(tokens)
    stats.seconds = stats.ar_seconds = time.perf_counter() - start
    return DecodeResult(text, tokens, stats, tokens)
