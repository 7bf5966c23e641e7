"""Fine-tune the AR executor of a CoDiLA pair on a frozen DLM's marginals (the method's training recipe).

    python -m training.finetune --dlm DLM_DIR --ar AR_DIR --data train.jsonl --block-size 4 --output runs/ar-b4
    torchrun --nproc_per_node 8 -m training.finetune --dlm DLM_DIR --ar AR_DIR --data train.jsonl \\
        --block-size 4 --output runs/ar-b4

Per sample: the response is cut into contiguous blocks of B tokens; t ~ U(0.2, 0.8) and every block is
masked with p = (1 - eps) t + eps (eps = 1e-3), at least one block always. The frozen DLM runs on the
masked sequence; for each masked block the AR's input is [E(<think>), e_1..e_B, E(</think>)] built from the
DLM's marginals by decoding.soft (the very code inference uses), followed by the block's true tokens
(teacher forcing); the AR learns cross-entropy on the B true tokens. Defaults are the paper's: AdamW,
lr 1e-5, cosine decay, warmup ratio 0.03, max grad norm 7.0, weight decay 0, batch 1 x 8 accumulation,
validation every 100 steps keeping the best checkpoint by validation loss, 32k steps.

Data (`--data`, repeatable; training.finetune_data):
- instruction records: a .jsonl file, a .parquet shard, or a folder of them (Ling-Coder-SFT's
  data/train_000NN_of_00026.parquet): a chat `messages` list of {role, content} (user/assistant or
  HUMAN/ASSISTANT) or two fields (`--instruction-field`, `--response-field`). The last assistant turn is
  the response, rendered after the DLM tokenizer's chat template; the loss is on the response only; a
  response cut at `--max-response` gets no EOS. Records are tokenised once into `--data-cache`;
- a folder (or a single file) of source code: spans of the files become the response (the editor's infill
  shape: prefix + middle + EOS padding up to `--budget` + suffix), the rest of the file is context;
- the word `stdlib`: the training split of the Python standard library, less the "dev" files pretraining
  validates on (held-out files are never read).
Any other file type is refused.

`--output` becomes a complete HF model folder (config, model.safetensors, tokenizer) holding the best
checkpoint, loadable by decoding.models.load_ar. With `--lora-rank R` (> 0) only a new LoRA adapter trains
(peft; every attention and MLP projection by default, plus the embedding rows of the two boundary tokens)
and `--output` becomes an adapter folder instead (adapter_config.json naming --ar as its base,
adapter_model.safetensors, config.json with the codila_* keys, tokenizer), which every loader accepts and
merges at load:

    python -m training.finetune --dlm DLM_DIR --ar AR_DIR --data train.jsonl --lora-rank 16 --lr 2e-4 --output runs/ar-lora

--ar may itself be an adapter folder: it is merged, and the new adapter names it as its base. Resumable
state lives in `--output`/checkpoints/ (written atomically; the trained tensors only); rerunning the same
command after a kill continues from the last checkpoint with the same data, masks and optimizer state.
`--json-progress` prints one JSON object per line on stdout.
"""

from __future__ import annotations

import argparse
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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from decoding.config import DEFAULT_TAU
from decoding.base import BASE_PREFIX
from decoding.models import (ADAPTER_CONFIG, ADAPTER_WEIGHTS, ExecutorLM, ModelPair, dlm_logits_at, fold_stop_tokens,
                             load_models, truncate_layers)
from decoding.soft import align_probs, block_inputs
from training.data import Example
from training.finetune_data import Dataset

log = logging.getLogger("training.finetune")

# the default LoRA targets: every linear projection of attention and MLP (Qwen2/Qwen3/Llama names)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning run. Frozen and validated: a bad value raises ValueError before anything loads."""

    dlm: str
    ar: str
    data: tuple[str, ...]
    output: str
    block_size: int = 4
    # masking schedule
    t_min: float = 0.2
    t_max: float = 0.8
    eps: float = 1e-3
    commit_prob: float = 0.0
    frontier_share: float = 0.0
    # data
    instruction_field: str = "instruction"
    response_field: str = "output"
    messages_field: str = "messages"
    max_length: int = 1024
    max_response: int = 512
    budget: int = 64
    max_middle: int = 64
    val_samples: int = 500
    val_batch_size: int = 8
    data_cache: str = ""
    # optimisation
    lr: float = 1e-5
    warmup_ratio: float = 0.03
    max_grad_norm: float = 7.0
    weight_decay: float = 0.0
    batch_size: int = 1
    grad_accum: int = 8
    max_steps: int = 32_000
    max_minutes: float = 0.0
    # bookkeeping
    val_every: int = 100
    save_every: int = 100
    resume: bool = True
    json_progress: bool = False
    device: str = "auto"
    dtype: str = "auto"
    gradient_checkpointing: str = "auto"
    trust_remote_code: bool = False
    threads: int = 0
    seed: int = 0
    # LoRA: rank 0 = full fine-tune; else the output is a peft adapter folder over --ar
    lora_rank: int = 0
    lora_alpha: float | None = None
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = LORA_TARGETS
    lora_train_tokens: tuple[str, ...] = ("boundary",)
    # the executor's shape: its boundary tokens (empty = the AR's own, see load_ar) and depth (0 = every layer)
    boundary_tokens: tuple[str, ...] = ()
    executor_layers: int = 0
    # source spans laid out as inference's token healing lays them out (decoding.healing)
    token_healing: bool = True

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("give at least one --data path (a .jsonl file, a folder of source files, or 'stdlib')")
        if not 1 <= self.block_size <= 16:
            raise ValueError(f"block_size must be between 1 and 16 (the paper uses 2, 4, 8); got {self.block_size}")
        if not 0 <= self.t_min <= self.t_max <= 1:
            raise ValueError(f"need 0 <= t_min <= t_max <= 1; got {self.t_min}, {self.t_max}")
        if not 0 <= self.eps < 1 or not 0 <= self.commit_prob < 1:
            raise ValueError("eps and commit_prob must be in [0, 1)")
        if not 0 <= self.frontier_share <= 1:
            raise ValueError(f"frontier_share must be in [0, 1]; got {self.frontier_share}")
        for name in ("max_length", "max_response", "budget", "max_middle", "batch_size", "grad_accum",
                     "max_steps", "val_every", "save_every", "val_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1; got {getattr(self, name)}")
        if self.val_samples < 0 or self.threads < 0 or self.max_minutes < 0:
            raise ValueError("val_samples, threads and max_minutes cannot be negative")
        if not 0 < self.lr < 1 or not 0 <= self.warmup_ratio < 1:
            raise ValueError("lr must be in (0, 1) and warmup_ratio in [0, 1)")
        if self.max_grad_norm <= 0 or self.weight_decay < 0:
            raise ValueError("max_grad_norm must be positive and weight_decay non-negative")
        if self.max_middle > self.budget or self.budget + self.block_size >= self.max_length:
            raise ValueError("need max_middle <= budget and budget + block_size < max_length")
        if self.gradient_checkpointing not in ("auto", "on", "off"):
            raise ValueError(f"gradient_checkpointing must be auto, on or off; got {self.gradient_checkpointing!r}")
        if self.lora_rank < 0 or (self.lora_alpha is not None and self.lora_alpha <= 0):
            raise ValueError("lora_rank must be >= 0 (0 = full fine-tune) and lora_alpha positive")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1); got {self.lora_dropout}")
        if self.boundary_tokens and len(self.boundary_tokens) != 2:
            raise ValueError(f"boundary_tokens must name two tokens; got {self.boundary_tokens!r}")
        if self.executor_layers < 0:
            raise ValueError(f"executor_layers must be >= 0 (0 = every layer); got {self.executor_layers}")
        if self.lora_rank and not self.lora_targets:
            raise ValueError("a LoRA fine-tune needs at least one target module (--lora-targets)")

    @property
    def alpha(self) -> float:
        """The LoRA scale numerator: lora_alpha, or 2 x rank when unset."""
        return self.lora_alpha if self.lora_alpha is not None else 2.0 * self.lora_rank

    @property
    def warmup_steps(self) -> int:
        return math.ceil(self.warmup_ratio * self.max_steps)


# ----------------------------------------------------------------------------------------------------------
# Data (training.finetune_data): items -> Examples -> batches

def collate(examples: list[Example], eos_id: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Right-pad with EOS (the unused tail of a canvas is EOS). -> ids (N, L), [(start, length)] per row."""
    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), eos_id, dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, : len(e.ids)] = torch.tensor(e.ids)
    return ids, [(e.start, e.length) for e in examples]


# ----------------------------------------------------------------------------------------------------------
# The recipe: block masking, soft AR inputs, the block loss

def sample_block_mask(n_blocks: int, t_min: float, t_max: float, eps: float, gen: torch.Generator) -> tuple[torch.Tensor, float]:
    """Which of `n_blocks` blocks are masked. -> (mask (n_blocks,) bool, p).

    t ~ U(t_min, t_max); each block is masked independently with p = (1 - eps) t + eps; if none is, one
    block chosen uniformly is.
    """
    if n_blocks < 1:
        raise ValueError("a response needs at least one block")
    t = t_min + (t_max - t_min) * float(torch.rand((), generator=gen))
    p = (1 - eps) * t + eps
    mask = torch.rand(n_blocks, generator=gen) < p
    if not mask.any():
        mask[torch.randint(n_blocks, (), generator=gen)] = True
    return mask, p


def mask_response(ids: torch.Tensor, spans: list[tuple[int, int]], block_size: int, mask_id: int,
                  config: FinetuneConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    """Block-level masking of each row's response.

    ids: (N, L) clean tokens; spans: (start, length) of each row's response, length a multiple of B.
    Returns inputs (N, L) with masks, labels (N, L) = the true token inside masked blocks and -100
    elsewhere, and the trained blocks as (row, first position). With `commit_prob` > 0, positions inside a
    trained block stay visible (committed) with that probability, at least one per block staying masked.
    With `frontier_share` > 0, that share of rows is masked as left-to-right decoding meets them instead of
    by the paper's schedule: every block from a random one on is masked, and only that first one is trained.
    """
    inputs, labels = ids.clone(), torch.full_like(ids, -100)
    blocks = []
    for row, (start, length) in enumerate(spans):
        if length % block_size:
            raise ValueError(f"response length {length} is not a multiple of the block size {block_size}")
        n_blocks = length // block_size
        if config.frontier_share > 0 and float(torch.rand((), generator=gen)) < config.frontier_share:
            # as a left-to-right decoder (scope 1) meets the response: blocks before a random frontier are
            # decided, the frontier block and everything after it masked; only the frontier block is trained
            frontier = int(torch.randint(n_blocks, (), generator=gen))
            chosen, trained = torch.arange(n_blocks) >= frontier, {frontier}
        else:
            chosen, _ = sample_block_mask(n_blocks, config.t_min, config.t_max, config.eps, gen)
            trained = set(chosen.nonzero().flatten().tolist())
        for b in chosen.nonzero().flatten().tolist():
            lo = start + b * block_size
            hidden = torch.ones(block_size, dtype=torch.bool)
            if config.commit_prob > 0 and b in trained:
                hidden = torch.rand(block_size, generator=gen) >= config.commit_prob
                if not hidden.any():
                    hidden[torch.randint(block_size, (), generator=gen)] = True
            inputs[row, lo:lo + block_size][hidden] = mask_id
            if b in trained:
                labels[row, lo:lo + block_size] = ids[row, lo:lo + block_size]
                blocks.append((row, lo))
    return inputs, labels, blocks


def ar_block_batch(pair: ModelPair, inputs: torch.Tensor, labels: torch.Tensor, blocks: list[tuple[int, int]],
                   block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The AR's teacher-forced inputs for every masked block, from one frozen DLM forward.

    inputs, labels: (N, L) from mask_response. Returns embeds (nb, 2B + 2, H) =
    [E(<think>), e_1..e_B, E(</think>), E(y_1)..E(y_B)] and targets (nb, B) = y_1..y_B.
    The DLM's LM head runs only on the masked blocks' positions (a 152k vocabulary makes the rest the
    larger part of the forward's memory), and only their rows are soft-maxed.
    """
    dlm, ar, B = pair.dlm, pair.ar, block_size
    dev = dlm.device
    rows = torch.tensor([r for r, _ in blocks], device=dev)  # (nb,)
    pos = torch.tensor([p for _, p in blocks], device=dev)[:, None] + torch.arange(B, device=dev)  # (nb, B)
    needed = pos.unique()  # (K,) ascending: every position some block needs a marginal for
    with torch.no_grad():
        logits = dlm_logits_at(dlm, inputs.to(dev), needed)  # (N, K, V_dlm)
        block_logits = logits[rows[:, None], torch.searchsorted(needed, pos)].float()  # (nb, B, V_dlm)
        # a turn-end token means EOS, as at inference (decoding.marginals)
        block_logits = fold_stop_tokens(block_logits, dlm.eos_id, dlm.stop_ids)
        block_probs = align_probs(block_logits.softmax(-1), pair.alignment)  # (nb, B, V_ar) marginals
    block_in = inputs.to(dev)[rows[:, None], pos]  # (nb, B)
    committed = torch.where(block_in == dlm.mask_id, torch.full_like(block_in, -1), block_in)  # (nb, B), -1 = masked
    targets = labels.to(dev)[rows[:, None], pos]  # (nb, B)
    assert (targets >= 0).all(), "every position of a masked block has a label"
    E = ar.embeddings
    prompt = block_inputs(block_probs.to(E.device), committed.to(E.device), E, ar.open_id, ar.close_id,
                          dlm.eos_id)  # (nb, B + 2, H)
    targets = targets.to(E.device)
    embeds = torch.cat([prompt, E[targets]], dim=1)  # (nb, 2B + 2, H): teacher forcing on the B tokens
    return embeds, targets


def ar_block_loss(model: torch.nn.Module, embeds: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean CE of the AR on each block's true tokens. -> (loss, number of target tokens).

    Position B + 1 (`</think>`) predicts y_1, position B + 1 + k predicts y_{k+1}; the last input position
    (y_B) predicts nothing, and the LM head runs on the last B + 1 positions only.
    """
    B = targets.shape[1]
    logits = model(inputs_embeds=embeds.to(_dtype(model)), use_cache=False, logits_to_keep=B + 1).logits  # (nb, B + 1, V)
    pred = logits[:, :B].float()  # (nb, B, V): outputs at positions B + 1 .. 2B
    return F.cross_entropy(pred.reshape(-1, pred.shape[-1]), targets.reshape(-1)), targets.numel()


def _dtype(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


# ----------------------------------------------------------------------------------------------------------
# The loop

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
        self.data = Dataset(config, self.pair.dlm.tokenizer, rank=self.rank)
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
                with (self.model.no_sync() if not sync else _nullcontext()):
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


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def cosine_with_warmup(step: int, warmup: int, total: int) -> float:
    """lr factor: linear warmup to 1 over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))  # cosine from 1 to 0


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha1(repr(parts).encode()).digest()[:8], "big") >> 1


def finetune(config: FinetuneConfig, on_step: Callable[[int], None] | None = None) -> dict:
    """Fine-tune and return {"done", "output", "best_val_loss", "step"}; `output` is a loadable AR folder."""
    Path(config.output).mkdir(parents=True, exist_ok=True)
    log.info("config: %s", json.dumps(dataclasses.asdict(config)))
    return Trainer(config).train(on_step)


def parse_args(argv: list[str] | None = None) -> FinetuneConfig:
    d = FinetuneConfig.__dataclass_fields__
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # models and data
    p.add_argument("--dlm", required=True, help="local folder of the frozen DLM (Dream layout or any Qwen2/Qwen3)")
    p.add_argument("--ar", required=True, help="local folder of the AR executor to start from (Qwen3 layout)")
    p.add_argument("--data", action="append", required=True,
                   help="repeatable: instruction records (a .jsonl or .parquet file, or a folder of them such as "
                        "Ling-Coder-SFT's data/), a folder or file of source code, or 'stdlib' (the training split "
                        "of the Python standard library, less its dev files)")
    p.add_argument("--output", required=True, help="folder for the best AR (HF folder), checkpoints/ and metrics.jsonl")
    p.add_argument("--block-size", type=int, default=4, help="B, tokens per AR block (paper: 2, 4 or 8)")
    # masking schedule
    p.add_argument("--t-min", type=float, default=d["t_min"].default, help="t ~ U(t_min, t_max) per sample")
    p.add_argument("--t-max", type=float, default=d["t_max"].default, help="upper end of t")
    p.add_argument("--eps", type=float, default=d["eps"].default, help="block mask probability p = (1 - eps) t + eps")
    p.add_argument("--commit-prob", type=float, default=d["commit_prob"].default,
                   help="share of positions inside a masked block left visible as committed tokens (0 = whole blocks masked, the paper)")
    p.add_argument("--frontier-share", type=float, default=d["frontier_share"].default,
                   help="share of samples masked as left-to-right decoding (scope 1) meets them: the blocks "
                        "before a random frontier visible, it and all after it masked, only it trained (0 = the paper)")
    # data shape
    p.add_argument("--instruction-field", default=d["instruction_field"].default, help="JSONL field of the instruction")
    p.add_argument("--response-field", default=d["response_field"].default, help="JSONL field of the response")
    p.add_argument("--messages-field", default=d["messages_field"].default,
                   help="field of a chat message list (used when present; roles user/assistant or HUMAN/ASSISTANT)")
    p.add_argument("--max-length", type=int, default=d["max_length"].default, help="tokens of DLM context per sample")
    p.add_argument("--max-response", type=int, default=d["max_response"].default, help="response tokens kept (EOS included; a longer response is cut without EOS)")
    p.add_argument("--budget", type=int, default=d["budget"].default, help="source spans: masked region = middle + EOS padding up to this many tokens")
    p.add_argument("--max-middle", type=int, default=d["max_middle"].default, help="source spans: longest middle in tokens")
    p.add_argument("--val-batch-size", type=int, default=d["val_batch_size"].default,
                   help="validation items per forward pass (no gradients: larger than --batch-size fits)")
    p.add_argument("--data-cache", default=d["data_cache"].default,
                   help="folder of tokenised instruction data, reused by every run on the same files and tokenizer "
                        "(empty = OUTPUT/data-cache; share one between the B = 2/4/8 runs)")
    p.add_argument("--val-samples", type=int, default=d["val_samples"].default, help="validation items held out, at most a tenth of the data (0 = no validation: the last step is kept)")
    # optimisation
    p.add_argument("--lr", type=float, default=d["lr"].default, help="peak learning rate (AdamW)")
    p.add_argument("--warmup-ratio", type=float, default=d["warmup_ratio"].default, help="share of max_steps spent warming up linearly")
    p.add_argument("--max-grad-norm", type=float, default=d["max_grad_norm"].default, help="gradient clipping norm")
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"].default, help="AdamW weight decay (0 = off)")
    p.add_argument("--batch-size", type=int, default=d["batch_size"].default, help="sequences per micro-batch per process")
    p.add_argument("--grad-accum", type=int, default=d["grad_accum"].default, help="micro-batches per optimizer step")
    p.add_argument("--max-steps", type=int, default=d["max_steps"].default, help="optimizer steps; the cosine ends here")
    p.add_argument("--max-minutes", type=float, default=d["max_minutes"].default, help="stop cleanly after this wall time (0 = no limit)")
    # bookkeeping
    p.add_argument("--val-every", type=int, default=d["val_every"].default, help="steps between validations (best kept)")
    p.add_argument("--save-every", type=int, default=d["save_every"].default, help="steps between resumable checkpoints")
    p.add_argument("--no-resume", dest="resume", action="store_false", help="ignore checkpoints in --output and start over")
    p.add_argument("--json-progress", action="store_true", help="print one JSON object per step on stdout (for the language server)")
    p.add_argument("--device", default=d["device"].default, help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--dtype", default=d["dtype"].default, choices=("auto", "float32", "bfloat16", "float16"),
                   help="the frozen DLM's dtype: auto (bf16 on CUDA, the checkpoint's own on CPU), float32, bfloat16, "
                        "float16 (the AR always trains in float32, with bf16 autocast on CUDA)")
    p.add_argument("--gradient-checkpointing", default=d["gradient_checkpointing"].default, choices=("auto", "on", "off"),
                   help="auto = on CUDA only")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow the checkpoints' own Python code (off: Dream loads as Qwen2 without it)")
    p.add_argument("--threads", type=int, default=d["threads"].default, help="torch CPU threads (0 = torch's default)")
    # LoRA
    p.add_argument("--boundary-tokens", type=_names, default=d["boundary_tokens"].default,
                   help="OPEN,CLOSE: the tokens around the soft block (unset = the AR's codila_boundary_tokens, "
                        "else <think>,</think>); written into the output's config.json")
    p.add_argument("--executor-layers", type=int, default=d["executor_layers"].default,
                   help="train and ship only the AR's first K layers (0 = all): a shallower, faster executor")
    p.add_argument("--no-token-healing", dest="token_healing", action="store_false",
                   help="cut source spans at the cursor as they are (default: laid out as token healing does)")
    p.add_argument("--lora-rank", type=int, default=d["lora_rank"].default,
                   help="LoRA rank R (0 = full fine-tune; else --output is a peft adapter folder over --ar)")
    p.add_argument("--lora-alpha", type=float, default=d["lora_alpha"].default, help="LoRA alpha (unset = 2 x rank)")
    p.add_argument("--lora-dropout", type=float, default=d["lora_dropout"].default, help="dropout on the LoRA input (0 = none)")
    p.add_argument("--lora-targets", type=_names, default=d["lora_targets"].default,
                   help="comma-separated module names the adapter wraps (default: every linear projection of "
                        "attention and MLP, " + ",".join(LORA_TARGETS) + "; 'all-linear' = peft's every linear layer)")
    p.add_argument("--lora-train-tokens", type=_names, default=d["lora_train_tokens"].default,
                   help="comma-separated tokens whose embedding rows train with the adapter ('boundary' = the AR's "
                        "two boundary tokens, the default; 'none' = no row)")
    p.add_argument("--seed", type=int, default=d["seed"].default, help="seeds the data order, spans and masks")
    args = vars(p.parse_args(argv))
    args["data"] = tuple(args["data"])
    return FinetuneConfig(**args)


def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("give at least one name")
    return names


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    try:
        config = parse_args(argv)
    except ValueError as err:
        sys.exit(f"training.finetune: {err}")
    finetune(config)


if __name__ == "__main__":
    main()
