"""The causal-context DLM and verified decoding: how the default model drafts in parallel on a CPU.

A DLM with `codila_dlm_layout: "fim"` in its config.json is a fill-in-the-middle causal LM (the base) plus a
LoRA adapter that is switched on per position:

    context   <|fim_prefix|> P <|fim_suffix|> S <|fim_middle|> m_1 .. m_j    causal, adapter off: the base
                                                                           exactly as a FIM completer runs it
    block     x_1 .. x_K   (K mask tokens after the context)               adapter on; attends to the whole
                                                                           context and to the whole block
Dream's logit shift: the output at position i predicts position i + 1. The last context token's output is the
base's own next-token choice (exact: no adapter, causal), and block output k predicts the token k + 1 places
past the frontier: the drafts. Only the drafts are trained (training.draft); the frontier never changes.

One round is one forward pass (`Drafter.step`): the tokens to verify (adapter off, causal, appended to the
KV cache) and K masks behind them (adapter on, dropped from the cache afterwards). The base's prediction at
each verified token accepts the longest run of drafts it agrees with, so the middle is exactly the base's
greedy output, token for token, with or without drafts; drafting only changes how many passes it takes.
That is speculative decoding with the DLM as the drafter, in one pass per round: on a memory-bound CPU a pass
over sixteen positions costs about what a pass over one does.

    generate(fim, prefix_ids, suffix_ids, max_new_tokens, draft=K, stop=..., heal=...) -> DecodeResult

`generate` is the one round loop of every method on this layout; a `Rounds` strategy says what a round commits
(verified: the run the base agrees with; decoding.fim_codila: the CoDiLA rows, unverified).
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from decoding.healing import Healing, TokenTexts
from decoding.quantize import is_int8, output_rows
from decoding.result import Cancelled, DecodeResult, DecodeStats, StepInfo

FIM_TOKENS = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")
# tokens that end a middle when the base writes them (Qwen2.5-Coder: any of these after <|fim_middle|>)
FIM_STOP_TOKENS = ("<|endoftext|>", "<|im_end|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>",
                   "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|end_of_text|>", "<|eot_id|>")
DRAFT_TOKEN = "<|fim_pad|>"  # the mask token of the drafting block: present in the vocabulary, never in code


class PositionGate:
    """Switches a LoRA adapter per position: `mask` (N, T, 1) multiplies every adapter's output (None: on
    everywhere, as in training's block pass). Installed as forward hooks on the adapter's lora_B modules.
    `off()` skips the adapter's layers altogether (the base alone, exact)."""

    def __init__(self) -> None:
        self.mask: torch.Tensor | None = None
        self.layers: list[torch.nn.Module] = []  # peft's LoRA layers

    def hook(self, module, inputs, output):
        return output if self.mask is None else output * self.mask.to(output.dtype)

    def install(self, model: torch.nn.Module) -> int:
        n = 0
        for name, module in model.named_modules():
            if name.split(".")[-2:-1] == ["lora_B"]:
                module.register_forward_hook(self.hook)
                n += 1
            elif hasattr(module, "lora_B") and hasattr(module, "_disable_adapters"):
                self.layers.append(module)
        return n

    @contextmanager
    def off(self):
        """The adapter off for the duration: each LoRA layer runs its base layer only. Not peft's
        disable_adapter(), which builds a status report from every layer's repr on each entry (that unpacks
        every int8 weight: seconds per pass; milliseconds in bfloat16). `_disable_adapters` is the flag peft's
        own enable_adapters() sets, without that method's side effect of making the adapter trainable."""
        before = [layer._disable_adapters for layer in self.layers]
        for layer in self.layers:
            layer._disable_adapters = True
        try:
            yield
        finally:
            for layer, flag in zip(self.layers, before):
                layer._disable_adapters = flag


@dataclass
class DraftMeter:
    """Whether drafting pays on this machine, measured while decoding (one per model, kept across requests).

    A drafting pass costs more than a plain one (the adapter's layers, the block's positions and its mask);
    it pays when the drafts it yields make up for that: (1 + drafts accepted per drafting pass) / its time
    against 1 / a plain pass's time, tokens per millisecond. Each is a moving average of what verified decoding
    measured. Every `explore`-th round takes the other choice, so neither estimate goes stale when the machine,
    the load or the code being written changes. The output does not depend on it: verified keeps the base's
    greedy tokens, drafted or not (with int8 weights up to near-ties: docs/decoding.md).

    Measured on 2 CPU cores with int8 weights: a drafting pass 65-69 ms, a plain one 35 ms, 1.25 tokens per
    drafting pass: drafting loses, and the meter keeps to plain passes there.
    """

    explore: int = 8
    weight: float = 0.2  # of the newest measurement in each moving average
    drafting_ms: float | None = None
    plain_ms: float | None = None
    gain: float | None = None  # drafts accepted per drafting pass
    rounds: int = 0

    def pays(self) -> bool:
        if self.drafting_ms is None or self.gain is None:
            return True  # measure drafting first
        if self.plain_ms is None:
            return False  # then a plain pass
        return (1 + self.gain) / self.drafting_ms >= 1 / self.plain_ms

    def draft_now(self) -> bool:
        """This round's choice: what pays, or once every `explore` rounds the other."""
        self.rounds += 1
        return self.pays() != (self.rounds % self.explore == 0)

    def passed(self, drafted: bool, ms: float) -> None:
        if drafted:
            self.drafting_ms = self._mix(self.drafting_ms, ms)
        else:
            self.plain_ms = self._mix(self.plain_ms, ms)

    def accepted(self, drafts: int) -> None:
        """How many of a drafting pass's drafts the next round kept (0 when it could use none)."""
        self.gain = self._mix(self.gain, float(drafts))

    def _mix(self, old: float | None, new: float) -> float:
        return new if old is None else (1 - self.weight) * old + self.weight * new


@dataclass
class FimLM:
    """A causal LM that reads fill-in-the-middle prompts, with an optional drafting adapter.

    model: the base (a peft model when `drafts`, else plain); fim_ids: (prefix, suffix, middle) token ids, or
    None for a model without FIM tokens (then only prefix completion); stop_ids: ids that end a middle;
    draft_id: the token the drafting block is made of; gate: the adapter's per-position switch; meter: whether
    drafting pays here (verified decoding drafts only when it does).
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    fim_ids: tuple[int, int, int] | None
    stop_ids: frozenset[int]
    draft_id: int | None = None
    gate: PositionGate | None = None
    meter: DraftMeter = field(default_factory=DraftMeter)
    _cache: "PromptCache | None" = field(default=None, repr=False)

    @property
    def drafts(self) -> bool:
        return self.gate is not None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def vocab_size(self) -> int:
        return output_rows(self.model)

    def forget_prompt(self) -> None:
        """The next request prefills its whole prompt (benchmarks time every decoder cold)."""
        self._cache = None

    def adapter_off(self):
        """Context manager: the base alone (PositionGate.off), or nothing to switch off."""
        return self.gate.off() if self.drafts else nullcontext()

    def prompt(self, prefix_ids: list[int], suffix_ids: list[int] | None) -> list[int]:
        """PSM order, as Qwen2.5-Coder was trained: <|fim_prefix|> P <|fim_suffix|> S <|fim_middle|>.
        suffix_ids None (or a model without FIM tokens): the prefix alone, a plain completion."""
        if suffix_ids is None or self.fim_ids is None:
            return list(prefix_ids)
        pre, suf, mid = self.fim_ids
        return [pre, *prefix_ids, suf, *suffix_ids, mid]


def wrap_fim(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, drafting: bool) -> FimLM:
    """A FimLM over `model` (a peft model with one LoRA adapter when `drafting`)."""
    ids = [tokenizer.convert_tokens_to_ids(t) for t in FIM_TOKENS]
    unk = tokenizer.unk_token_id
    fim_ids = tuple(ids) if all(isinstance(i, int) and i != unk for i in ids) else None
    stops = {i for t in FIM_STOP_TOKENS if isinstance(i := tokenizer.convert_tokens_to_ids(t), int) and i != unk}
    if tokenizer.eos_token_id is not None:
        stops.add(tokenizer.eos_token_id)
    gate, draft_id = None, None
    if drafting:
        draft_id = tokenizer.convert_tokens_to_ids(DRAFT_TOKEN)
        if fim_ids is None or not isinstance(draft_id, int) or draft_id == unk:
            raise ValueError(f"a drafting DLM needs FIM tokens {FIM_TOKENS} and {DRAFT_TOKEN!r} in its tokenizer")
        gate = PositionGate()
        if gate.install(model) == 0:
            raise ValueError("a drafting DLM needs a LoRA adapter; the model has none")
    return FimLM(model, tokenizer, fim_ids, frozenset(stops), draft_id, gate)


# ----------------------------------------------------------------------------------------------------------
# The KV cache of the causal context, kept across requests

@dataclass
class PromptCache:
    """The KV cache of `ids` (all exact: adapter off, causal). A new prompt reuses the longest common start."""

    ids: list[int]
    kv: DynamicCache


def prefill(fim: FimLM, ids: list[int]) -> tuple[DynamicCache, torch.Tensor, int]:
    """The cache of `ids` and the base's logits for the token after them. (cache, logits (V,), reused tokens).

    The cache of the last prompt is kept on `fim`: a prompt that starts with the same tokens (the same
    document, a keystroke later) computes only what changed. Logits are projected for the last position only.
    """
    assert ids, "prefill needs at least one token"
    reused = 0
    cached = fim._cache
    fim._cache = None  # taken: the decode appends to it; put back (cropped to the prompt) by `keep`
    if cached is not None:
        n = _common_start(cached.ids, ids)
        reused = min(n, len(ids) - 1)  # at least one token runs, to give the logits
        if reused > 0:
            kv = cached.kv
            truncate(kv, reused)
        else:
            kv = DynamicCache()
    else:
        kv = DynamicCache()
    with fim.adapter_off():
        if reused == 0 and len(ids) > 1 and is_int8(fim.model):
            # the first token alone: it is the attention sink, whose activations are ~30x every other token's
            # in some layers; in one pass with the rest, int8's one activation scale per pass would flatten
            # every other token to a few levels (the FIM middle then degenerates into whitespace)
            kv = _forward(fim, ids[:1], 0, kv).past_key_values
            reused_here = 1
        else:
            reused_here = reused
        out = _forward(fim, ids[reused_here:], reused_here, kv)
    return out.past_key_values, out.logits[0, -1].float(), reused


def _forward(fim: FimLM, ids: list[int], start: int, kv: DynamicCache):
    """The base (adapter as switched by the caller) over `ids` at positions start..; logits of the last only."""
    return fim.model(input_ids=torch.tensor([ids], device=fim.device), past_key_values=kv, use_cache=True,
                     logits_to_keep=1, position_ids=torch.arange(start, start + len(ids), device=fim.device)[None])


def keep(fim: FimLM, ids: list[int], kv: DynamicCache) -> None:
    """Remember the cache of the prompt `ids` (cropped to them) for the next request."""
    truncate(kv, len(ids))
    fim._cache = PromptCache(list(ids), kv)


def truncate(kv: DynamicCache, length: int) -> None:
    """Keep the first `length` positions of the cache (transformers' crop takes how many to remove)."""
    extra = kv.get_seq_length() - length
    if extra > 0:
        kv.crop(-extra)


def _common_start(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


# ----------------------------------------------------------------------------------------------------------
# One round: verify the pending tokens and draft the next ones, in one forward pass

def round_mask(past: int, pending: int, block: int, device: torch.device) -> torch.Tensor:
    """(1, 1, T, past + T) bool, T = pending + block: pending token i sees the past and pending tokens <= i
    (causal); block positions see the past, every pending token and the whole block (bidirectional)."""
    T = pending + block
    mask = torch.ones(T, past + T, dtype=torch.bool, device=device)
    mask[:pending, past:past + pending] = torch.tril(torch.ones(pending, pending, dtype=torch.bool, device=device))
    mask[:pending, past + pending:] = False
    return mask[None, None]


def step(fim: FimLM, kv: DynamicCache, pending: list[int], block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Append `pending` to the cache (adapter off) and, in the same pass, draft `block` tokens behind them.

    Returns (verify (P, V): the base's logits after each pending token, drafts (block, V): the logits of the
    block, row k predicting the token k + 1 places after the last pending one's successor). The cache keeps
    the pending tokens only: the block's keys and values are dropped.
    """
    past = kv.get_seq_length()
    P = len(pending)
    ids = pending + [fim.draft_id] * block if block else pending
    T = len(ids)
    x = torch.tensor([ids], device=fim.device)  # (1, T)
    positions = torch.arange(past, past + T, device=fim.device)[None]  # (1, T)
    if not block:
        with fim.adapter_off():
            out = fim.model(input_ids=x, past_key_values=kv, use_cache=True, position_ids=positions)
        return out.logits[0].float(), out.logits[0, :0].float()
    fim.gate.mask = (torch.arange(T, device=fim.device) >= P).view(1, T, 1)  # adapter on the block only
    try:
        out = fim.model(input_ids=x, past_key_values=kv, use_cache=True, position_ids=positions,
                        attention_mask={"full_attention": round_mask(past, P, block, fim.device)})
    finally:
        fim.gate.mask = None
    truncate(kv, past + P)  # the block is scratch: only verified tokens stay in the cache
    logits = out.logits[0].float()  # (T, V)
    return logits[:P], logits[P:]


# ----------------------------------------------------------------------------------------------------------
# The decode: one pass per round; what a round commits is the strategy's

class Rounds(Protocol):
    """How a round chooses its tokens, fixed for one decode (decoding.fim_codila.make_rounds picks it).

    block:    masks drafted behind the frontier in each pass (0: none, one token per pass);
    verifies: True: the next pass's verify rows keep the longest run of the round's tokens the base agrees with
              (method verified); False: every token a round chooses is committed (the CoDiLA rows: codila,
              codila-top1 and dlm measure the drafter, so nothing corrects it);
    propose(logits (V,), drafts (K, V), room) -> the round's tokens: first the base's own token at the frontier,
              argmax(logits), then at most `room` tokens behind it, read from the K >= 1 draft rows.
    """

    block: int
    verifies: bool

    def propose(self, logits: torch.Tensor, drafts: torch.Tensor, room: int) -> list[int]: ...


@dataclass(frozen=True)
class DraftArgmax:
    """The base's frontier token, then each draft row's argmax: verified (block = K drafts per pass), the base
    alone (block 0), or the DLM alone, unverified (method dlm: block = k - 1)."""

    block: int
    verifies: bool = True

    def propose(self, logits: torch.Tensor, drafts: torch.Tensor, room: int) -> list[int]:
        return [int(logits.argmax()), *drafts[:room].argmax(-1).tolist()]


@torch.inference_mode()  # no autograd graph: peft's LoRA layers would record one for the drafting passes
def generate(fim: FimLM, prefix_ids: list[int], suffix_ids: list[int] | None, max_new_tokens: int, *,
             draft: int = 0, rounds: Rounds | None = None, stats: DecodeStats | None = None, heal: bytes = b"",
             stop: Callable[[str], str | None] | None = None, cancel: Callable[[], bool] | None = None,
             on_step: Callable | None = None):
    """The middle between prefix_ids and suffix_ids (None: complete the prefix), one forward pass per round.

    rounds: what each round commits (None: verified, `draft` tokens drafted per pass: the base's greedy
    middle, which does not depend on `draft`; 0 = the base alone, one token per pass). A round without drafts
    (the first, the one after a rejected draft, every round while healing) commits the base's token alone.
    stats: the decode's counters (a strategy that times its own work shares them), None = new ones.
    heal: text the middle must start with (token healing; the returned text leaves it out): while it is
    unspelled, each round commits the base's choice among the tokens that spell it. stop(text) -> the
    finished text, or None to go on (the editor's rule: where a completion ends).
    """
    rounds = rounds if rounds is not None else DraftArgmax(draft)
    if rounds.block and not fim.drafts:
        raise ValueError("drafting needs a DLM with a drafting adapter (codila_dlm_layout 'fim')")
    start = time.perf_counter()
    stats = stats if stats is not None else DecodeStats()
    stats.healing = "on" if heal else "off"
    ids = fim.prompt(prefix_ids, suffix_ids) or [min(fim.stop_ids)]
    kv, logits, stats.reused_tokens = prefill(fim, ids)
    stats.prefill_tokens = len(ids) - stats.reused_tokens
    texts = TokenTexts.of(fim.tokenizer, fim.vocab_size)
    healing = Healing(texts, heal) if heal else None
    removed = heal.decode("utf-8", errors="replace")

    out: list[int] = []
    drafts = logits.new_empty(0, logits.shape[-1])  # (K, V) draft rows behind the frontier, from the last pass
    meter = fim.meter if rounds.verifies and rounds.block else None  # verified: draft where it pays
    drafted_last = False  # the last pass drafted (the meter learns what its drafts were worth this round)
    text = ""
    finished: str | None = None
    iteration = 0
    try:
        while len(out) < max_new_tokens:
            if cancel is not None and cancel():
                raise Cancelled(f"decode cancelled before iteration {iteration}")
            healing_now = healing is not None and healing.active
            if healing_now:  # the boundary token: the base's choice among those that spell the healed text
                logits = logits.masked_fill(~healing.allowed(healing.remaining, logits.shape[-1], logits.device),
                                            float("-inf"))
            nxt = int(logits.argmax())
            if nxt in fim.stop_ids:
                break
            room = max_new_tokens - len(out) - 1
            pending = rounds.propose(logits, drafts, room) if len(drafts) and not healing_now else [nxt]
            assert pending[0] == nxt and len(pending) <= room + 1, "a round starts with the base's frontier token"
            block = 0 if healing_now else max(0, min(rounds.block, max_new_tokens - len(out) - len(pending)))
            if meter is not None and block and not meter.draft_now():
                block = 0
            began = time.perf_counter()
            verify, drafts = step(fim, kv, pending, block)
            if meter is not None:
                meter.passed(block > 0, 1000 * (time.perf_counter() - began))
            stats.dlm_forwards += 1
            accepted = len(pending)
            if rounds.verifies:
                # pending[0] is the base's own choice; draft i is kept while the base, fed the tokens before it,
                # picks it too (q = p: always accept a draft the greedy base would write itself)
                accepted = 1
                while accepted < len(pending) and int(verify[accepted - 1].argmax()) == pending[accepted]:
                    accepted += 1
            stats.drafted += len(pending) - 1
            stats.accepted += accepted - 1
            if meter is not None and drafted_last:
                meter.accepted(accepted - 1)
            drafted_last = block > 0
            kept = pending[:accepted]
            stats.committed_per_iteration.append(accepted)
            if accepted < len(pending):
                truncate(kv, kv.get_seq_length() - (len(pending) - accepted))
                drafts = drafts[:0]  # drafted behind a rejected token
            logits = verify[accepted - 1]
            for token in kept:
                if token in fim.stop_ids:
                    break
                out.append(token)
                if healing is not None:
                    healing.remaining = texts.advance(healing.remaining, token) if healing.active else b""
            stopped_here = any(t in fim.stop_ids for t in kept)
            text = fim.tokenizer.decode(out, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            if on_step is not None:
                on_step(StepInfo(iteration, len(kept), max_new_tokens - len(out), time.perf_counter() - start,
                                 [], kept))
            iteration += 1
            if stop is not None and text.startswith(removed):
                finished = stop(text[len(removed):])
                if finished is not None:
                    break
            if stopped_here:
                break
    finally:
        keep(fim, ids, kv)

    body = text[len(removed):] if text.startswith(removed) else None
    stats.tokens, stats.iterations = len(out), iteration
    if heal:
        stats.healing = "ok" if body is not None else "failed"
    final = finished if finished is not None else (body or "")
    stats.seconds = time.perf_counter() - start
    stats.dlm_seconds = stats.seconds - stats.ar_seconds  # the executor's calls (codila) are timed apart
    return DecodeResult(final, out, stats, out)
