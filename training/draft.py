"""Train the drafting adapter of a causal-context DLM (decoding.fim): the default model's DLM.

    python -m training.draft --output ~/.cache/codila-lsp/runs/draft --max-minutes 60
    python -m training.draft --output RUN                    # a killed run goes on from its last checkpoint
    python -m training.draft --output RUN --export decoding/default_model/dlm

Every flag, its default and range: docs/training.md (training.config's DraftConfig, held by tests).

The base (Qwen2.5-Coder-0.5B by default) stays frozen and is never changed where it decides the output: the
context runs causally with the adapter off, so the base's own next token is exact. The adapter is trained
only where parallel decoding needs it, behind the frontier: a block of K mask tokens placed after a context
that ends j tokens into a true middle, attending to the whole context and bidirectionally to itself, whose
output k must predict what the base itself would write k + 1 places after the frontier.

The target is the base's own distribution there (self-distillation, free: the causal pass that builds the
context's keys and values over prefix, suffix and the true middle also gives the base's prediction at every
middle position), so the adapter learns to agree with the verifier rather than with the data. The loss is
KL(base || draft) per masked position. Several blocks (different j) share one context pass.

Samples are editor-shaped: a cut in a Python file of the standard library's training split (never the
benchmark's held-out files, nor the dev files tuning reads), a prefix of up to `prefix_tokens`, a middle of
`middle_tokens`, a suffix of up to `suffix_tokens` after it.

State lives in --output (training.lora_run): `checkpoint.pt` (adapter, optimiser, step, random state; written
atomically every `save_every` steps) and `log.jsonl` (the learning curve). Validation every `eval_every` steps on fixed
samples from the dev split: draft agreement with the base at offsets 1..K and the expected accepted tokens
per pass (1 + the sum over k of the chance that drafts 1..k all agree).
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from decoding.base import registered_base
from training.config import LORA_TARGETS, DraftConfig
from training.corpus import read_text, split_validation, stdlib_files
from training.lora_run import load_adapter, run, start, training_note, write_adapter

log = logging.getLogger("training.draft")

# ----------------------------------------------------------------------------------------------------------
# Samples

@dataclass
class Sample:
    """context: FIM ids up to <|fim_middle|>; middle: the true middle ids (len middle_tokens)."""

    context: list[int]
    middle: list[int]


class Samples:
    """Editor-shaped cuts of source files, tokenised as the editor sends them (prefix, middle, suffix apart)."""

    def __init__(self, files: list[Path], tokenizer, config: DraftConfig, fim_ids: tuple[int, int, int]):
        self.files, self.tok, self.config, self.fim_ids = files, tokenizer, config, fim_ids
        self._texts: dict[Path, str] = {}

    def text(self, path: Path) -> str:
        if path not in self._texts:
            if len(self._texts) > 2000:
                self._texts.clear()
            self._texts[path] = read_text(path)
        return self._texts[path]

    def draw(self, rng: random.Random) -> Sample:
        c = self.config
        while True:
            text = self.text(rng.choice(self.files))
            if len(text) < 400:
                continue
            # cursors sit at a line's indentation or inside a line
            cut = rng.randrange(0, len(text) - 200)
            line_start = text.rfind("\n", 0, cut) + 1
            if rng.random() < 0.5:
                cut = line_start + len(text[line_start:cut]) - len(text[line_start:cut].lstrip()) if \
                    text[line_start:cut].strip() == "" else cut
            head = text[max(0, cut - 6 * c.prefix_tokens):cut]
            rest = text[cut:cut + 12 * (c.middle_tokens + c.suffix_tokens)]
            middle_ids = self.tok.encode(rest, add_special_tokens=False)[:c.middle_tokens]
            if len(middle_ids) < c.middle_tokens:
                continue
            middle_text = self.tok.decode(middle_ids)
            if not rest.startswith(middle_text):
                continue
            prefix = self.tok.encode(head, add_special_tokens=False)[-c.prefix_tokens:]
            suffix = self.tok.encode(rest[len(middle_text):], add_special_tokens=False)[:c.suffix_tokens]
            pre, suf, mid = self.fim_ids
            return Sample([pre, *prefix, suf, *suffix, mid], middle_ids)


def training_data(config, tokenizer, fim_ids: tuple[int, int, int]) -> tuple[Samples, list[Sample]]:
    """Samples of the standard library's training split, and `config.eval_samples` fixed ones of its dev files."""
    train_files, dev_files = split_validation(stdlib_files("train"))
    dev = Samples(dev_files, tokenizer, config, fim_ids)
    rng = random.Random(99)
    return Samples(train_files, tokenizer, config, fim_ids), [dev.draw(rng) for _ in range(config.eval_samples)]


# ----------------------------------------------------------------------------------------------------------
# The model: the base with a LoRA adapter, off for the context, on for the blocks

def load(config: DraftConfig):
    """(peft model, tokenizer, fim ids, draft id) with a fresh float32 LoRA adapter over the frozen bf16 base."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from decoding.base import resolve_model_path
    from decoding.fim import DRAFT_TOKEN, FIM_TOKENS

    folder = resolve_model_path(config.base)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, use_safetensors=True)
    model.requires_grad_(False)
    spec = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0, target_modules=list(LORA_TARGETS))
    model = get_peft_model(model, spec)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    fim_ids = tuple(tokenizer.convert_tokens_to_ids(t) for t in FIM_TOKENS)
    return model, tokenizer, fim_ids, tokenizer.convert_tokens_to_ids(DRAFT_TOKEN)


def blocks_mask(cached: int, starts: list[int], K: int) -> torch.Tensor:
    """(1, 1, n*K, cached + n*K) bool: block b sees the cache's first starts[b] positions and its own K."""
    n = len(starts)
    mask = torch.zeros(n * K, cached + n * K, dtype=torch.bool)
    for b, s in enumerate(starts):
        mask[b * K:(b + 1) * K, :s] = True
        mask[b * K:(b + 1) * K, cached + b * K: cached + (b + 1) * K] = True
    return mask[None, None]


def context_pass(model, sample: Sample) -> tuple[torch.Tensor, object, int]:
    """The base over context + true middle (causal, adapter off, no gradient), as the decoder's cache holds them.

    Returns (base_logits (M, V): row i the base's prediction of middle[i], the KV cache, its length)."""
    ctx, M = len(sample.context), len(sample.middle)
    ids = torch.tensor([sample.context + sample.middle])  # (1, ctx + M)
    with torch.no_grad(), model.disable_adapter():
        out = model(input_ids=ids, use_cache=True, logits_to_keep=M + 1)
    return out.logits[0, :-1].float(), out.past_key_values, ctx + M


def draft_pass(model, kv, cached: int, starts: list[int], K: int, draft_id: int) -> torch.Tensor:
    """Blocks of K masks at `starts` (frontier positions) in one pass, adapter on, each seeing the cache before
    its frontier and its own block. Returns (n*K, V) float: block b's output k predicts position starts[b] + k + 1."""
    positions = torch.tensor([[s + k for s in starts for k in range(K)]])  # (1, n*K)
    x = torch.full((1, len(starts) * K), draft_id)
    return model(input_ids=x, past_key_values=kv, use_cache=True, position_ids=positions,
                 attention_mask={"full_attention": blocks_mask(cached, starts, K)}).logits[0].float()


def sample_loss(model, sample: Sample, K: int, blocks: int, draft_id: int, rng: random.Random,
                grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """KL(base || draft) over `blocks` blocks of K masks at random frontiers j of one sample.

    Returns (loss, agree (blocks, K) bool: the draft's argmax equals the base's)."""
    ctx, M = len(sample.context), len(sample.middle)
    base_logits, kv, cached = context_pass(model, sample)
    # frontier j: middle[j] is the base's own; block output k predicts middle[j + k + 1]
    js = [rng.randrange(0, M - K) for _ in range(blocks)]
    with torch.set_grad_enabled(grad):
        logits = draft_pass(model, kv, cached, [ctx + j for j in js], K, draft_id)  # (n*K, V)
    rows = torch.tensor([j + k + 1 for j in js for k in range(K)])  # (n*K,) middle index predicted
    teacher = torch.log_softmax(base_logits[rows], dim=-1)  # (n*K, V)
    student = torch.log_softmax(logits, dim=-1)
    loss = torch.nn.functional.kl_div(student, teacher, log_target=True, reduction="batchmean")
    agree = (logits.argmax(-1) == base_logits[rows].argmax(-1)).view(blocks, K)
    return loss, agree


def expected_accepted(agree: torch.Tensor) -> float:
    """agree: (n, K) bool per block and offset -> 1 + mean number of leading drafts that agree."""
    run = torch.cumprod(agree.float(), dim=1)  # (n, K): drafts 1..k all agree
    return 1.0 + float(run.sum(1).mean())


def evaluate(model, val: list[Sample], K: int, draft_id: int) -> dict:
    rng = random.Random(1234)
    model.eval()
    agree = torch.cat([sample_loss(model, s, K, 1, draft_id, rng, grad=False)[1] for s in val])  # (n, K)
    model.train()
    return {"agree_at": [round(float(a), 4) for a in agree.float().mean(0)],
            "accepted_per_pass": round(expected_accepted(agree), 4)}


# ----------------------------------------------------------------------------------------------------------
# The run (training.lora_run) and its export

def export(model, config: DraftConfig, out: Path, note: dict) -> Path:
    """The adapter folder the default model ships: bf16 LoRA weights, adapter_config.json naming the base,
    config.json with the DLM's layout (decoding.models reads `codila_dlm_layout`) and int8 weights on a CPU
    (`codila_cpu_dtype`: the default model's card measures them against bfloat16: the same tasks pass, each
    pass reads half the bytes), with the Linear layers a registered base keeps float in int8."""
    base = registered_base(config.base)
    keep = list(base.int8_keep_float) if base is not None else []
    return write_adapter(model, out, config.base, {"codila_dlm_layout": "fim", "dlm_logit_shift": True,
                                                   "codila_cpu_dtype": "int8", "codila_int8_keep_float": keep,
                                                   "codila_training": note})


def train(config: DraftConfig, resume: bool) -> None:
    torch.set_num_threads(config.threads)
    out = Path(config.output).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer, fim_ids, draft_id = load(config)
    samples, val = training_data(config, tokenizer, fim_ids)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    rng = random.Random(config.seed)
    begun = start(out / "checkpoint.pt", model, opt, rng, resume)
    if begun[0]:
        log.info("resumed at step %d (%.1f minutes trained)", *begun)
    log.info("config %s", json.dumps(asdict(config)))

    def one_sample(rng: random.Random) -> tuple[torch.Tensor, dict[str, float]]:
        K = rng.choice(config.block_sizes)
        loss, agree = sample_loss(model, samples.draw(rng), K, config.blocks, draft_id, rng)
        return loss, {"agree1": float(agree[:, 0].float().mean())}

    step, minutes = run(config, out, model, params, opt, rng, begun, one_sample,
                        lambda: evaluate(model, val, 8, draft_id))
    log.info("stopped at step %d, %.1f minutes", step, minutes)


def export_run(config: DraftConfig, target: Path) -> Path:
    saved, note = training_note(Path(config.output).expanduser() / "checkpoint.pt", "accepted_per_pass")
    model, _, _, _ = load(config)
    load_adapter(model, saved)
    return export(model, config, target, note)


def main(argv: list[str] | None = None) -> None:
    config = DraftConfig.command_line("python -m training.draft", __doc__, argv)
    if config.export:
        print(export_run(config, Path(config.export)))
        return
    train(config, config.resume)


if __name__ == "__main__":
    main()
