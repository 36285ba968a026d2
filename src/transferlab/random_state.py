"""A library call leaves its caller's random state as it found it.

`fit` and the advisor seed torch's global generator (the model's initial heads, the probes, and every
training step's dropout and mixing, so that a resumed run repeats the uninterrupted one), and a user who
drew from that generator before the call must draw the same numbers after it as without the call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def callers_random_state() -> Iterator[None]:
    """Seed torch's global generators freely within; on leaving, the CPU generator, and every CUDA device's
    that had been initialised on entering, are restored. A CUDA generator first initialised within has no
    earlier state to restore. Works as a decorator too."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        yield
