"""Train the executor of a causal-context DLM (the default model's): CoDiLA fine-tuning of a shallow slice of the
base on the DLM's own marginals.

    python -m training.executor --output ~/.cache/codila-lsp/runs/executor --max-minutes 30
    python -m training.executor --output RUN                 # a killed run goes on from its last checkpoint
    python -m training.executor --output RUN --export decoding/default_model/ar

Every flag, its default and range: docs/training.md (training.config's ExecutorConfig, held by tests).

The executor is the base's first `layers` decoder layers with its embedding, final norm and LM head, shared
tensor for tensor with the DLM (decoding.models.base_slice), plus a LoRA adapter of its own on every projection
of those layers; only the adapter trains. It reads exactly what decoding.fim_codila gives it: per sample (an
editor-shaped cut, training.draft's Samples), one no-gradient pass of the base over context + true middle
(causal, adapter off: row 0 of the block at each frontier j, the base's own logits) and one pass of the drafting
adapter over `blocks` blocks of B - 1 masks at random frontiers (rows 1..B-1). The executor is teacher-forced on
the block's true tokens from [E(open), E(middle[j]), e_2..e_B, E(close)] (decoding.fim_codila.executor_inputs:
the frontier token is given, as the decoder gives it the base's) and learns cross-entropy on the B - 1 tokens
behind the frontier (training.finetune_recipe.ar_block_loss).

Validation every `eval_every` steps on fixed dev samples, one block each at inference's conditions (the frontier
token the base's argmax, the executor greedy): the executor's token accuracy and block exact match on the B - 1
positions against the true tokens, beside the argmax of the marginals (method dlm: what the drafts alone give),
and the frontier's accuracy (the base's, the same for both). The executor helps where it beats the drafts.
State and export: training.lora_run (checkpoint.pt, log.jsonl; --no-resume refuses an existing checkpoint).
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict
from pathlib import Path

import torch

from training.config import LORA_TARGETS, ExecutorConfig
from training.draft import Sample, context_pass, draft_pass, training_data
from training.lora_run import load_adapter, run, start, training_note, write_adapter

log = logging.getLogger("training.executor")


# ----------------------------------------------------------------------------------------------------------
# The models: the frozen DLM and the executor slice of its base

def dlm_folder(config: ExecutorConfig) -> Path:
    from decoding.models import default_model_dir

    return Path(config.dlm).expanduser() if config.dlm is not None else default_model_dir() / "dlm"


def load(config: ExecutorConfig):
    """The frozen causal-context DLM and a fresh executor over its base, as a ModelPair (decoding.models)."""
    from peft import LoraConfig, get_peft_model

    from decoding.models import ModelPair, as_executor, base_slice, load_dlm, pair_alignment

    folder = dlm_folder(config)
    dlm = load_dlm(folder, device="cpu", int8_ok=False)  # the slice shares the base's float weights
    if dlm.fim is None or not dlm.fim.drafts:
        raise SystemExit(f"{folder} is not a causal-context DLM with a drafting adapter (codila_dlm_layout 'fim')")
    sliced = base_slice(dlm.model, config.layers, "--layers")
    spec = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                      target_modules=list(LORA_TARGETS))
    model = get_peft_model(sliced, spec)  # the slice's own adapter: the DLM's modules are not touched
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    ar = as_executor(model, dlm.tokenizer, folder, tuple(config.boundary_tokens))
    return ModelPair(dlm, ar, pair_alignment(dlm, ar))


# ----------------------------------------------------------------------------------------------------------
# One sample: the marginals the decoder would see, the executor teacher-forced on the truth

def block_batch(pair, sample: Sample, B: int, blocks: int, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """The B marginals and the true tokens of `blocks` blocks at random frontiers j of one sample.

    Returns rows (n, B, V): row 0 the base's logits at the frontier, row k >= 1 the draft predicting
    frontier + k (decoding.fim_codila.block_rows, in one pass for all n); targets (n, B) = middle[j:j + B].
    """
    fim = pair.dlm.fim
    ctx, M = len(sample.context), len(sample.middle)
    js = [rng.randrange(0, M - B + 1) for _ in range(blocks)]
    with torch.no_grad():
        base_logits, kv, cached = context_pass(fim.model, sample)  # (M, V): row i predicts middle[i]
        drafts = draft_pass(fim.model, kv, cached, [ctx + j for j in js], B - 1, fim.draft_id)  # (n*(B-1), V)
    rows = torch.cat([base_logits[js][:, None], drafts.view(blocks, B - 1, -1)], dim=1)  # (n, B, V)
    targets = torch.tensor([sample.middle[j:j + B] for j in js])  # (n, B)
    return rows, targets


def executor_loss(pair, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the executor on the B - 1 true tokens behind each frontier (teacher forcing).

    rows (n, B, V), targets (n, B). Inputs: [E(open), E(y_1), e_2..e_B, E(close), E(y_1)..E(y_B)]."""
    from decoding.fim_codila import executor_inputs
    from training.finetune_recipe import ar_block_loss

    E = pair.ar.embeddings
    prompt = executor_inputs(pair, rows, targets[:, 0])  # (n, B + 2, H); the frontier token is given
    embeds = torch.cat([prompt, E[targets]], dim=1)  # (n, 2B + 2, H)
    trained = targets.clone()
    trained[:, 0] = -100  # the frontier token is the base's at inference, never the executor's
    return ar_block_loss(pair.ar.model, embeds, trained)[0]


def evaluate(pair, val: list[Sample], B: int) -> dict:
    """Executor vs the drafts' argmax on the B - 1 positions behind the frontier, at inference's conditions."""
    from decoding.executor import TorchBlockExecutor, ar_allowed_ids
    from decoding.fim_codila import executor_inputs
    from decoding.sampling import make_sampler

    rng = random.Random(1234)
    dlm, model = pair.dlm, pair.ar.model
    executor = TorchBlockExecutor(model, ar_allowed_ids(pair), make_sampler(0.0, 1.0), dlm.eos_id,
                                  stop_ids=dlm.stop_ids)
    model.eval()
    frontier_ok, exec_ok, dlm_ok = [], [], []
    with torch.no_grad():
        for sample in val:
            rows, targets = block_batch(pair, sample, B, 1, rng)  # (1, B, V), (1, B)
            frontier = rows[:, 0].argmax(-1)  # (1,) the base's token, as the decoder fixes it
            forced = torch.full_like(targets, -1)
            forced[:, 0] = frontier
            tokens, _ = executor.decode_blocks(executor_inputs(pair, rows, frontier), forced, None)  # (1, B)
            frontier_ok.append(frontier == targets[:, 0])
            exec_ok.append(tokens[:, 1:] == targets[:, 1:])  # (1, B - 1)
            dlm_ok.append(rows[:, 1:].argmax(-1) == targets[:, 1:])
    model.train()
    ex, dl = torch.cat(exec_ok).float(), torch.cat(dlm_ok).float()  # (n, B - 1)
    return {"frontier_acc": round(float(torch.cat(frontier_ok).float().mean()), 4),
            "executor_token_acc": round(float(ex.mean()), 4),
            "executor_block_exact": round(float(ex.min(1).values.mean()), 4),  # every position behind the frontier
            "dlm_token_acc": round(float(dl.mean()), 4), "dlm_block_exact": round(float(dl.min(1).values.mean()), 4)}


# ----------------------------------------------------------------------------------------------------------
# The run and its export

def train(config: ExecutorConfig) -> None:
    torch.set_num_threads(config.threads)
    out = Path(config.output).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    pair = load(config)
    tokenizer, fim = pair.dlm.tokenizer, pair.dlm.fim
    samples, val = training_data(config, tokenizer, fim.fim_ids)
    model = pair.ar.model
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    rng = random.Random(config.seed)
    begun = start(out / "checkpoint.pt", model, opt, rng, config.resume)
    if begun[0]:
        log.info("resumed at step %d (%.1f minutes trained)", *begun)
    log.info("config %s", json.dumps(asdict(config)))

    def one_sample(rng: random.Random) -> tuple[torch.Tensor, dict[str, float]]:
        rows, targets = block_batch(pair, samples.draw(rng), config.block_size, config.blocks, rng)
        return executor_loss(pair, rows, targets), {}

    step, minutes = run(config, out, model, params, opt, rng, begun, one_sample,
                        lambda: evaluate(pair, val, config.block_size))
    log.info("stopped at step %d, %.1f minutes", step, minutes)


def base_name(folder: Path) -> str:
    """The DLM adapter's base as its adapter_config.json names it (a relative folder made absolute): the
    executor names the same base, so decoding.models shares it."""
    from decoding.base import is_model_reference
    from decoding.models import ADAPTER_CONFIG, resolve_base

    name = json.loads((folder / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]
    return name if is_model_reference(name) else str(resolve_base(name, folder))


def export_run(config: ExecutorConfig, target: Path) -> Path:
    """The executor folder decoding.models loads over the DLM's base (`codila_executor_layers` & co)."""
    saved, note = training_note(Path(config.output).expanduser() / "checkpoint.pt", "executor_token_acc")
    run_config = ExecutorConfig(**{**saved["config"], "boundary_tokens": tuple(saved["config"]["boundary_tokens"]),
                                   "export": None})
    pair = load(run_config)
    load_adapter(pair.ar.model, saved)
    keys = {"codila_executor_layers": run_config.layers, "codila_block_size": run_config.block_size,
            "codila_boundary_tokens": list(run_config.boundary_tokens), "codila_training": note}
    return write_adapter(pair.ar.model, target, base_name(dlm_folder(run_config)), keys)


def main(argv: list[str] | None = None) -> None:
    config = ExecutorConfig.command_line("python -m training.executor", __doc__, argv)
    if config.export:
        print(export_run(config, Path(config.export)))
        return
    train(config)


if __name__ == "__main__":
    main()
