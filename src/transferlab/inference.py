"""Running a network without training it: in eval mode, each submodule's mode given back after, in batches of
INFERENCE_BATCH, with its BatchNorms folded into the convolutions they follow and TensorFlow's padding computed
inside the convolution."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import is_dataclass
from typing import Any, TypeGuard, TypeVar

import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame
from timm.layers.padding import get_same_padding
from torch import nn

from transferlab.domain_norm import DomainNorm

M = TypeVar("M", bound=nn.Module)

# Batch of every no-grad pass (feature cache, probes, evaluation). On this 2-core CPU, tf_efficientnet_lite0
# at 128 px in channels-last ran at 5.0 ms per image in batches of 32 and 6.0 ms in batches of 64: a smaller
# batch's activations stay in the CPU cache.
INFERENCE_BATCH = 32
# In bfloat16 (the reporting passes, evaluate.probabilities), batches of 64 ran 1.17x as fast as 32, and 96
# slower again (Lite0 at 96 px, 2,048 images, best of 3; benchmarks/README.md, "bfloat16's batch").
BFLOAT16_BATCH = 64


@contextmanager
def evaluating(module: M) -> Iterator[M]:
    """`module` in eval mode inside the block; after it, each submodule's mode as it was. Per submodule, not
    `train(was_training)`: a Strategy keeps frozen stages and pretrained BatchNorm in eval mode while the rest
    trains, and a blanket `train(True)` would set them training again."""
    modes = [(each, each.training) for each in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for each, training in modes:
            each.training = training


def without_batchnorm(module: M, method: str, *example: object) -> M:
    """A copy of `module`, in eval mode, in which every BatchNorm that normalises a convolution's output is
    folded into that convolution: w' = w·γ/σ, b' = (b − μ)·γ/σ + β. The function is the same, with one layer
    fewer per convolution (benchmarks/inference_speed.py).

    `module.<method>(*example)` is a pass on a small example (one image): which BatchNorm reads which
    convolution's output is read off that pass, not guessed from the order the layers were declared in, and
    the copy's outputs are checked against the original's on it (a mismatch gives back `module` itself, as
    does a pass in which no BatchNorm runs). BatchNorms kept per domain (DomainNorm) are left alone: one
    convolution feeds several of them. Folding Lite0 took about 100 ms, half a batch's pass: worth it from a
    few batches on. The copy's TensorFlow-padded convolutions pad inside the convolution (`_PaddedInside`).
    """
    if not any(isinstance(each, nn.BatchNorm2d) for each in module.modules()):
        return module  # nothing to fold (a vision transformer, say): no copy

    def run(each: nn.Module) -> object:
        return getattr(each, method)(*example)

    with torch.no_grad(), evaluating(module):
        pairs = convolution_batchnorm_pairs(module, run)
        if not pairs:  # no BatchNorm runs (only the heads after a cached prefix, say): the copy would cost more
            return module
        copies: dict[int, Any] = {}
        folded = deepcopy(module, copies).eval()
        for parent, name, convolution, norm in pairs:
            _fold(copies[id(convolution)], copies[id(norm)])
            # timm's BatchNormAct2d applies its dropout and activation after normalising; they stay.
            rest = [part for part in (getattr(norm, "drop", None), getattr(norm, "act", None)) if part is not None]
            setattr(copies[id(parent)], name, nn.Sequential(*(copies[id(part)] for part in rest)))
        for layer in folded.modules():
            if type(layer) is Conv2dSame:
                layer.__class__ = _PaddedInside
        if not same_outputs(run(module), run(folded)):
            return module
    return folded


class _PaddedInside(Conv2dSame):
    """timm's Conv2dSame, padded inside the convolution instead of by a copy of its input.

    TensorFlow's "same" padding is uneven at stride 2 (on an even size, a row below and none above, at kernel
    3), and a torch convolution pads evenly, so timm first copies the input into a padded tensor (F.pad).
    Here the convolution pads evenly, by the larger side rounded up onto TensorFlow's grid of window starts,
    and the outputs of the windows that start before TensorFlow's first are sliced off: the same sums, and
    Lite0's float32 passes 1.5x as fast. Not in training, where the slice's backward costs more than the copy
    (benchmarks/README.md, "TensorFlow's padding inside the convolution").
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding, keep = [], []
        sides = zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation, strict=True)
        for size, kernel, stride, dilation in sides:
            total = get_same_padding(size, kernel, stride, dilation)
            before = total // 2
            even = before + stride * math.ceil((total - 2 * before) / stride)  # >= the side after, on the grid
            first = (even - before) // stride
            padding.append(even)
            keep.append(slice(first, first + math.ceil(size / stride)))
        y = F.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)
        return y[..., keep[0], keep[1]]


def convolution_batchnorm_pairs(
    module: nn.Module, run: Callable[[nn.Module], object]
) -> list[tuple[nn.Module, str, nn.Conv2d, nn.BatchNorm2d]]:
    """(parent, attribute, convolution, BatchNorm) for each BatchNorm that ran once, on the output of a
    convolution that ran once and fed nothing else."""
    produced: dict[int, nn.Conv2d] = {}
    readers: dict[int, list[nn.Module]] = {}
    calls: dict[nn.Module, int] = {}
    kept: list[torch.Tensor] = []  # every tensor seen stays alive through the pass: no two share an id

    def seen(layer: nn.Module, inputs: tuple, output: object) -> None:
        calls[layer] = calls.get(layer, 0) + 1
        for tensor in inputs:
            if isinstance(tensor, torch.Tensor):
                readers.setdefault(id(tensor), []).append(layer)
                kept.append(tensor)
        if isinstance(layer, nn.Conv2d) and isinstance(output, torch.Tensor):
            produced[id(output)] = layer
            kept.append(output)

    # Leaves, and BatchNorms: timm's BatchNormAct2d holds its activation as a child.
    layers = [each for each in module.modules() if isinstance(each, nn.BatchNorm2d) or not list(each.children())]
    hooks = [layer.register_forward_hook(seen) for layer in layers]
    try:
        run(module)
    finally:
        for hook in hooks:
            hook.remove()
    norm_of: dict[nn.BatchNorm2d, nn.Conv2d] = {}
    for key, convolution in produced.items():
        layers = readers.get(key, [])
        if len(layers) == 1 and _foldable(norm := layers[0]) and calls[norm] == calls[convolution] == 1:
            norm_of[norm] = convolution
    per_domain = {id(inner) for each in module.modules() if isinstance(each, DomainNorm) for inner in each.modules()}
    return [
        (parent, name, norm_of[child], child)
        for parent in module.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.BatchNorm2d) and child in norm_of and id(child) not in per_domain
    ]


def _foldable(layer: nn.Module) -> TypeGuard[nn.BatchNorm2d]:
    """A BatchNorm2d, or timm's BatchNormAct2d (BatchNorm, dropout, activation), with running statistics."""
    plain = type(layer) is nn.BatchNorm2d or type(layer).__name__ == "BatchNormAct2d"
    return plain and isinstance(layer, nn.BatchNorm2d) and layer.running_mean is not None


def folded_parameters(convolution: nn.Conv2d, norm: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of the one convolution that computes `norm(convolution(x))` with `norm`'s running
    statistics: w·γ/σ and (b − μ)·γ/σ + β. Differentiable in w, b, γ and β (train/frozen_norm.py trains through it)."""
    assert norm.running_mean is not None and norm.running_var is not None
    scale = torch.rsqrt(norm.running_var + norm.eps)
    shift = -norm.running_mean * scale
    if norm.affine:
        scale, shift = scale * norm.weight, shift * norm.weight + norm.bias
    bias = shift if convolution.bias is None else convolution.bias * scale + shift
    return convolution.weight * scale.reshape(-1, 1, 1, 1), bias


def _fold(convolution: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    weight, bias = folded_parameters(convolution, norm)
    convolution.weight.copy_(weight)
    convolution.bias = nn.Parameter(bias, requires_grad=False)


def same_outputs(a: object, b: object) -> bool:
    """Whether two outputs (tensors, or dataclasses, dicts and sequences of them) agree to float32 rounding."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-4)
    if is_dataclass(a):
        return same_outputs(vars(a), vars(b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_outputs(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(same_outputs, a, b))
    return a == b
