"""The paper's Theorem 3.3 example, end to end through decode().

Joint q over two positions: q(Roger, Roger) = 0.45 (the mode), q(Houston, You) = q(Houston, I) = 0.25,
q(Houston, They) = 0.05. Marginals: position 1 Houston 0.55 / Roger 0.45; position 2 Roger 0.45, You 0.25,
I 0.25, They 0.05. Committing both positions from the marginals independently gives (Houston, Roger), which
q never produces; top-1 conditioning shows the AR exactly that pair; soft conditioning lets an AR that knows
the joint recover its mode, (Roger, Roger).

The DLM here returns those marginals; the AR is a one-layer "model" whose weights are the joint: identity
embeddings (so a soft embedding IS the marginal) and a coherence table C, with C = 1 on the pairs q supports.
It decodes the block's mode autoregressively: first token by max-marginal, second by the conditional.
"""

from types import SimpleNamespace

import pytest
import torch
from transformers import Qwen3Config

from decoding import DecodeConfig, ModelPair, decode
from decoding.models import DiffusionLM, ExecutorLM, load_tokenizer
from decoding.soft import VocabAlignment

EOS, MASK, OPEN, CLOSE = 0, 1, 2, 3  # the tiny tokenizer's special ids
ROGER, HOUSTON, YOU, I, THEY = 10, 11, 12, 13, 14


class MarginalsDLM(torch.nn.Module):
    """Fixed logits per canvas position (no logit shift): table (L, V)."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table
        self.lm_head = torch.nn.Linear(1, table.shape[1], bias=False)

    @property
    def device(self):
        return self.table.device

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids, logits_to_keep=None, **kwargs):
        return SimpleNamespace(logits=self.table[logits_to_keep].unsqueeze(0))  # (1, M, V)


class JointAR(torch.nn.Module):
    """An AR executor for B = 2 whose weights implement the joint mode decoder.

    The input embedding is the identity, so the B + 2 prompt is [E(open), pi_1, pi_2, E(close)]. The history
    lives in the KV cache like any transformer's. Step 1: logits = log max_b pi_1[a] pi_2[b] C[a, b];
    step 2: logits = log pi_2[b] C[x_1, b].
    """

    def __init__(self, vocab: int, coherent: list[tuple[int, int]], eps: float = 1e-6):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, vocab)
        self.embed.weight.data = torch.eye(vocab)
        self.C = torch.full((vocab, vocab), eps)
        for a, b in coherent:
            self.C[a, b] = 1.0
        self.config = Qwen3Config(num_hidden_layers=1, vocab_size=vocab)

    @property
    def device(self):
        return self.C.device

    def get_input_embeddings(self):
        return self.embed

    def forward(self, inputs_embeds=None, input_ids=None, past_key_values=None, **kwargs):
        x = inputs_embeds if inputs_embeds is not None else self.embed(input_ids)  # (nb, T, V)
        history, _ = past_key_values.update(x.unsqueeze(1), x.unsqueeze(1), 0)  # (nb, 1, T_all, V)
        history = history[:, 0]
        pi1, pi2 = history[:, 1], history[:, 2]  # (nb, V) each
        joint = pi1[:, :, None] * pi2[:, None, :] * self.C  # (nb, V, V)
        if history.shape[1] == 4:  # after the prompt: first token by max-marginal
            scores = joint.max(-1).values  # (nb, V)
        else:  # second token, given the first
            first = history[:, 4].argmax(-1)  # (nb,)
            scores = pi2 * self.C[first]  # (nb, V)
        return SimpleNamespace(logits=scores.clamp_min(1e-30).log().unsqueeze(1))  # (nb, 1, V)


@pytest.fixture
def theorem_pair(tiny_model_dirs):
    tok = load_tokenizer(tiny_model_dirs[0])
    V = len(tok)
    pi = torch.zeros(2, V)
    pi[0, HOUSTON], pi[0, ROGER] = 0.55, 0.45
    pi[1, ROGER], pi[1, YOU], pi[1, I], pi[1, THEY] = 0.45, 0.25, 0.25, 0.05
    dlm = DiffusionLM(MarginalsDLM(pi.clamp_min(1e-30).log()), tok, MASK, EOS, logit_shift=False)
    ar = ExecutorLM(JointAR(V, [(ROGER, ROGER), (HOUSTON, YOU), (HOUSTON, I), (HOUSTON, THEY)]), tok, OPEN, CLOSE)
    return ModelPair(dlm, ar, VocabAlignment.identity(V, exclude=(MASK,)))


def _decode(pair, **settings):
    config = DecodeConfig(max_new_tokens=2, block_size=2, mode="static", ar_temperature=0.0, temperature=0.0,
                          eos_casting=False, **settings)
    return decode(pair, [], [], config).middle_ids


def test_independent_sampling_from_the_marginals_is_incoherent(theorem_pair):
    assert _decode(theorem_pair, method="dlm", tokens_per_step=2) == [HOUSTON, ROGER]  # q = 0


def test_top1_conditioning_loses_the_mode(theorem_pair):
    assert _decode(theorem_pair, method="codila-top1") == [HOUSTON, ROGER]


def test_soft_conditioning_recovers_the_joint_mode(theorem_pair):
    assert _decode(theorem_pair, method="codila") == [ROGER, ROGER]
