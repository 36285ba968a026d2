"""AdaBN for fine-tuned pretrained networks: every BatchNorm layer normalises the target as it did the source.

AdaBN (Li et al., 2016) swaps each BatchNorm layer's source statistics for the target's, so that every layer
sees target activations standardised as it saw the source's. The paper's networks trained BatchNorm in train
mode, where the running statistics *are* the source's. transferlab's pretrained strategies keep BatchNorm in
eval mode, with ImageNet's statistics, and the source's activations reach the head standardised by those,
not by their own. Measured on benchmarks/adaptation.py's no-shift control (Fashion-MNIST, 82.1% without
adaptation): swapping in the target's statistics dropped it to 16.8%; taking the source's statistics before
training and the target's after it, to 68.1%.

So the statistics are aligned, not swapped. For each layer with running mean μ and variance σ² (ImageNet's),
and its input's moments on the source (μ_s, σ_s) and on the target (μ_t, σ_t), a target input moved onto the
source's moments, x' = (x − μ_t) σ_s / σ_t + μ_s, is normalised by the old statistics; the new ones do that
in one step. Without a shift nothing changes.

Each layer's target moments depend on the layers before it, once those are aligned. They are measured in one
forward pass over one batch of target images, in which every layer's input is moved onto the source's
moments by that batch's own moments, before the next layer sees it. One batch, not many: standardising batch
by batch moved the deep layers' statistics by up to 30% on a target identical to the source (batches of 32
give noisy moments where the feature maps are 1 × 1), and re-running passes until the layers agree diverged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from transferlab.model import TransferModel

BatchNorm = nn.modules.batchnorm._BatchNorm
Moments = tuple[torch.Tensor, torch.Tensor]
CHUNK = 64  # source images per forward pass: their moments are recorded, so any batching gives the same
IMAGES = 256  # per domain: the one target batch, and as many source images
DEAD = 1e-2  # a channel whose inputs deviate less than this in either domain is constant: nothing to align


def _moments(x: torch.Tensor, eps: float) -> Moments:
    """Per-channel mean and standard deviation (with BatchNorm's eps) over every other dimension."""
    dims = [d for d in range(x.dim()) if d != 1]
    x = x.double()
    return x.mean(dims), x.var(dims, unbiased=False).add(eps).sqrt()


def _alignment(source: Moments, target: Moments) -> tuple[torch.Tensor, torch.Tensor]:
    """(shift, scale) per channel that give target inputs the source's mean and deviation; a dead channel is
    left as it is (its ratio of deviations would be noise)."""
    (source_mean, source_std), (target_mean, target_std) = source, target
    alive = (source_std > DEAD) & (target_std > DEAD)
    scale = torch.where(alive, source_std / target_std, torch.ones_like(source_std))
    shift = torch.where(alive, source_mean - target_mean * scale, torch.zeros_like(source_mean))
    return shift, scale


@contextmanager
def _hooks(norms: list[BatchNorm], hook: Callable[..., object]) -> Iterator[None]:
    handles = [norm.register_forward_pre_hook(hook) for norm in norms]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def align_batchnorm(model: TransferModel, source: torch.Tensor, target: torch.Tensor) -> None:
    """Re-estimate every BatchNorm layer's running statistics of `model` so that the `target` images are
    normalised as the `source` images were: both normalised image batches [N, 3, S, S] (IMAGES of each is
    plenty), fed from the first stage."""
    norms = [m for m in model.modules() if isinstance(m, BatchNorm)]
    if not norms:
        return
    model.eval()
    chunks: dict[nn.Module, list[tuple[int, Moments]]] = {norm: [] for norm in norms}

    def record(norm: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        chunks[norm].append((len(inputs[0]), _moments(inputs[0], norm.eps)))  # type: ignore[arg-type]

    with _hooks(norms, record):
        for start in range(0, len(source), CHUNK):
            model.outputs_from(source[start : start + CHUNK], 0)
    wanted: dict[nn.Module, Moments] = {norm: _pooled(chunks[norm]) for norm in norms}
    found: dict[nn.Module, Moments] = {}

    def aligned(norm: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
        x = inputs[0]
        found[norm] = _moments(x, norm.eps)  # type: ignore[arg-type]
        shape = [1, -1] + [1] * (x.dim() - 2)
        shift, scale = (v.to(x.dtype).view(shape) for v in _alignment(wanted[norm], found[norm]))
        return (x * scale + shift,)

    with _hooks(norms, aligned):
        model.outputs_from(target, 0)
    for norm in norms:
        assert norm.running_mean is not None and norm.running_var is not None, "BatchNorm tracks statistics"
        shift, scale = _alignment(wanted[norm], found[norm])
        # x normalised by the new statistics equals x * scale + shift normalised by the old ones.
        norm.running_mean.copy_((norm.running_mean.double() - shift) / scale)
        var = (norm.running_var.double() + norm.eps) / scale.pow(2) - norm.eps
        norm.running_var.copy_(var.clamp(min=0))


def _pooled(parts: list[tuple[int, Moments]]) -> Moments:
    """The moments of several chunks' samples together, from each chunk's size and moments."""
    weights = torch.tensor([count for count, _ in parts], dtype=torch.float64)
    weights = (weights / weights.sum()).unsqueeze(1)
    mean = (torch.stack([m for _, (m, _) in parts]) * weights).sum(0)
    squares = (torch.stack([s.pow(2) + m.pow(2) for _, (m, s) in parts]) * weights).sum(0)
    return mean, (squares - mean.pow(2)).clamp(min=0).sqrt()
