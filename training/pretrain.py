"""Pretrain the small default models from scratch on the training split of the Python standard library.

    python -m training.pretrain --model dlm --output runs/pretrain/dlm --max-minutes 70
    python -m training.pretrain --model ar --tokenizer runs/pretrain/dlm --output runs/pretrain/ar --max-minutes 15

- `--model dlm`: a masked-diffusion LM in the Dream layout (Qwen2 architecture, config.json with
  `"dlm_logit_shift": true` and `"mask_token_id"`), trained bidirectionally through the same forward that
  inference uses (decoding.models.make_bidirectional + dlm_logits, logit shift included). Objective: t ~ U(eps, 1)
  (stratified over the batch), each position masked with probability t, cross-entropy on masked positions weighted 1/t. A share
  (`--infill-share`) of the samples has the editor's shape: prefix + middle + EOS padding up to a budget N
  + suffix, with the masks on that region only, so the model learns to close a middle with EOS.
- `--model ar`: a causal LM in the Qwen3 layout (tied embeddings) that becomes the CoDiLA executor after
  `python -m training.finetune`.

Without `--tokenizer` a byte-level BPE is trained on the training split and saved with the model; pass the
DLM's folder to the AR run so both share ids. The held-out benchmark files are never read. The run ends at
`--max-steps` or `--max-minutes`, whichever comes first; the learning rate follows a cosine over whichever
of the two is nearer, and the folder holds a complete, loadable model after every checkpoint.
Every flag with its default and range: docs/training.md, made from training.config.PretrainConfig.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

from decoding.models import DiffusionLM, dlm_logits, load_tokenizer, make_bidirectional
from training.config import SIZES, PretrainConfig
from training.corpus import read_text, source_files, split_validation, stdlib_files
from training.data import infill_sequence, sample_infill
from training.tokenizer import EOS, MASK, train_tokenizer

log = logging.getLogger("training.pretrain")


def build_model(config: PretrainConfig, vocab: int, eos_id: int) -> torch.nn.Module:
    """A freshly initialised Qwen2 (DLM, untied like Dream) or Qwen3 (AR, tied like Qwen3-0.6B)."""
    hidden, layers, heads, kv_heads, inter = SIZES[config.model][config.size]
    common = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=kv_heads, rope_theta=10_000.0,
                  eos_token_id=eos_id, pad_token_id=eos_id, bos_token_id=eos_id)
    if config.model == "dlm":
        model = Qwen2ForCausalLM(Qwen2Config(**common, max_position_embeddings=2048, tie_word_embeddings=False))
        make_bidirectional(model)
        return model
    return Qwen3ForCausalLM(Qwen3Config(**common, head_dim=hidden // heads, max_position_embeddings=2048,
                                       tie_word_embeddings=True))


class Corpus:
    """Training text as one token stream (EOS between files) plus the raw files for infill cuts."""

    def __init__(self, files: list[Path], tokenizer, eos_id: int):
        self.texts = [read_text(p) for p in files]
        self.texts = [t for t in self.texts if t.strip()]
        if not self.texts:
            raise ValueError("the corpus has no non-empty file")
        encoded = tokenizer(self.texts, add_special_tokens=False)["input_ids"]
        stream = []
        for ids in encoded:
            stream.extend(ids)
            stream.append(eos_id)
        self.stream = torch.tensor(stream, dtype=torch.long)
        self.weights = [len(t) for t in self.texts]

    def window(self, rng: random.Random, length: int) -> torch.Tensor:
        start = rng.randrange(0, max(1, len(self.stream) - length))
        ids = self.stream[start:start + length]
        if len(ids) < length:  # a corpus shorter than one window: repeat it
            ids = self.stream.repeat(length // len(self.stream) + 1)[:length]
        return ids

    def text(self, rng: random.Random) -> str:
        return rng.choices(self.texts, weights=self.weights)[0]


def corpus_files(corpus: str) -> tuple[list[Path], list[Path]]:
    """(training files, validation files) of a corpus: "stdlib" or a folder of source files."""
    files = stdlib_files("train") if corpus == "stdlib" else source_files(Path(corpus))
    train_files, val_files = split_validation(files)
    if not val_files:  # a tiny corpus: validate on the last file
        train_files, val_files = train_files[:-1] or train_files, train_files[-1:]
    return train_files, val_files


def dlm_batch(corpus: Corpus, tokenizer, config: PretrainConfig, rng: random.Random, mask_id: int,
              eos_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A masked-diffusion batch.

    Returns input_ids (N, L) with masks applied, targets (N, L), weight (N, L) = 1/t on masked positions
    and 0 elsewhere, and denom (N,) = the number of positions each sample could have masked.
    """
    n, seq = config.batch_size, config.seq_len
    clean = torch.empty(n, seq, dtype=torch.long)
    region = torch.zeros(n, seq, dtype=torch.bool)  # positions that may be masked
    for i in range(n):
        span = sample_infill(corpus.text(rng), tokenizer, rng, config.max_middle) if rng.random() < config.infill_share else None
        if span is None:
            clean[i] = corpus.window(rng, seq)
            region[i] = True
            continue
        budget = config.budget if rng.random() < 0.5 else rng.randint(len(span.middle), config.budget)
        ex = infill_sequence(span, budget, seq, eos_id, rng)
        clean[i] = torch.tensor(ex.ids)
        region[i, ex.start:ex.start + ex.length] = True
    gen = torch.Generator().manual_seed(rng.getrandbits(63))
    # noise level per sample, stratified over the batch (one draw in each of N equal slices of [0, 1)):
    # the same ELBO in expectation, with far less variance between steps than N independent draws
    u = (torch.arange(n).unsqueeze(1) + torch.rand(n, 1, generator=gen)) / n  # (N, 1)
    t = config.eps + (1 - config.eps) * u[torch.randperm(n, generator=gen)]  # (N, 1)
    masked = (torch.rand(n, seq, generator=gen) < t) & region  # each region position masked with prob t
    for i in range(n):  # at least one masked position per sample
        if not masked[i].any():
            choices = region[i].nonzero().flatten()
            masked[i, choices[torch.randint(len(choices), (1,), generator=gen)]] = True
    inputs = torch.where(masked, torch.full_like(clean, mask_id), clean)
    weight = masked.float() / t  # ELBO weight 1/t on masked positions
    return inputs, clean, weight, region.sum(1).float()


def dlm_loss(dlm: DiffusionLM, inputs, targets, weight, denom) -> torch.Tensor:
    """Masked-diffusion loss: mean over samples of sum_masked CE / t, per maskable position."""
    logits = dlm_logits(dlm, inputs)  # (N, L, V), row i predicts token i (logit shift applied)
    sel = weight > 0
    ce = F.cross_entropy(logits[sel].float(), targets[sel], reduction="none")  # (M,)
    per_sample = torch.zeros_like(denom).index_add_(0, sel.nonzero()[:, 0], ce * weight[sel])  # (N,)
    return (per_sample / denom).mean()


def ar_batch(corpus: Corpus, config: PretrainConfig, rng: random.Random) -> torch.Tensor:
    """input_ids (N, L) windows of the token stream for causal LM training."""
    return torch.stack([corpus.window(rng, config.seq_len) for _ in range(config.batch_size)])


@torch.no_grad()
def evaluate_dlm(dlm: DiffusionLM, corpus: Corpus, tokenizer, config: PretrainConfig) -> dict:
    """Masked-token accuracy at fixed mask rates on validation windows, and on full-masked infill regions."""
    dlm.model.eval()
    rng = random.Random(1234)
    out = {}
    windows = torch.stack([corpus.window(rng, config.seq_len) for _ in range(8)])  # (8, L)
    gen = torch.Generator().manual_seed(1234)
    for rate in (0.15, 0.5):
        masked = torch.rand(windows.shape, generator=gen) < rate
        logits = dlm_logits(dlm, windows.masked_fill(masked, dlm.mask_id))
        out[f"acc@{rate:.2f}"] = float((logits.argmax(-1)[masked] == windows[masked]).float().mean())
    hits, total, eos_hits, eos_total = 0, 0, 0, 0
    for _ in range(16):
        span = sample_infill(corpus.text(rng), tokenizer, rng, config.max_middle)
        if span is None:
            continue
        ex = infill_sequence(span, config.budget, config.seq_len, dlm.eos_id, rng)
        ids = torch.tensor([ex.ids])
        region = slice(ex.start, ex.start + ex.length)
        inputs = ids.clone()
        inputs[0, region] = dlm.mask_id
        pred = dlm_logits(dlm, inputs).argmax(-1)[0, region]
        true = ids[0, region]
        first = pred[: len(span.middle)] == true[: len(span.middle)]
        hits, total = hits + int(first.sum()), total + len(span.middle)
        eos_hits, eos_total = eos_hits + int((pred[len(span.middle):] == dlm.eos_id).sum()), eos_total + ex.length - len(span.middle)
    out["infill_middle_acc"] = hits / max(total, 1)
    out["infill_pad_eos_acc"] = eos_hits / max(eos_total, 1)
    dlm.model.train()
    return out


@torch.no_grad()
def evaluate_ar(model, corpus: Corpus, config: PretrainConfig) -> dict:
    model.eval()
    rng = random.Random(1234)
    ids = torch.stack([corpus.window(rng, config.seq_len) for _ in range(16)])
    loss = float(model(input_ids=ids, labels=ids, use_cache=False).loss)
    model.train()
    return {"val_loss": loss}


def save_model(model, tokenizer, folder: Path, extra_config: dict) -> None:
    """Write a complete HF folder atomically: build it beside `folder`, then swap it in."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if extra_config:
        cfg_path = tmp / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg.update(extra_config)
        cfg_path.write_text(json.dumps(cfg, indent=2))
    for item in tmp.iterdir():  # os.replace per file: a reader never sees a half-written file
        os.replace(item, folder / item.name)
    tmp.rmdir()


def pretrain(config: PretrainConfig) -> Path:
    """Run one pretraining; returns the output folder (a loadable HF model folder)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    train_files, val_files = corpus_files(config.corpus)
    if config.tokenizer:
        tokenizer = load_tokenizer(Path(config.tokenizer))
    else:
        tokenizer = train_tokenizer(train_files, config.vocab_size)
    eos_id, mask_id = tokenizer.convert_tokens_to_ids(EOS), tokenizer.convert_tokens_to_ids(MASK)
    train, val = Corpus(train_files, tokenizer, eos_id), Corpus(val_files, tokenizer, eos_id)
    log.info("corpus: %d train files (%d tokens), %d validation files (%d tokens)", len(train.texts),
             len(train.stream), len(val.texts), len(val.stream))

    model = build_model(config, len(tokenizer), eos_id)
    if config.init:  # continue from an earlier run's weights (same architecture)
        init = type(model).from_pretrained(config.init, use_safetensors=True)
        model.load_state_dict(init.state_dict())
        log.info("initialised from %s", config.init)
    extra = {"dlm_logit_shift": True, "mask_token_id": mask_id} if config.model == "dlm" else {}
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model %s/%s: %.2fM parameters", config.model, config.size, n_params / 1e6)
    dlm = DiffusionLM(model, tokenizer, mask_id, eos_id, logit_shift=True) if config.model == "dlm" else None

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, 0.95))
    rng = random.Random(config.seed)
    metrics = (out / "metrics.jsonl").open("a")
    start = last_save = time.monotonic()
    budget_s = config.max_minutes * 60
    model.train()
    step, tokens = 0, 0
    while step < config.max_steps and time.monotonic() - start < budget_s:
        progress = max(step / config.max_steps, (time.monotonic() - start) / budget_s)
        lr = config.lr * lr_factor(step, progress, config.warmup_steps, config.min_lr_ratio)
        for group in opt.param_groups:
            group["lr"] = lr
        if dlm is not None:
            loss = dlm_loss(dlm, *dlm_batch(train, tokenizer, config, rng, mask_id, eos_id))
        else:
            ids = ar_batch(train, config, rng)
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        opt.step()
        step += 1
        tokens += config.batch_size * config.seq_len
        elapsed = time.monotonic() - start
        if step % config.log_every == 0:
            row = {"step": step, "loss": round(loss.item(), 4), "lr": lr, "grad_norm": round(grad_norm.item(), 3),
                   "tokens": tokens, "elapsed_s": round(elapsed, 1), "tokens_per_s": round(tokens / elapsed)}
            metrics.write(json.dumps(row) + "\n")
            metrics.flush()
            log.info("%s", row)
        if step % config.eval_every == 0:
            ev = evaluate_dlm(dlm, val, tokenizer, config) if dlm is not None else evaluate_ar(model, val, config)
            metrics.write(json.dumps({"step": step, "eval": ev, "elapsed_s": round(elapsed, 1)}) + "\n")
            metrics.flush()
            log.info("eval step %d: %s", step, ev)
        if time.monotonic() - last_save > config.save_every_minutes * 60:
            save_model(model, tokenizer, out, extra)
            last_save = time.monotonic()
    save_model(model, tokenizer, out, extra)
    ev = evaluate_dlm(dlm, val, tokenizer, config) if dlm is not None else evaluate_ar(model, val, config)
    summary = {"done": True, "steps": step, "tokens": tokens, "elapsed_s": round(time.monotonic() - start, 1),
               "params": n_params, "final_eval": ev, "config": dataclasses.asdict(config)}
    metrics.write(json.dumps(summary) + "\n")
    metrics.close()
    log.info("done: %s", summary)
    return out


def lr_factor(step: int, progress: float, warmup_steps: int, min_ratio: float) -> float:
    """Linear warmup over `warmup_steps`, then cosine from 1 to `min_ratio` as progress goes 0 -> 1."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    # cosine decay on the share of the step/time budget already spent
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def main(argv: list[str] | None = None) -> None:
    pretrain(PretrainConfig.command_line("python -m training.pretrain", __doc__, argv))


if __name__ == "__main__":
    main()
