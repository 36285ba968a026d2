"""Training speed: a `full` fine-tuning step with the pretrained BatchNorm statistics folded into the convolutions
(train/frozen_norm.py, what the loop does) against the same step with each BatchNorm a layer of its own, and
AdamW's fused update (one kernel over all parameters, what the loop builds) against its per-tensor update, side
by side in one process.

tf_efficientnet_lite0 with its ImageNet weights and a 10-class head, `full`'s modes (every BatchNorm keeps its
statistics), channels-last, AdamW, label-smoothed cross-entropy, batches of --batch random images at --size px;
best of --rounds, the two interleaved, each round --steps steps after one warm-up step. Each row also counts
the operators a step dispatches: on a GPU each is at least one kernel launch, which is what bounds a step
there at small batches. One more row says what a frozen BatchNorm costs as a layer: the same step with each
one normalising by the batch's statistics, as a network trained from scratch and throughput.py's plain loop do
(`batch stats`). On a GPU (--device cuda) the steps run under `--precision auto`'s bfloat16 autocast, and a
row runs each frozen BatchNorm through SyncBatchNorm's CUDA kernels, as the loop does there (`kernels`); the
loop folds on a CPU only (train/frozen_norm.py). `--compile` adds the step with the model's forward compiled by
torch.compile (its backward follows; on a GPU in "reduce-overhead" mode, which replays CUDA graphs: the lever
for a step bound by its launches), the frozen BatchNorms as layers of their own, and prints the compile's
seconds: the loop does not compile, and this row says whether it should.

    python benchmarks/train_step_speed.py [--size 96] [--batch 32] [--steps 8] [--rounds 3] [--device cpu]
        [--compile]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from transferlab.backbones import create_backbone
from transferlab.data.transforms import Normalizer
from transferlab.model import TransferModel
from transferlab.strategies import parse_strategy
from transferlab.train.frozen_norm import Pairs, foldable_pairs, folded, frozen_norms
from transferlab.train.precision import Precision


class Dispatched(TorchDispatchMode):
    """Counts the operators dispatched inside the block, the backward pass's included."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.count += 1
        return func(*args, **(kwargs or {}))


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Inside the block, the BatchNorms normalise by each batch's statistics, as a network trained from scratch
    (and the plain loop of throughput.py) does."""
    norms = [norm for norm in model.modules() if isinstance(norm, nn.BatchNorm2d)]
    try:
        for norm in norms:
            norm.train()
        yield
    finally:
        for norm in norms:
            norm.eval()


Forward = Callable[[torch.Tensor], torch.Tensor]
# A row: the pairs it folds, its optimizer, the context of its frozen BatchNorms, and its forward pass.
Variant = tuple[Pairs, torch.optim.Optimizer, Callable[[], AbstractContextManager], Forward]


def _clock(device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


def _compiles(step: Callable[[], None], device: str) -> bool:
    """Runs the compiled step's first three calls (the forward's and the backward's graphs; CUDA graphs are
    recorded on a later call) and prints how long they took; False, with the reason, where compiling fails: a
    lease is short, and a compiler missing on the machine (triton, a C++ compiler) should cost this row alone."""
    started = _clock(device)
    try:
        for _ in range(3):
            step()
    except Exception as error:  # whatever the compiler raises, the other rows still run
        print(f"torch.compile failed, its row left out: {type(error).__name__}: {str(error)[:300]}")
        return False
    print(f"torch.compile: the first 3 steps took {_clock(device) - started:.1f} s")
    return True


def _dispatched(step: Callable[[], None]) -> int:
    with Dispatched() as counter:
        step()
    return counter.count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="add the step with the forward compiled")
    args = parser.parse_args()
    device = args.device
    torch.manual_seed(0)
    backbone = create_backbone("tf_efficientnet_lite0", pretrained=True)
    model = TransferModel(backbone, 10).to(device, memory_format=torch.channels_last)
    strategy = parse_strategy("full")
    strategy.freeze(model)
    strategy.set_train_mode(model)
    optimizers = {fused: torch.optim.AdamW(model.parameters(), lr=1e-5, fused=fused) for fused in (False, True)}
    normalizer = Normalizer(backbone.preprocessing, channels_last=True)
    images = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8)
    x = normalizer(images, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    pairs = foldable_pairs(model, lambda: model.outputs_from(x[:1], 0))
    precision = Precision("auto", device)

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        return model.outputs_from(inputs, 0).logits["label"]

    def step(fold: Pairs, optimizer: torch.optim.Optimizer, norms: AbstractContextManager, run: Forward) -> None:
        with precision.autocast(), folded(fold), norms:
            logits = run(x)
            loss = torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    variants: dict[str, Variant] = {
        "a layer of its own": ([], optimizers[False], nullcontext, forward),
        "folded": (pairs, optimizers[False], nullcontext, forward),
        "folded, fused AdamW": (pairs, optimizers[True], nullcontext, forward),
        "own layer, fused AdamW": ([], optimizers[True], nullcontext, forward),
        "batch stats, fused AdamW": ([], optimizers[True], lambda: batch_statistics(model), forward),
    }
    if device.startswith("cuda"):  # what frozen_norms gives a GPU step
        kernels = frozen_norms(model, lambda: None, torch.device(device))
        variants["kernels, fused AdamW"] = ([], optimizers[True], kernels, forward)
    if args.compile:  # folding swaps weights in place, which a compiled graph would not see: this row folds none
        compiled = torch.compile(forward, mode="reduce-overhead" if device.startswith("cuda") else "default")
        if _compiles(lambda: step([], optimizers[True], nullcontext(), compiled), device):
            variants["compiled, fused AdamW"] = ([], optimizers[True], nullcontext, compiled)
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(args.rounds):
        for name, (fold, optimizer, norms, run) in variants.items():
            step(fold, optimizer, norms(), run)
            started = _clock(device)
            for _ in range(args.steps):
                step(fold, optimizer, norms(), run)
            best[name] = min(best[name], (_clock(device) - started) / args.steps)
    # A dispatch mode sends a compiled function back to eager PyTorch, so the compiled row's count is not taken.
    operators = {
        name: _dispatched(lambda v=variant: step(v[0], v[1], v[2](), v[3]))  # type: ignore[misc]
        for name, variant in variants.items()
        if variant[3] is forward
    }
    norms = sum(isinstance(each, torch.nn.BatchNorm2d) for each in model.modules())
    print(
        f"\ntf_efficientnet_lite0, `full`, batches of {args.batch} at {args.size} px, {torch.get_num_threads()} "
        f"threads, {device}, best of {args.rounds} rounds of {args.steps} steps; {len(pairs)} of {norms} "
        "BatchNorms folded"
    )
    print(f"{'BatchNorm, optimizer':<26} {'ms/step':>8} {'images/s':>9} {'speed-up':>9} {'ops/step':>9}")
    plain = best["a layer of its own"]
    for name, seconds in best.items():
        speed = f"{1000 * seconds:>8.1f} {args.batch / seconds:>9.1f} {plain / seconds:>8.2f}x"
        print(f"{name:<26} {speed} {operators.get(name, '-'):>9}")


if __name__ == "__main__":
    main()
