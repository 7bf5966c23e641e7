"""The run the LoRA trainers of the default model share (training.draft, training.executor): a resumable loop of
accumulated optimiser steps, and the adapter folder it exports.

    start(ckpt, model, opt, rng, resume) -> (step, minutes)   the checkpoint's, or (0, 0.0) for a new run
    run(config, out, model, params, opt, rng, begun, one_sample, evaluate)
    write_adapter(model, out, base, config_json) -> out

State lives in the run folder: `checkpoint.pt` (adapter, optimiser, step, minutes, random state; written
atomically every `save_every` steps and at the end) and `log.jsonl` (one line per step, validations included).
A killed run goes on from its last checkpoint; `--no-resume` refuses to overwrite one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch


def adapter_state(model) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def save_checkpoint(path: Path, model, opt, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"adapter": adapter_state(model), "opt": opt.state_dict(), **state}, tmp)
    os.replace(tmp, path)  # atomic: a run killed while saving keeps its previous checkpoint


def load_adapter(model, saved: dict) -> None:
    """The checkpoint's adapter into `model`, trainable weights kept in float32."""
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, saved["adapter"])
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()


def start(ckpt: Path, model, opt, rng: random.Random, resume: bool) -> tuple[int, float]:
    """(step, minutes trained) to go on from: the checkpoint's (model, optimiser and rng restored), or 0 for a
    new run. SystemExit when a checkpoint exists and `resume` is off: a run never overwrites another's."""
    if resume and ckpt.exists():
        saved = torch.load(ckpt, weights_only=False)
        load_adapter(model, saved)
        opt.load_state_dict(saved["opt"])
        rng.setstate(saved["rng"])
        return saved["step"], saved["minutes"]
    if ckpt.exists():
        raise SystemExit(f"{ckpt} exists and --no-resume was given: choose another --output (a run never "
                         "overwrites another's checkpoint), or leave out --no-resume to go on")
    return 0, 0.0


def run(config, out: Path, model, params: list[torch.Tensor], opt, rng: random.Random, begun: tuple[int, float],
        one_sample: Callable[[random.Random], tuple[torch.Tensor, dict[str, float]]],
        evaluate: Callable[[], dict[str, Any]]) -> tuple[int, float]:
    """Train from `begun` (step, minutes) until config.max_steps or config.max_minutes of this invocation.

    one_sample(rng) -> (loss of one sample, its metrics): batch_size of them are accumulated per step, linear
    warmup over warmup_steps, gradients clipped at max_grad_norm. evaluate() -> validation metrics, logged at
    step 0 and every eval_every steps.
    """
    step, minutes_before = begun
    ckpt = out / "checkpoint.pt"
    started = time.perf_counter()

    def save(minutes: float) -> None:
        save_checkpoint(ckpt, model, opt, {"step": step, "minutes": minutes, "rng": rng.getstate(),
                                           "config": asdict(config)})

    model.train()
    with open(out / "log.jsonl", "a") as logf:
        if step == 0:
            logf.write(json.dumps({"step": 0, "minutes": 0.0, **evaluate()}) + "\n")
            logf.flush()
        while step < config.max_steps and (time.perf_counter() - started) / 60 < config.max_minutes:
            lr = config.lr * min(1.0, (step + 1) / max(1, config.warmup_steps))
            for g in opt.param_groups:
                g["lr"] = lr
            total, metrics = 0.0, {}
            for _ in range(config.batch_size):
                loss, extra = one_sample(rng)
                (loss / config.batch_size).backward()
                total += float(loss.detach()) / config.batch_size
                for key, value in extra.items():
                    metrics[key] = metrics.get(key, 0.0) + value / config.batch_size
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            minutes = minutes_before + (time.perf_counter() - started) / 60
            record = {"step": step, "minutes": round(minutes, 2), "loss": round(total, 4),
                      **{k: round(v, 3) for k, v in metrics.items()}}
            if step % config.eval_every == 0:
                record.update(evaluate())
            logf.write(json.dumps(record) + "\n")
            logf.flush()
            if step % config.save_every == 0:
                save(minutes)
    minutes = minutes_before + (time.perf_counter() - started) / 60
    save(minutes)
    return step, minutes


def training_note(ckpt: Path, eval_key: str) -> tuple[dict, dict]:
    """(the checkpoint, the note an export's config.json carries: steps, minutes, samples, last validation)."""
    saved = torch.load(ckpt, weights_only=False)
    curve = [json.loads(line) for line in (ckpt.parent / "log.jsonl").read_text().splitlines() if line.strip()]
    evals = [r for r in curve if eval_key in r]
    run_config = saved["config"]
    note = {"steps": saved["step"], "minutes": round(saved["minutes"], 1), "device": "cpu (2 cores)",
            "samples": saved["step"] * run_config.get("batch_size", run_config.get("batch", 0)),
            "last_eval": evals[-1] if evals else None, "run": run_config}
    return saved, note


def write_adapter(model, out: Path, base: str, config_json: dict) -> Path:
    """The adapter folder decoding.models loads: bf16 LoRA weights, adapter_config.json naming `base`, and
    config.json with the CoDiLA keys. Written beside `out` and moved in place at the end."""
    from safetensors.torch import save_file

    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    state = {k: v.to(torch.bfloat16).contiguous() for k, v in adapter_state(model).items()}
    save_file(state, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
    spec = model.peft_config["default"].to_dict()
    spec["base_model_name_or_path"] = base
    spec["inference_mode"] = True
    spec = {k: (sorted(v) if isinstance(v, set) else v) for k, v in spec.items()}
    (tmp / "adapter_config.json").write_text(json.dumps(spec, indent=2, sort_keys=True, default=str))
    (tmp / "config.json").write_text(json.dumps(config_json, indent=2, sort_keys=True))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out
