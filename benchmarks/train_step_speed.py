"""Training speed: a `full` fine-tuning step with the pretrained BatchNorm statistics folded into the convolutions
(train/frozen_norm.py, what the loop does) against the same step with each BatchNorm a layer of its own, and
AdamW's fused update (one kernel over all parameters, what the loop builds) against its per-tensor update, side
by side in one process.

tf_efficientnet_lite0 with its ImageNet weights and a 10-class head, `full`'s modes (every BatchNorm keeps its
statistics), channels-last, AdamW, label-smoothed cross-entropy, batches of --batch random images at --size px;
best of --rounds, the two interleaved, each round --steps steps after one warm-up step.

    python benchmarks/train_step_speed.py [--size 96] [--batch 32] [--steps 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from transferlab.backbones import create_backbone
from transferlab.data.transforms import Normalizer
from transferlab.model import TransferModel
from transferlab.strategies import parse_strategy
from transferlab.train.frozen_norm import Pairs, foldable_pairs, folded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    backbone = create_backbone("tf_efficientnet_lite0", pretrained=True)
    model = TransferModel(backbone, 10).to(memory_format=torch.channels_last)
    strategy = parse_strategy("full")
    strategy.freeze(model)
    strategy.set_train_mode(model)
    optimizers = {fused: torch.optim.AdamW(model.parameters(), lr=1e-5, fused=fused) for fused in (False, True)}
    normalizer = Normalizer(backbone.preprocessing, channels_last=True)
    x = normalizer(torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8))
    y = torch.randint(0, 10, (args.batch,))
    pairs = foldable_pairs(model, lambda: model.outputs_from(x[:1], 0))

    def step(fold: Pairs, optimizer: torch.optim.Optimizer) -> None:
        with folded(fold):
            logits = model.outputs_from(x, 0).logits["label"]
        loss = torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    variants = {
        "a layer of its own": ([], optimizers[False]),
        "folded": (pairs, optimizers[False]),
        "folded, fused AdamW": (pairs, optimizers[True]),
    }
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(args.rounds):
        for name, (fold, optimizer) in variants.items():
            step(fold, optimizer)
            started = time.perf_counter()
            for _ in range(args.steps):
                step(fold, optimizer)
            best[name] = min(best[name], (time.perf_counter() - started) / args.steps)
    norms = sum(isinstance(each, torch.nn.BatchNorm2d) for each in model.modules())
    print(
        f"\ntf_efficientnet_lite0, `full`, batches of {args.batch} at {args.size} px, {torch.get_num_threads()} "
        f"threads, best of {args.rounds} rounds of {args.steps} steps; {len(pairs)} of {norms} BatchNorms folded"
    )
    print(f"{'BatchNorm, optimizer':<22} {'ms/step':>8} {'images/s':>9} {'speed-up':>9}")
    plain = best["a layer of its own"]
    for name, seconds in best.items():
        print(f"{name:<22} {1000 * seconds:>8.0f} {args.batch / seconds:>9.1f} {plain / seconds:>8.2f}x")


if __name__ == "__main__":
    main()
