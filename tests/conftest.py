"""Shared fixtures. Tests run on CPU with tiny models built here; the torch thread count is kept low so the
suite behaves the same on CI's two cores."""

import torch

torch.set_num_threads(1)
