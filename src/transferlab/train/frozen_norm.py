"""A training step through BatchNorm layers whose statistics are frozen, each folded into the convolution before it.

A pretrained network keeps its BatchNorm statistics while it is fine-tuned (strategies.py), so such a BatchNorm
is a fixed affine map of each channel of the convolution's output: conv(x, w)·s + t. That equals one convolution,
conv(x, w·s) + t, whose weights are scaled per output channel. As a layer of its own, the BatchNorm reads and
writes every activation on the way forward and again on the way back: 22% of a Lite0 training step on this
2-core CPU (torch.profiler, batches of 32 at 96 px). Folded, it costs a product the size of the weights.

Autograd differentiates w·s into the same w, γ and β, so the parameters, their gradients (to float rounding),
the optimizer and the state dict stay those of the unfolded network: only the arithmetic is regrouped, and
only inside the step's forward pass (`folded`). A BatchNorm in training mode (a network from scratch) runs as
it is, and so does any layer of a kind listed nowhere below.

The loop folds on a CPU only (`folds_on`). The fold's arithmetic on the weights runs every step, forward and
back: on Lite0 it more than doubles the operators a step dispatches (1,273 against 587 with the fused update,
counted by benchmarks/train_step_speed.py). On a GPU each of them is at least one kernel launch, and there
launches, not arithmetic, set a small step's pace: on an H200 the default fit's step (32 images at 96 px,
about 10 GFLOP) took up to 37 ms, and at 224 px and batch 128 the folded step reached 0.76x a plain
channels-last loop, while a BatchNorm there is one fast kernel. Whether folding pays on a GPU after all is
for train_step_speed.py --device cuda to say.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from timm.layers import BatchNormAct2d, Conv2dSame
from timm.layers.conv2d_same import conv2d_same
from torch import nn

from transferlab.inference import convolution_batchnorm_pairs, evaluating, folded_parameters, same_outputs

Pairs = list[tuple[nn.Conv2d, nn.BatchNorm2d]]


def _norm_of(convolution: nn.Conv2d) -> nn.BatchNorm2d:
    norm: nn.BatchNorm2d = convolution.__dict__["_folded_norm"]  # not an attribute nn.Module would register
    return norm


class _FoldedConv2d(nn.Conv2d):
    """An nn.Conv2d while `folded` holds it: its BatchNorm's map folded into its weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, *folded_parameters(self, _norm_of(self)))


class _FoldedConv2dSame(Conv2dSame):
    """timm's Conv2dSame (TensorFlow's padding) while `folded` holds it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = folded_parameters(self, _norm_of(self))
        return conv2d_same(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)  # type: ignore[arg-type]


class _AppliedNorm(nn.BatchNorm2d):
    """An nn.BatchNorm2d whose map its convolution has already applied."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _AppliedNormAct(BatchNormAct2d):
    """timm's BatchNormAct2d whose map its convolution has already applied: its dropout and activation stay."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(x))


_CONVOLUTIONS: dict[type, type] = {nn.Conv2d: _FoldedConv2d, Conv2dSame: _FoldedConv2dSame}
_NORMS: dict[type, type] = {nn.BatchNorm2d: _AppliedNorm, BatchNormAct2d: _AppliedNormAct}


def folds_on(device: torch.device) -> bool:
    """Whether the training loop folds on `device`: where it was measured to pay, a CPU (see above)."""
    return device.type == "cpu"


def foldable_pairs(module: nn.Module, run: Callable[[], object]) -> Pairs:
    """The (convolution, BatchNorm) pairs of `module` that `folded` computes as one convolution, read off `run()`,
    a pass of `module` on a small example, as inference.without_batchnorm reads them. Checked on that example:
    if the folded pass disagrees with the plain one, no pair is folded."""
    with torch.no_grad(), evaluating(module):
        found = convolution_batchnorm_pairs(module, lambda _: run())
        pairs = [(conv, norm) for _, _, conv, norm in found if type(conv) in _CONVOLUTIONS and type(norm) in _NORMS]
        if pairs:
            plain = run()
            with folded(pairs):
                if not same_outputs(plain, run()):
                    return []
    return pairs


@contextmanager
def folded(pairs: Pairs) -> Iterator[None]:
    """Inside the block, each pair whose BatchNorm is in eval mode runs as one convolution; after it (or an
    exception), every layer is its own kind again."""
    active = [(conv, norm) for conv, norm in pairs if not norm.training]
    kinds = [(conv, type(conv), norm, type(norm)) for conv, norm in active]
    try:
        for conv, norm in active:
            conv.__dict__["_folded_norm"] = norm
            conv.__class__ = _CONVOLUTIONS[type(conv)]
            norm.__class__ = _NORMS[type(norm)]
        yield
    finally:
        for conv, conv_kind, norm, norm_kind in kinds:
            conv.__class__, norm.__class__ = conv_kind, norm_kind
            conv.__dict__.pop("_folded_norm", None)
