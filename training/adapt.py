"""Make a diffusion LM from a pretrained causal LM, the way Dream was made from Qwen2.5.

    python -m training.adapt --base base:smollm2-135m --output ~/.cache/codila-lsp/runs/dlm-lora \\
        --method lora --lora-rank 32 --max-minutes 120
    python -m training.adapt ... --method full          # every weight trains (the comparison run)

The conversion: attention becomes bidirectional, the logit shift stays on (position i is read from the
output at i - 1, so the pretrained next-token head keeps its meaning), and a special token the base never
meets in code becomes the mask (`--mask-token`, SmolLM2's `<empty_output>`: re-using a row keeps the
vocabulary, the tied embedding and the executor's ids exactly the base's; a new row would change all three).
Then the masked-diffusion objective on source code, in the shapes the editor produces:
- editor samples (`--infill-share`): prefix + middle + EOS padding to a budget + suffix, the boundary laid
  out as token healing lays it out at inference; the masked region is masked whole (`--whole-share` of
  them: the editor's first DLM pass, when the whole middle is still masks), uniformly at a level
  t ~ U(eps, 1), or from a random cut to its end (what a left-to-right decode sees);
- windows of the token stream, uniformly masked or with one masked span of 1-64 tokens.
Cross-entropy on masked positions only, and the LM head runs only on those rows.

Resumable: every `--save-every-minutes` the run writes `checkpoint.pt` (trainable weights, optimizer, data
RNG, counters; loaded with weights_only) and `export/`, a loadable model folder (a peft LoRA adapter over
the base, or the full model in bfloat16), both atomically. Re-running the same command continues where the
last checkpoint left off, for `--max-minutes` more. The learning rate is constant after warmup so a run can
go on over several sessions. `metrics.jsonl` gets the training curve and fixed-mask validation accuracy.
Sources: the training split of the standard library (`--no-stdlib` leaves it out), plus `--extra-source`
folders (permissively licensed Python the install already has); the benchmark's held-out files are never read.
Every flag with its default and range: docs/training.md, made from training.config.AdaptConfig.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from decoding.base import resolve_model_path
from decoding.models import make_bidirectional, resolve_device
from training.config import LORA_TARGETS, AdaptConfig
from training.corpus import read_text, source_files, split_validation, stdlib_files
from training.data import infill_sequence, sample_infill

log = logging.getLogger("training.adapt")


# ---------------------------------------------------------------------------------------------- model
def load_base_as_dlm(config: AdaptConfig):
    """(model, tokenizer, mask_id, eos_id): the base with bidirectional attention, trainable as configured."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_model_path(config.base)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    mask_id, eos_id = (_token_id(tokenizer, t) for t in (config.mask_token, config.eos_token))
    # LoRA keeps the frozen base in bfloat16 (half the memory traffic); full training needs fp32 masters
    dtype = torch.bfloat16 if config.method == "lora" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    make_bidirectional(model)
    if config.method == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                          target_modules=list(LORA_TARGETS), trainable_token_indices={"embed_tokens": [mask_id]})
        model = get_peft_model(model, lora)
        for p in model.parameters():  # trainable parameters in fp32 (AdamW state and updates)
            if p.requires_grad:
                p.data = p.data.float()
    return model, tokenizer, mask_id, eos_id


def _token_id(tokenizer, token: str) -> int:
    tid = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(tid, int) or tid == tokenizer.unk_token_id and token != tokenizer.unk_token:
        raise ValueError(f"the base's tokenizer has no {token!r} token")
    return tid


def backbone(model):
    """The transformer without its LM head (through a peft wrapper if there is one)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.model, inner.lm_head


def masked_logits(model, inputs: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Logits only where the loss needs them. inputs: (N, L); rows: (M, 2) [sample, position] -> (M, V).

    Dream's logit shift: position i is predicted by the output at i - 1 (position 0 by its own).
    """
    body, head = backbone(model)
    hidden = body(input_ids=inputs, use_cache=False).last_hidden_state  # (N, L, H)
    source = (rows[:, 1] - 1).clamp(min=0)
    return head(hidden[rows[:, 0], source])  # (M, V)


# ----------------------------------------------------------------------------------------------- data
class Sources:
    """Training texts (token stream for windows, raw texts for editor samples) and validation texts."""

    def __init__(self, config: AdaptConfig, tokenizer, eos_id: int):
        files = stdlib_files("train") if config.stdlib else []
        for folder in config.extra_sources:  # source_files drops the benchmark's held-out files
            files.extend(f for f in source_files(Path(folder)) if f.suffix == ".py")
        train, val = split_validation(sorted(set(files)))
        if not train or not val:
            raise ValueError(f"{len(files)} source files give {len(train)} training and {len(val)} validation files "
                             "(one in 50 validates): add sources")
        self.texts = [t for t in (read_text(p) for p in train) if t.strip()]
        self.val_texts = [t for t in (read_text(p) for p in val) if t.strip()]
        self.weights = [len(t) for t in self.texts]
        ids: list[int] = []
        for chunk in range(0, len(self.texts), 256):
            for row in tokenizer(self.texts[chunk:chunk + 256], add_special_tokens=False)["input_ids"]:
                ids.extend(row)
                ids.append(eos_id)
        self.stream = torch.tensor(ids, dtype=torch.long)
        log.info("sources: %d training files (%d tokens, %.1f MB), %d validation files", len(self.texts),
                 len(self.stream), sum(self.weights) / 1e6, len(self.val_texts))

    def window(self, rng: random.Random, length: int) -> torch.Tensor:
        start = rng.randrange(0, len(self.stream) - length)
        return self.stream[start:start + length]


def make_batch(src: Sources, tokenizer, config: AdaptConfig, rng: random.Random, mask_id: int, eos_id: int,
               texts: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """inputs (N, L) with masks applied, targets (N, L), masked (N, L) bool."""
    n, seq = config.batch_size, config.seq_len
    clean = torch.empty(n, seq, dtype=torch.long)
    masked = torch.zeros(n, seq, dtype=torch.bool)
    texts = texts or src.texts
    for i in range(n):
        t = config.eps + (1 - config.eps) * rng.random()
        span = None
        if rng.random() < config.infill_share:
            span = sample_infill(rng.choices(texts, weights=None if texts is not src.texts else src.weights)[0],
                                 tokenizer, rng, config.max_middle, heal=True)
        if span is not None:
            budget = config.budget if rng.random() < 0.5 else rng.randint(len(span.middle), config.budget)
            ex = infill_sequence(span, budget, seq, eos_id, rng)
            clean[i] = torch.tensor(ex.ids)
            region = torch.arange(ex.start, ex.start + ex.length)
            if config.whole_share and rng.random() < config.whole_share:  # the editor's first pass
                pick = region
            elif rng.random() < 0.5:  # uniform masking of the middle region
                pick = region[torch.rand(len(region), generator=_gen(rng)) < t]
            else:  # a left-to-right decode's state: the middle masked from a cut on
                pick = region[rng.randrange(len(region)):]
            masked[i, pick] = True
            if not masked[i].any():
                masked[i, region[rng.randrange(len(region))]] = True
            continue
        clean[i] = src.window(rng, seq)
        if rng.random() < 0.5:
            masked[i] = torch.rand(seq, generator=_gen(rng)) < t
        else:
            width = rng.randint(1, min(64, seq - 2))
            start = rng.randrange(1, seq - width)
            masked[i, start:start + width] = True
        masked[i, 0] = False if masked[i, 1:].any() else masked[i, 0]
        if not masked[i].any():
            masked[i, rng.randrange(1, seq)] = True
    inputs = clean.masked_fill(masked, mask_id)
    return inputs, clean, masked


class BatchStream(torch.utils.data.IterableDataset):
    """Endless training batches made by DataLoader worker processes, so that a fast device never waits for
    the tokenizer. Each worker draws from its own stream, seeded by (seed, the step this invocation started
    at, worker id): deterministic for a given command line, and a resumed invocation does not replay data."""

    def __init__(self, src: Sources, tokenizer, config: AdaptConfig, mask_id: int, eos_id: int, start_step: int):
        self.args = (src, tokenizer, config)
        self.ids = (mask_id, eos_id)
        self.start_step = start_step

    def __iter__(self):
        src, tokenizer, config = self.args
        info = torch.utils.data.get_worker_info()
        rng = random.Random(f"{config.seed}/{self.start_step}/{info.id if info else 0}")
        while True:
            yield make_batch(src, tokenizer, config, rng, *self.ids)


def batches(src: Sources, tokenizer, config: AdaptConfig, rng: random.Random, mask_id: int, eos_id: int,
            start_step: int):
    """The training batches: made in the loop from `rng` (checkpointed, so a resumed run is exactly a
    straight one), or by `config.data_workers` processes."""
    if config.data_workers == 0:
        while True:
            yield make_batch(src, tokenizer, config, rng, mask_id, eos_id)
    loader = torch.utils.data.DataLoader(BatchStream(src, tokenizer, config, mask_id, eos_id, start_step),
                                         batch_size=None, num_workers=config.data_workers, prefetch_factor=4,
                                         pin_memory=resolve_device(config.device).type == "cuda")
    yield from loader


def _gen(rng: random.Random) -> torch.Generator:
    return torch.Generator().manual_seed(rng.getrandbits(63))


def loss_on(model, inputs: torch.Tensor, targets: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the masked positions of the batch."""
    rows = masked.nonzero()  # (M, 2)
    with torch.autocast(inputs.device.type, dtype=torch.bfloat16):
        logits = masked_logits(model, inputs, rows)  # (M, V)
    return F.cross_entropy(logits.float(), targets[masked])


# ------------------------------------------------------------------------------------------ evaluation
class Validation:
    """Fixed validation batches (same samples and masks every time): uniform masking at 15% and 50%
    of windows, and editor samples with the whole middle region masked."""

    def __init__(self, src: Sources, tokenizer, config: AdaptConfig, mask_id: int, eos_id: int, n: int = 32):
        rng = random.Random(4321)
        stream = []
        for text in src.val_texts:
            stream.extend(tokenizer.encode(text, add_special_tokens=False) + [eos_id])
        stream = torch.tensor(stream)
        starts = [rng.randrange(0, len(stream) - config.seq_len) for _ in range(n)]
        windows = torch.stack([stream[s:s + config.seq_len] for s in starts])  # (n, L)
        gen = torch.Generator().manual_seed(4321)
        self.sets = {}
        for rate in (0.15, 0.5):
            m = torch.rand(windows.shape, generator=gen) < rate
            m[:, 0] = False
            self.sets[f"acc@{rate:.2f}"] = (windows.masked_fill(m, mask_id), windows, m)
        rows, marks = [], []
        while len(rows) < n:
            span = sample_infill(rng.choice(src.val_texts), tokenizer, rng, config.max_middle, heal=True)
            if span is None:
                continue
            ex = infill_sequence(span, config.budget, config.seq_len, eos_id, rng)
            ids = torch.tensor(ex.ids)
            m = torch.zeros(config.seq_len, dtype=torch.bool)
            m[ex.start:ex.start + len(span.middle)] = True  # scored on the true middle tokens
            full = torch.zeros_like(m)
            full[ex.start:ex.start + ex.length] = True  # but the whole budget is masked
            rows.append((ids.masked_fill(full, mask_id), ids, m))
        self.sets["infill_middle_acc"] = tuple(torch.stack(x) for x in zip(*rows))

    @torch.no_grad()
    def __call__(self, model) -> dict:
        model.eval()
        out = {}
        device = next(model.parameters()).device
        for name, batch in self.sets.items():
            inputs, targets, m = (x.to(device) for x in batch)
            hits = total = 0
            ce = 0.0
            for i in range(0, len(inputs), 8):
                rows = m[i:i + 8].nonzero()
                with torch.autocast(inputs.device.type, dtype=torch.bfloat16):
                    logits = masked_logits(model, inputs[i:i + 8], rows).float()
                true = targets[i:i + 8][m[i:i + 8]]
                hits += int((logits.argmax(-1) == true).sum())
                ce += float(F.cross_entropy(logits, true, reduction="sum"))
                total += len(true)
            out[name] = round(hits / max(total, 1), 4)
            out[name.replace("acc", "ce")] = round(ce / max(total, 1), 4)
        model.train()
        return out


# ------------------------------------------------------------------------------------ save and resume
def save_checkpoint(model, opt, state: dict, out: Path) -> None:
    trainable = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    _atomic_torch_save({"trainable": trainable, "optimizer": opt.state_dict(), "state": state},
                       out / "checkpoint.pt")


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def export(model, tokenizer, config: AdaptConfig, mask_id: int, eos_id: int, out: Path, note: dict) -> Path:
    """Write `out/export`: a folder load_dlm reads (adapter over the base, or the whole model)."""
    final = out / "export"
    tmp = out / "export.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    codila = {"dlm_logit_shift": True, "mask_token_id": mask_id, "eos_token_id": eos_id, "pad_token_id": eos_id,
              "codila_adapt": note}
    if config.method == "lora":
        model.save_pretrained(tmp, safe_serialization=True)
        cfg_path = tmp / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = config.base  # the registry name, resolved at load
        cfg_path.write_text(json.dumps(cfg, indent=2))
        base_cfg = json.loads((Path(resolve_model_path(config.base)) / "config.json").read_text())
        (tmp / "config.json").write_text(json.dumps({**base_cfg, **codila}, indent=2, sort_keys=True))
    else:
        model.to(torch.bfloat16).save_pretrained(tmp, safe_serialization=True)
        model.float()
        cfg = json.loads((tmp / "config.json").read_text())
        (tmp / "config.json").write_text(json.dumps({**cfg, **codila}, indent=2, sort_keys=True))
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(final.with_name("export.old"), ignore_errors=True)
    if final.exists():
        os.replace(final, final.with_name("export.old"))
    os.replace(tmp, final)
    shutil.rmtree(final.with_name("export.old"), ignore_errors=True)
    return final


def adapt(config: AdaptConfig) -> Path:
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.output).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    model, tokenizer, mask_id, eos_id = load_base_as_dlm(config)
    device = resolve_device(config.device)
    model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    log.info("%s: %.2fM trainable of %.1fM parameters; mask %d, eos %d", config.method,
             sum(p.numel() for p in trainable) / 1e6, sum(p.numel() for p in model.parameters()) / 1e6,
             mask_id, eos_id)
    opt = torch.optim.AdamW(trainable, lr=config.lr, betas=(0.9, 0.95), weight_decay=config.weight_decay)
    state = {"step": 0, "tokens": 0, "seconds": 0.0, "rng": random.Random(config.seed).getstate()}
    ckpt = out / "checkpoint.pt"
    if ckpt.exists():
        saved = torch.load(ckpt, weights_only=True, map_location="cpu")
        missing = set(n for n, p in model.named_parameters() if p.requires_grad) ^ set(saved["trainable"])
        if missing:
            raise ValueError(f"{ckpt} does not match this configuration (parameters {sorted(missing)[:3]}...)")
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in saved["trainable"].items():
                params[name].copy_(value)
        opt.load_state_dict(saved["optimizer"])
        state = saved["state"]
        state["rng"] = _tuple_state(state["rng"])
        log.info("resumed from %s at step %d (%.1f min trained)", ckpt, state["step"], state["seconds"] / 60)
    src = Sources(config, tokenizer, eos_id)
    val = Validation(src, tokenizer, config, mask_id, eos_id)
    rng = random.Random()
    rng.setstate(state["rng"])
    metrics = (out / "metrics.jsonl").open("a")
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))

    def record(row: dict) -> None:
        metrics.write(json.dumps(row) + "\n")
        metrics.flush()
        log.info("%s", row)

    if state["step"] == 0:
        record({"step": 0, "tokens": 0, "minutes": 0.0, "eval": val(model)})
    model.train()
    start = last_save = last_eval = time.monotonic()
    seconds0 = state["seconds"]
    budget_s = config.max_minutes * 60
    stream = batches(src, tokenizer, config, rng, mask_id, eos_id, state["step"])
    while state["step"] < config.max_steps and time.monotonic() - start < budget_s:
        lr = config.lr * min(1.0, (state["step"] + 1) / max(1, config.warmup_steps))  # warmup 0: none
        for group in opt.param_groups:
            group["lr"] = lr
        inputs, targets, masked = (x.to(device, non_blocking=True) for x in next(stream))
        loss = loss_on(model, inputs, targets, masked)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
        opt.step()
        state["step"] += 1
        state["tokens"] += inputs.numel()
        state["seconds"] = seconds0 + time.monotonic() - start
        if state["step"] % config.log_every == 0:
            record({"step": state["step"], "loss": round(loss.item(), 4), "lr": lr, "grad_norm": round(float(norm), 3),
                    "tokens": state["tokens"], "minutes": round(state["seconds"] / 60, 2),
                    "tokens_per_s": round(state["tokens"] / max(state["seconds"], 1e-9))})
        now = time.monotonic()
        if now - last_eval > config.eval_every_minutes * 60:
            record({"step": state["step"], "tokens": state["tokens"], "minutes": round(state["seconds"] / 60, 2),
                    "eval": val(model)})
            last_eval = time.monotonic()
        if now - last_save > config.save_every_minutes * 60:
            _save_all(model, opt, state, rng, tokenizer, config, mask_id, eos_id, out)
            last_save = time.monotonic()
    _save_all(model, opt, state, rng, tokenizer, config, mask_id, eos_id, out)
    record({"step": state["step"], "tokens": state["tokens"], "minutes": round(state["seconds"] / 60, 2),
            "eval": val(model), "end_of_session": True})
    metrics.close()
    return out / "export"


def _save_all(model, opt, state, rng, tokenizer, config, mask_id, eos_id, out: Path) -> None:
    state["rng"] = rng.getstate()
    save_checkpoint(model, opt, state, out)
    export(model, tokenizer, config, mask_id, eos_id, out,
           {"method": config.method, "step": state["step"], "tokens": state["tokens"],
            "minutes": round(state["seconds"] / 60, 1), "device": config.device})
    log.info("saved step %d to %s", state["step"], out)


def _tuple_state(value):
    """random.Random states come back from torch.load as lists; setstate wants tuples."""
    return tuple(_tuple_state(v) for v in value) if isinstance(value, list) else value


def main(argv: list[str] | None = None) -> None:
    adapt(AdaptConfig.command_line("python -m training.adapt", __doc__, argv))


if __name__ == "__main__":
    main()
