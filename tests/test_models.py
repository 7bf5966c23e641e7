"""Loading: the tiny pair loads through the same code path as the real checkpoints."""

import torch

from decoding.models import dlm_logits


def test_tiny_pair_loads_with_shared_vocabulary(tiny_models):
    pair = tiny_models
    tok = pair.dlm.tokenizer
    assert pair.dlm.logit_shift is True
    assert pair.dlm.mask_id == tok.convert_tokens_to_ids("<|mask|>")
    assert pair.ar.open_id == tok.convert_tokens_to_ids("<think>")
    # one tokenizer: every id is shared except the mask
    assert not pair.alignment.shared[pair.dlm.mask_id]
    assert int(pair.alignment.shared.sum()) == pair.dlm.vocab_size - 1


def test_dlm_forward_is_bidirectional(tiny_models):
    dlm = tiny_models.dlm
    x = torch.tensor([[5, 6, 7, 8, 9, 10]])
    y = x.clone()
    y[0, -1] = 11
    with torch.no_grad():
        a, b = dlm_logits(dlm, x), dlm_logits(dlm, y)
    # position 1 is predicted from the output at position 0, which sees the changed last token
    assert not torch.allclose(a[0, 1], b[0, 1])
