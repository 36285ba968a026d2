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

The loop folds on a CPU only. The fold's arithmetic on the weights runs every step, forward and back: on Lite0
it more than doubles the operators a step dispatches (1,273 against 587 with the fused update, counted by
benchmarks/train_step_speed.py), and on a GPU each of them is at least one kernel launch, where launches, not
arithmetic, set a small step's pace.

On a CUDA GPU a frozen BatchNorm runs instead through the kernels that SyncBatchNorm uses (`through_kernels`),
which have channels-last versions for the backward pass too; the arithmetic is F.batch_norm's in eval mode. That
one differentiates through generic strided elementwise kernels and layout copies: on an H200 at 224 px and batch
128 (bfloat16, channels-last, torch.profiler) its backward took 142 µs a layer, where the two kernels take
40 + 46 µs, and a Lite0 step's kernels took 26.2 ms in all, against 19.1 ms through the kernels and 22.2 ms for
a plain loop whose BatchNorms normalise by the batch's statistics (benchmarks/README.md, "On a GPU").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
from timm.layers import BatchNormAct2d, Conv2dSame
from timm.layers.conv2d_same import conv2d_same
from torch import nn

from transferlab.inference import convolution_batchnorm_pairs, evaluating, folded_parameters, same_outputs

Pairs = list[tuple[nn.Conv2d, nn.BatchNorm2d]]
Frozen = AbstractContextManager[None]


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


def frozen_norms(module: nn.Module, run: Callable[[], object], device: torch.device) -> Callable[[], Frozen]:
    """How a training step of `module` on `device` runs its frozen BatchNorms, as a context to run each step in:
    on a CPU folded into their convolutions (checked on `run()`, see `foldable_pairs`), on a CUDA GPU through
    its BatchNorm kernels, elsewhere as they are."""
    if device.type == "cpu":
        pairs = foldable_pairs(module, run)
        return lambda: folded(pairs)
    if device.type == "cuda":
        kinds = (each for each in module.modules() if type(each) in _KERNEL_NORMS)
        affine = [norm for norm in kinds if isinstance(norm, nn.BatchNorm2d) and norm.affine]  # once a run
        return lambda: through_kernels(affine)
    return nullcontext


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


class _FrozenNorm(torch.autograd.Function):
    """(x − μ)·γ/σ + β with the running statistics μ and 1/σ = `invstd`, differentiated in x, γ and β, through
    the CUDA kernels of SyncBatchNorm. Its backward pass for x is theirs with the batch's sums set to zero: the
    statistics are constants here, so the gradient is dy·γ/σ."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight, mean, invstd)
        return torch.batch_norm_elemt(x, weight, bias, mean, invstd, 0.0)  # eps is in invstd already

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, weight, mean, invstd = ctx.saved_tensors
        for_x, for_weight, for_bias = ctx.needs_input_grad[:3]
        if not (dy.is_contiguous(memory_format=torch.channels_last) or dy.is_contiguous()):
            dy = dy.contiguous()  # the kernels take either layout, as SyncBatchNorm's backward makes sure
        _, _, grad_weight, grad_bias = torch.batch_norm_backward_reduce(
            dy, x, mean, invstd, weight, False, for_weight, for_bias
        )
        grad_x = None
        if for_x:
            zero = torch.zeros_like(mean)
            count = torch.ones(1, dtype=torch.int32, device=x.device)  # divides the zero sums: any count will do
            grad_x = torch.batch_norm_backward_elemt(dy, x, mean, invstd, weight, zero, zero, count)
        return grad_x, grad_weight if for_weight else None, grad_bias if for_bias else None, None, None


class _KernelNorm(nn.BatchNorm2d):
    """An nn.BatchNorm2d in eval mode while `through_kernels` holds it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _FrozenNorm.apply(x, self.weight, self.bias, self.running_mean, self.__dict__["_invstd"])


class _KernelNormAct(BatchNormAct2d):
    """timm's BatchNormAct2d in eval mode while `through_kernels` holds it: its dropout and activation stay."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _FrozenNorm.apply(x, self.weight, self.bias, self.running_mean, self.__dict__["_invstd"])
        return self.act(self.drop(y))


_KERNEL_NORMS: dict[type, type] = {nn.BatchNorm2d: _KernelNorm, BatchNormAct2d: _KernelNormAct}


@contextmanager
def through_kernels(norms: list[nn.BatchNorm2d]) -> Iterator[None]:
    """Inside the block, each of `norms` in eval mode runs through `_FrozenNorm` (CUDA tensors only); after it
    (or an exception), every one is its own kind again."""
    frozen = [(norm, norm.running_var) for norm in norms if not norm.training and norm.running_var is not None]
    active, variances = [norm for norm, _ in frozen], [variance for _, variance in frozen]
    kinds = [(norm, type(norm)) for norm in active]
    # 1/σ of every layer in two launches rather than two a layer: a small step's pace is its launches
    invstds = torch._foreach_rsqrt(torch._foreach_add(variances, [norm.eps for norm in active])) if active else []
    try:
        for norm, invstd in zip(active, invstds, strict=True):
            norm.__dict__["_invstd"] = invstd
            norm.__class__ = _KERNEL_NORMS[type(norm)]
        yield
    finally:
        for norm, kind in kinds:
            norm.__class__ = kind
            norm.__dict__.pop("_invstd", None)
