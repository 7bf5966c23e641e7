"""The approximate DLM KV cache: exact when nothing changed since the refresh, bounded in size, and the same
decode as no cache when refreshed every iteration."""

import pytest
import torch

from decoding import DecodeConfig, decode
from decoding.marginals import CachedForward, Canvas, FullForward


def _canvas(models, prefix_len, n, suffix_len, committed):
    """A canvas with some middle positions already committed. Returns (canvas, masked positions)."""
    mask = models.dlm.mask_id
    ids = [10 + i for i in range(prefix_len)] + [mask] * n + [60 + i for i in range(suffix_len)]
    canvas = Canvas(torch.tensor([ids]), start=prefix_len, length=n)
    for pos, tok in committed.items():
        canvas.middle[pos] = tok
    positions = (canvas.middle == mask).nonzero().squeeze(-1)
    return canvas, positions


@pytest.mark.parametrize("dual", [False, True])
@pytest.mark.parametrize("prefix_len", [0, 1, 6])
def test_cached_window_equals_the_full_pass_on_an_unchanged_canvas(tiny_models, dual, prefix_len):
    canvas, positions = _canvas(tiny_models, prefix_len, 8, 4, {1: 77, 5: 78})
    full = FullForward(tiny_models.dlm, eos_penalty=0.0)(canvas, positions, 0)
    stage = CachedForward(tiny_models.dlm, 0.0, canvas, dual=dual, refresh=1000)
    refreshed = stage(canvas, positions, 0)  # iteration 0: full pass, fills the cache
    cached = stage(canvas, positions, 1)  # iteration 1: only the window, on cached keys/values
    assert torch.equal(refreshed, full)
    assert torch.allclose(cached, full, atol=1e-5)  # same RoPE positions, same shift, same keys/values
    assert stage.forwards == 2


def test_the_cache_does_not_grow_across_iterations(tiny_models):
    canvas, positions = _canvas(tiny_models, 6, 8, 4, {})
    for dual, kept in ((False, 5), (True, 5 + 4)):  # [0, P - 1) and, for dual, the suffix
        stage = CachedForward(tiny_models.dlm, 0.0, canvas, dual=dual, refresh=1000)
        for it in range(4):
            stage(canvas, positions, it)
            assert stage.cache.get_seq_length() == kept


def test_stale_cache_is_an_approximation_refreshed_on_schedule(tiny_models):
    canvas, positions = _canvas(tiny_models, 6, 8, 4, {})
    stage = CachedForward(tiny_models.dlm, 0.0, canvas, dual=True, refresh=2)
    stage(canvas, positions, 0)
    canvas.middle[0] = 99  # commit a token: the cached prefix keys/values are now stale
    positions = positions[1:]
    full = FullForward(tiny_models.dlm, 0.0)(canvas, positions, 1)
    assert not torch.allclose(stage(canvas, positions, 1), full, atol=1e-6)  # approximate between refreshes
    assert torch.equal(stage(canvas, positions, 2), full)  # iteration 2 refreshes: exact again


@pytest.mark.parametrize("kv_cache", ["prefix", "dual"])
def test_refresh_every_iteration_decodes_exactly_like_no_cache(tiny_models, kv_cache):
    settings = dict(max_new_tokens=12, block_size=4, mode="static", eos_casting=False)
    reference = decode(tiny_models, [40, 41, 42], [50, 51], DecodeConfig(**settings))
    cached = decode(tiny_models, [40, 41, 42], [50, 51], DecodeConfig(kv_cache=kv_cache, cache_refresh=1, **settings))
    assert cached.middle_ids == reference.middle_ids
    assert cached.stats.dlm_forwards == reference.stats.dlm_forwards
