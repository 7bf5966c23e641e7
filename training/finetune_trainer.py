"""The fine-tuning loop of training.finetune: the models, the optimizer and the resumable state of one run.

`Trainer.train` runs optimizer steps of the recipe (training.finetune_recipe) on the run's data
(training.finetune_data), validates every `val_every` steps keeping the best AR in `output`, and writes a
resumable checkpoint every `save_every` steps (atomically; the trained tensors only). Samples and masks are
a pure function of (seed, step, micro-batch, rank), so a resumed run sees what an uninterrupted one would.
Several processes (torchrun) train with DistributedDataParallel.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

from decoding.base import BASE_PREFIX
from decoding.config import DEFAULT_TAU
from decoding.models import ADAPTER_CONFIG, ADAPTER_WEIGHTS, ExecutorLM, load_models, truncate_layers
from training.config import FinetuneConfig
from training.finetune_data import Dataset
from training.finetune_recipe import ar_block_batch, ar_block_loss, collate, mask_response

log = logging.getLogger("training.finetune")


class Trainer:
    """Owns the models, the optimizer and the resumable state of one run."""

    def __init__(self, config: FinetuneConfig):
        self.config = config
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        device = config.device
        if self.world > 1:
            import torch.distributed as dist

            local = int(os.environ.get("LOCAL_RANK", "0"))
            if torch.cuda.is_available():
                torch.cuda.set_device(local)
                device = f"cuda:{local}"
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if config.threads:
            torch.set_num_threads(config.threads)
        torch.manual_seed(_seed(config.seed, "torch", self.rank))  # a new adapter's init and dropout: reproducible
        # the AR trains in float32 (autocast to bf16 on CUDA); the frozen DLM runs in the resolved dtype.
        # An adapter folder given as --ar is merged at load: a LoRA run then trains a new adapter on top.
        self.pair = load_models(config.dlm, config.ar, device=device, dtype=config.dtype,
                                trust_remote_code=config.trust_remote_code,
                                boundary_tokens=tuple(config.boundary_tokens) or None)
        if config.executor_layers:  # a shallower executor: the first k layers of the AR, then the adapter
            truncate_layers(self.pair.ar.model, config.executor_layers)
        self.pair.ar.model = trainable_ar(self.pair.ar, config)
        self.device = self.pair.ar.device
        use_ckpt = config.gradient_checkpointing == "on" or (config.gradient_checkpointing == "auto" and self.device.type == "cuda")
        if use_ckpt:
            # non-reentrant: the soft prompt needs no grad of its own for the LoRA weights inside to get one
            self.pair.ar.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model = self.pair.ar.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.data = Dataset(config, self.pair.dlm.tokenizer, rank=self.rank, eos_id=self.pair.dlm.eos_id)
        self._orders: dict[int, list[int]] = {}  # epoch -> shuffled training order (the last two kept)
        if not self.data.train:
            raise ValueError("no training items left after the validation split; lower --val-samples")
        self.params = [p for p in self.pair.ar.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: cosine_with_warmup(s, config.warmup_steps, config.max_steps))
        self.step, self.best_val = 0, math.inf
        self.out = Path(config.output)
        self.out.mkdir(parents=True, exist_ok=True)
        self.ckpt_dir = self.out / "checkpoints"

    # -- samples: a pure function of (seed, step, micro-batch, rank), so a resumed run sees the same data
    def micro_batch(self, step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
        cfg = self.config
        n = len(self.data.train)
        examples = []
        for b in range(cfg.batch_size):
            g = ((step * cfg.grad_accum + micro) * self.world + self.rank) * cfg.batch_size + b  # global sample index
            epoch, k = divmod(g, n)
            examples.append(self.data.example(self.data.train[self._epoch_order(epoch)[k]],
                                              random.Random(_seed(cfg.seed, "sample", g))))
        ids, spans = collate(examples, self.data.eos_id)
        gen = torch.Generator().manual_seed(_seed(cfg.seed, "mask", step, micro, self.rank))
        return mask_response(ids, spans, cfg.block_size, self.pair.dlm.mask_id, cfg, gen)

    def _epoch_order(self, epoch: int) -> list[int]:
        """The shuffled order of the training items in `epoch` (shuffled once, not per sample)."""
        if epoch not in self._orders:
            order = list(range(len(self.data.train)))
            random.Random(_seed(self.config.seed, "epoch", epoch)).shuffle(order)
            self._orders = {e: o for e, o in self._orders.items() if e == epoch - 1}
            self._orders[epoch] = order
        return self._orders[epoch]

    def forward_loss(self, model: torch.nn.Module, inputs, labels, blocks) -> tuple[torch.Tensor, int]:
        embeds, targets = ar_block_batch(self.pair, inputs, labels, blocks, self.config.block_size)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            return ar_block_loss(model, embeds, targets)

    @torch.no_grad()
    def validate(self) -> float:
        """Mean CE per target token over the validation items, with fixed masks (seeded per item).

        Items go through in batches of val_batch_size; with several processes each validates every
        world-th item and the sums are all-reduced, so every rank gets the same number.
        """
        cfg = self.config
        model = self.pair.ar.model  # unwrapped: no DDP collective inside the forward
        model.eval()
        total, count = 0.0, 0
        mine = list(range(self.rank, len(self.data.val), self.world))
        for lo in range(0, len(mine), cfg.val_batch_size):
            chunk = mine[lo:lo + cfg.val_batch_size]
            examples = [self.data.example(self.data.val[i], random.Random(_seed(cfg.seed, "val", i))) for i in chunk]
            ids, spans = collate(examples, self.data.eos_id)  # (n, L)
            inputs, labels, blocks = [], [], []
            for row, i in enumerate(chunk):  # each item masked by its own generator: batching changes nothing
                gen = torch.Generator().manual_seed(_seed(cfg.seed, "valmask", i))
                x, y, b = mask_response(ids[row:row + 1], spans[row:row + 1], cfg.block_size, self.pair.dlm.mask_id, cfg, gen)
                inputs.append(x)
                labels.append(y)
                blocks.extend((row, lo_) for _, lo_ in b)
            loss, n = self.forward_loss(model, torch.cat(inputs), torch.cat(labels), blocks)
            total, count = total + float(loss) * n, count + n
        model.train()
        if self.world > 1:
            import torch.distributed as dist

            sums = torch.tensor([total, float(count)], dtype=torch.float64,
                                device=self.device if self.device.type == "cuda" else "cpu")
            dist.all_reduce(sums)
            total, count = float(sums[0]), int(sums[1])
        return total / max(count, 1)

    def train(self, on_step: Callable[[int], None] | None = None) -> dict:
        """Run to max_steps (or max_minutes); `on_step(step)` is called after each optimizer step."""
        cfg = self.config
        if cfg.resume:
            self._load_checkpoint()
        start, start_step = time.monotonic(), self.step
        tokens = 0
        bar = self._progress_bar()
        while self.step < cfg.max_steps:
            if self._out_of_time(start):
                log.info("time budget of %.1f minutes spent at step %d", cfg.max_minutes, self.step)
                break
            loss_sum, n_tok = 0.0, 0
            for micro in range(cfg.grad_accum):
                inputs, labels, blocks = self.micro_batch(self.step, micro)
                sync = micro == cfg.grad_accum - 1 or self.world == 1
                with (self.model.no_sync() if not sync else contextlib.nullcontext()):
                    loss, n = self.forward_loss(self.model, inputs, labels, blocks)
                    (loss / cfg.grad_accum).backward()
                loss_sum += loss.item() / cfg.grad_accum
                tokens += inputs.numel() * self.world
                n_tok += n
            torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
            self.opt.step()
            self.sched.step()
            self.opt.zero_grad(set_to_none=True)
            self.step += 1
            elapsed = time.monotonic() - start
            self._report(bar, loss_sum, tokens / max(elapsed, 1e-9), elapsed / (self.step - start_step))
            if self.step % cfg.val_every == 0 or self.step == cfg.max_steps:
                self._validate_and_keep()  # every rank validates its share; rank 0 keeps the best
            if self.rank == 0 and self.step % cfg.save_every == 0:
                self._save_checkpoint()
            if on_step is not None:
                on_step(self.step)
        if self.step % cfg.val_every and self.step != cfg.max_steps:
            self._validate_and_keep()
        if self.rank == 0:
            self._save_checkpoint()
            tau = self.pair.ar.tau
            kept = f"codila_tau {tau} kept from --ar" if tau is not None else f"none set (decoders use {DEFAULT_TAU})"
            log.info("dynamic threshold: %s; a sharper executor wants its own, chosen on the tuning set with "
                     "python -m benchmarks.tune_tau --dlm %s --ar %s --taus T1,T2,... --write", kept, cfg.dlm, self.out)
        if bar is not None:
            bar.close()
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()  # rank 0 may still be validating and writing
            dist.destroy_process_group()
        result = {"done": True, "output": str(self.out), "best_val_loss": self.best_val, "step": self.step}
        if self.rank == 0 and cfg.json_progress:
            print(json.dumps(result), flush=True)
        return result

    def _out_of_time(self, start: float) -> bool:
        """True once max_minutes has passed; with several processes, as soon as any of them says so."""
        late = bool(self.config.max_minutes) and time.monotonic() - start > self.config.max_minutes * 60
        if self.world > 1:
            import torch.distributed as dist

            flag = torch.tensor([float(late)], device=self.device if self.device.type == "cuda" else "cpu")
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            late = bool(flag.item())
        return late

    # -- reporting
    def _progress_bar(self):
        if self.rank != 0:
            return None
        from tqdm import tqdm

        return tqdm(total=self.config.max_steps, initial=self.step, desc="finetune", file=sys.stderr,
                    disable=self.config.json_progress and not sys.stderr.isatty())

    def _report(self, bar, loss: float, tokens_per_s: float, s_per_step: float) -> None:
        if self.rank != 0:
            return
        lr = self.sched.get_last_lr()[0]
        row = {"step": self.step, "total_steps": self.config.max_steps, "loss": round(loss, 5), "lr": lr,
               "tokens_per_s": round(tokens_per_s, 1), "eta_s": round(s_per_step * (self.config.max_steps - self.step), 1)}
        with (self.out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.config.json_progress:
            print(json.dumps(row), flush=True)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:.0f}")

    def _validate_and_keep(self) -> None:
        val = self.validate() if self.data.val else math.inf
        if self.rank != 0:
            return
        with (self.out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps({"step": self.step, "val_loss": val}) + "\n")
        log.info("step %d: validation loss %.4f (best %.4f)", self.step, val, self.best_val)
        if val < self.best_val or not self._exported():
            self.best_val = min(val, self.best_val)
            self._export_best()

    # -- files
    def _exported(self) -> bool:
        return any((self.out / name).exists() for name in ("model.safetensors", ADAPTER_WEIGHTS))

    def _export_best(self) -> None:
        """Write the AR into `output`, one os.replace per file: a complete HF folder (full fine-tune) or a peft
        adapter folder with the base's config.json and the tokenizer (LoRA); either loads with load_ar."""
        tmp = self.out / "best.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model, ar = self.pair.ar.model, self.pair.ar
        config = model.config
        # recorded so that a later fine-tune of this AR (the server's trainOnWorkspace) can reuse the rate
        config.codila_finetune_lr = self.config.lr
        config.codila_block_size = self.config.block_size
        config.codila_boundary_tokens = ar.tokenizer.convert_ids_to_tokens([ar.open_id, ar.close_id])
        if self.config.executor_layers:
            config.codila_executor_layers = self.config.executor_layers
        if self.config.lora_rank:
            base = self.config.ar  # base:NAME stays a name (resolved at load); a path becomes absolute
            model.peft_config["default"].base_model_name_or_path = (
                base if base.startswith(BASE_PREFIX) else str(Path(base).expanduser().resolve()))
            model.save_pretrained(tmp, safe_serialization=True)
            (tmp / "README.md").unlink(missing_ok=True)  # peft's empty model-card template
            config.save_pretrained(tmp)  # the base's config with the codila_* keys: they override the base's
            stale = ("model.safetensors", "model.safetensors.index.json")
        else:
            model.save_pretrained(tmp, safe_serialization=True)
            stale = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)
        ar.tokenizer.save_pretrained(tmp)
        for f in tmp.iterdir():
            os.replace(f, self.out / f.name)
        tmp.rmdir()
        for name in stale:  # a folder is either a model or an adapter, never both
            (self.out / name).unlink(missing_ok=True)

    def _save_checkpoint(self) -> None:
        """checkpoints/step-N/{model.safetensors, state.pt}, then the `latest` pointer, each written atomically.
        model.safetensors holds the trained tensors by name: every weight of a full fine-tune, the adapter's
        of a LoRA run."""
        target = self.ckpt_dir / f"step-{self.step:08d}"
        tmp = self.ckpt_dir / f".step-{self.step:08d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        weights = {k: p.detach().contiguous().cpu() for k, p in self.pair.ar.model.named_parameters() if p.requires_grad}
        save_file(weights, tmp / "model.safetensors")
        torch.save({"step": self.step, "best_val": self.best_val, "optimizer": self.opt.state_dict(),
                    "scheduler": self.sched.state_dict(), "torch_rng": torch.get_rng_state(),
                    "python_rng": random.getstate(), "config": dataclasses.asdict(self.config)}, tmp / "state.pt")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        pointer = self.ckpt_dir / "latest.tmp"
        pointer.write_text(target.name)
        os.replace(pointer, self.ckpt_dir / "latest")
        for old in self.ckpt_dir.glob("step-*"):
            if old != target:
                shutil.rmtree(old, ignore_errors=True)

    def _load_checkpoint(self) -> None:
        pointer = self.ckpt_dir / "latest"
        if not pointer.exists():
            return
        folder = self.ckpt_dir / pointer.read_text().strip()
        model = self.pair.ar.model
        weights = load_file(folder / "model.safetensors", device=str(self.device))
        trained = {k for k, p in model.named_parameters() if p.requires_grad}
        if set(weights) != trained:
            raise ValueError(f"{folder}: checkpoint does not match this run's trained weights (a LoRA run resumed as a "
                             f"full one or the reverse?): missing {sorted(trained - set(weights))[:5]}, "
                             f"unexpected {sorted(set(weights) - trained)[:5]}")
        model.load_state_dict(weights, strict=False)
        state = torch.load(folder / "state.pt", weights_only=True)
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        self.step, self.best_val = state["step"], state["best_val"]
        log.info("resumed from %s at step %d (best validation loss %.4f)", folder, self.step, self.best_val)


def trainable_ar(ar: ExecutorLM, config: FinetuneConfig) -> torch.nn.Module:
    """The AR in training form: float32, train mode; every weight trainable (lora_rank 0), or wrapped in a new
    LoRA adapter (peft) of which only the adapter matrices and the `lora_train_tokens` embedding rows train."""
    model = ar.model.float().train()
    if not config.lora_rank:
        return model.requires_grad_(True)
    from peft import LoraConfig, get_peft_model

    rows = lora_token_rows(ar, config.lora_train_tokens)
    targets = "all-linear" if config.lora_targets == ("all-linear",) else list(config.lora_targets)
    spec = LoraConfig(r=config.lora_rank, lora_alpha=config.alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets, trainable_token_indices=rows or None)
    wrapped = get_peft_model(model, spec)
    n_train = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    log.info("LoRA rank %d alpha %g on %s, embedding rows %s: %d trainable parameters of %d", config.lora_rank,
             config.alpha, targets, rows, n_train, sum(p.numel() for p in wrapped.parameters()))
    return wrapped


def lora_token_rows(ar: ExecutorLM, tokens: tuple[str, ...]) -> list[int]:
    """Embedding rows that train with a LoRA adapter: 'boundary' = the AR's two boundary tokens, 'none' = no
    row, else the named tokens (ValueError for one the tokenizer lacks)."""
    if tokens == ("none",):
        return []
    if tokens == ("boundary",):
        return [ar.open_id, ar.close_id]
    rows = []
    for token in tokens:
        tid = ar.tokenizer.convert_tokens_to_ids(token)
        if not isinstance(tid, int) or tid == ar.tokenizer.unk_token_id:
            raise ValueError(f"--lora-train-tokens: the AR tokenizer has no token {token!r}")
        rows.append(tid)
    return rows


def cosine_with_warmup(step: int, warmup: int, total: int) -> float:
    """lr factor: linear warmup to 1 over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))  # cosine from 1 to 0


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha1(repr(parts).encode()).digest()[:8], "big") >> 1
