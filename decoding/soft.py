"""The DLM -> AR interface: vocabulary alignment and soft-conditioned block inputs.

For block position j with DLM marginal pi_j, the AR input embedding is the expectation of the AR's own
token embeddings, e_j = sum_v pi_j[v] * E_ar[v]: one matmul, probs @ E_ar. Used by inference (decoding)
and by fine-tuning (training) alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class VocabAlignment:
    """Which DLM ids mean the same token for the AR.

    shared: (V_dlm,) bool, True where DLM id v is token v for the AR too (ids are never remapped).
    ar_vocab: V_ar, rows of the AR embedding matrix.
    """

    shared: torch.Tensor
    ar_vocab: int

    @classmethod
    def from_tokenizers(cls, dlm_tok, ar_tok, dlm_vocab: int, ar_vocab: int, exclude: tuple[int, ...] = ()):
        """Ids below both vocab sizes whose token strings agree, minus `exclude` (mask, bos).

        For Dream-Coder + Qwen3 this is ids 0..151664: 151665/151666 are Dream's <|beginoftext|>/<|mask|>
        but Qwen3's <tool_response>/</tool_response>.
        """
        n = min(dlm_vocab, ar_vocab, len(dlm_tok), len(ar_tok))
        ids = list(range(n))
        same = torch.tensor(
            [a is not None and a == b for a, b in zip(dlm_tok.convert_ids_to_tokens(ids), ar_tok.convert_ids_to_tokens(ids))],
            dtype=torch.bool,
        )
        shared = torch.zeros(dlm_vocab, dtype=torch.bool)
        shared[:n] = same
        for tid in exclude:
            if 0 <= tid < dlm_vocab:
                shared[tid] = False
        return cls(shared, ar_vocab)

    @classmethod
    def identity(cls, vocab: int, exclude: tuple[int, ...] = ()) -> "VocabAlignment":
        """Both models use one tokenizer: every id is shared except `exclude`."""
        shared = torch.ones(vocab, dtype=torch.bool)
        shared[list(exclude)] = False
        return cls(shared, vocab)

    def to(self, device: torch.device | str) -> "VocabAlignment":
        return VocabAlignment(self.shared.to(device), self.ar_vocab)


def align_probs(probs: torch.Tensor, alignment: VocabAlignment) -> torch.Tensor:
    """Move DLM marginals onto the AR vocabulary. probs: (..., V_dlm) -> (..., V_ar).

    Probability on ids the AR does not share is dropped and the rest renormalised; ids keep their meaning.
    """
    kept = probs * alignment.shared.to(probs.dtype)  # (..., V_dlm), zero where not shared
    kept = kept / kept.sum(-1, keepdim=True).clamp_min(torch.finfo(probs.dtype).tiny)
    n = min(kept.shape[-1], alignment.ar_vocab)
    out = kept.new_zeros(*kept.shape[:-1], alignment.ar_vocab)  # (..., V_ar)
    out[..., :n] = kept[..., :n]
    return out


def soft_embeddings(probs: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """Expected AR embedding under each marginal. probs: (..., V_ar), embeddings: (V_ar, H) -> (..., H)."""
    # e_j = sum_v pi_j[v] * E_ar[v]
    return probs.to(embeddings.dtype) @ embeddings


def block_inputs(
    probs: torch.Tensor,
    committed: torch.Tensor,
    embeddings: torch.Tensor,
    open_id: int,
    close_id: int,
    eos_id: int,
    hard: bool = False,
) -> torch.Tensor:
    """AR prompt embeddings for a batch of blocks: [E(open), e_1..e_B, E(close)].

    probs:     (nb, B, V_ar) aligned DLM marginals of each block position.
    committed: (nb, B) token id where the position is already committed, else -1.
    hard:      top-1 ablation: use the embedding of each position's argmax instead of the mixture.
    Returns (nb, B + 2, H).

    A committed position is one-hot, so its e_j is exactly that token's embedding; a position whose DLM
    argmax is EOS gets the hard EOS embedding (a clear stop signal rather than a blend).
    """
    nb, B, _ = probs.shape
    top = probs.argmax(-1)  # (nb, B)
    if hard:
        mixed = embeddings[top]  # (nb, B, H)
    else:
        mixed = soft_embeddings(probs, embeddings)  # (nb, B, H)
    hard_ids = torch.where(committed >= 0, committed, torch.full_like(committed, eos_id))  # (nb, B)
    use_hard = (committed >= 0) | (top == eos_id)  # (nb, B)
    e = torch.where(use_hard.unsqueeze(-1), embeddings[hard_ids], mixed)  # (nb, B, H)
    ends = embeddings[torch.tensor([open_id, close_id], device=embeddings.device)]  # (2, H)
    return torch.cat([ends[0].expand(nb, 1, -1), e, ends[1].expand(nb, 1, -1)], dim=1)  # (nb, B + 2, H)
