"""Shared pytest setup.

The test tensors are tiny: intra-op threading only adds synchronisation overhead, which on a
small, busy machine makes elementwise ops up to ~100x slower. One thread keeps the suite fast and
its timings predictable.
"""

import torch

torch.set_num_threads(1)
