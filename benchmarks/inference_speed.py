"""Scoring speed: transferlab's inference path (its BatchNorms folded into the convolutions, inference.py)
against the same model run as it trains, in eval mode, side by side in one process.

tf_efficientnet_lite0 with its ImageNet weights and a 10-class head, decoded uint8 images, the test-time flip
on (two passes per image, as `fit` scores its test split), batches of INFERENCE_BATCH; best of --rounds,
the two interleaved.

    python benchmarks/inference_speed.py [--size 96] [--images 2048] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from transferlab.backbones import create_backbone
from transferlab.data.transforms import Normalizer
from transferlab.evaluate import probabilities
from transferlab.inference import INFERENCE_BATCH, evaluating
from transferlab.model import TransferModel


@torch.no_grad()
def unfolded(model: TransferModel, images: torch.Tensor, normalizer: Normalizer) -> torch.Tensor:
    """What `probabilities` computes, on the model as it is: each BatchNorm a layer of its own."""
    chunks = []
    with evaluating(model):
        for start in range(0, len(images), INFERENCE_BATCH):
            x = normalizer(images[start : start + INFERENCE_BATCH])
            logits = [model.outputs_from(view, 0).logits["label"] for view in (x, x.flip(-1))]
            chunks.append((logits[0].softmax(1) + logits[1].softmax(1)) / 2)
    return torch.cat(chunks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    backbone = create_backbone("tf_efficientnet_lite0", pretrained=True)
    model = TransferModel(backbone, 10, test_time_flip=True).to(memory_format=torch.channels_last)
    normalizer = Normalizer(backbone.preprocessing, channels_last=True)
    images = torch.randint(0, 256, (args.images, 3, args.size, args.size), dtype=torch.uint8)
    best = {"unfolded": float("inf"), "folded": float("inf")}
    outputs = {}
    for _ in range(args.rounds):
        for name, score in (
            ("unfolded", lambda: unfolded(model, images, normalizer)),
            ("folded", lambda: probabilities(model, images, normalizer)["label"]),
        ):
            started = time.perf_counter()
            outputs[name] = score()
            best[name] = min(best[name], time.perf_counter() - started)
    difference = (outputs["unfolded"] - outputs["folded"]).abs().max().item()
    print(
        f"\ntf_efficientnet_lite0, {args.size} px, {args.images} images with the flip, batches of {INFERENCE_BATCH}, "
        f"{torch.get_num_threads()} threads; largest probability difference {difference:.1e}"
    )
    print(f"{'BatchNorm':<10} {'seconds':>8} {'images/s':>9} {'speed-up':>9}")
    for name, seconds in best.items():
        print(f"{name:<10} {seconds:>8.2f} {args.images / seconds:>9.0f} {best['unfolded'] / seconds:>8.2f}x")


if __name__ == "__main__":
    main()
