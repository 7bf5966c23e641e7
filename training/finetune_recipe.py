"""The CoDiLA fine-tuning recipe, one batch: block masking, the AR's soft inputs from the frozen DLM, the block loss.

Per sample: the response is cut into contiguous blocks of B tokens; t ~ U(t_min, t_max) and every block is
masked with p = (1 - eps) t + eps, at least one block always. The frozen DLM runs on the masked sequence; for
each masked block the AR's input is [E(<think>), e_1..e_B, E(</think>)] built from the DLM's marginals by
decoding.soft (the very code inference uses), followed by the block's true tokens (teacher forcing); the AR
learns cross-entropy on the B true tokens. training.finetune_trainer runs these in its loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from decoding.models import ModelPair, dlm_logits_at, fold_stop_tokens
from decoding.soft import align_probs, block_inputs
from training.config import FinetuneConfig
from training.data import Example


def collate(examples: list[Example], eos_id: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Right-pad with EOS (the unused tail of a canvas is EOS). -> ids (N, L), [(start, length)] per row."""
    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), eos_id, dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, : len(e.ids)] = torch.tensor(e.ids)
    return ids, [(e.start, e.length) for e in examples]


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
    """Mean CE of the AR on each block's true tokens (a target of -100 is not trained: cross_entropy's
    ignore_index). -> (loss, number of target tokens).

    Position B + 1 (`</think>`) predicts y_1, position B + 1 + k predicts y_{k+1}; the last input position
    (y_B) predicts nothing, and the LM head runs on the last B + 1 positions only.
    """
    B = targets.shape[1]
    logits = model(inputs_embeds=embeds.to(_dtype(model)), use_cache=False, logits_to_keep=B + 1).logits  # (nb, B + 1, V)
    pred = logits[:, :B].float()  # (nb, B, V): outputs at positions B + 1 .. 2B
    return F.cross_entropy(pred.reshape(-1, pred.shape[-1]), targets.reshape(-1)), targets.numel()


def _dtype(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype
