"""Scoring speed: transferlab's inference path (its BatchNorms folded into the convolutions, and TensorFlow's
padding computed inside them: inference.without_batchnorm), in float32 and in bfloat16 autocast
(`inference_precision`), against the same model run as it trains, in eval mode, side by side in one process.

tf_efficientnet_lite0 with its ImageNet weights and a 10-class head, decoded uint8 images, the test-time flip
on (two passes per image, as `fit` scores its test split), batches of INFERENCE_BATCH (BFLOAT16_BATCH in
bfloat16); best of --rounds, the three interleaved. With `--run`, a fitted run's model is also scored on its
source's test split (default: Fashion-MNIST's 10,000 test images) in float32 and in bfloat16: accuracy,
seconds, and how many predicted classes differ, which is what bfloat16 costs (the untrained head above has
near-ties everywhere).

    python benchmarks/inference_speed.py [--size 96] [--images 2048] [--rounds 3] [--run RUN_DIR [--source NAME]]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from transferlab.backbones import create_backbone
from transferlab.classifier import load
from transferlab.data import decode_splits, load_source
from transferlab.data.transforms import Normalizer
from transferlab.evaluate import probabilities
from transferlab.inference import BFLOAT16_BATCH, INFERENCE_BATCH, evaluating
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
    parser.add_argument("--run", type=Path, help="a fitted run dir to score in both precisions")
    parser.add_argument("--source", default="fashion-mnist", help="the run's source, whose test split is scored")
    args = parser.parse_args()
    torch.manual_seed(0)
    backbone = create_backbone("tf_efficientnet_lite0", pretrained=True)
    model = TransferModel(backbone, 10, test_time_flip=True).to(memory_format=torch.channels_last)
    normalizer = Normalizer(backbone.preprocessing, channels_last=True)
    images = torch.randint(0, 256, (args.images, 3, args.size, args.size), dtype=torch.uint8)
    best = {"unfolded": float("inf"), "folded": float("inf"), "folded bf16": float("inf")}
    outputs = {}
    for _ in range(args.rounds):
        for name, score in (
            ("unfolded", lambda: unfolded(model, images, normalizer)),
            ("folded", lambda: probabilities(model, images, normalizer)["label"]),
            ("folded bf16", lambda: probabilities(model, images, normalizer, precision="bf16")["label"]),
        ):
            started = time.perf_counter()
            outputs[name] = score()
            best[name] = min(best[name], time.perf_counter() - started)
    difference = (outputs["unfolded"] - outputs["folded"]).abs().max().item()
    bf16 = (outputs["folded bf16"] - outputs["folded"]).abs().max().item()
    changed = int((outputs["folded bf16"].argmax(1) != outputs["folded"].argmax(1)).sum())
    print(
        f"\ntf_efficientnet_lite0, {args.size} px, {args.images} images with the flip, batches of {INFERENCE_BATCH} "
        f"(bfloat16: {BFLOAT16_BATCH}), "
        f"{torch.get_num_threads()} threads; largest probability difference folded {difference:.1e}, "
        f"bfloat16 {bf16:.1e} ({changed} predicted classes changed; the head is untrained, so near-ties abound)"
    )
    print(f"{'pass':<12} {'seconds':>8} {'images/s':>9} {'speed-up':>9}")
    for name, seconds in best.items():
        print(f"{name:<12} {seconds:>8.2f} {args.images / seconds:>9.0f} {best['unfolded'] / seconds:>8.2f}x")
    if args.run:
        score_run(args.run, args.source)


def score_run(run: Path, source: str) -> None:
    """The run's model on `source`'s test split, in float32 and in bfloat16, one after the other."""
    fitted = load(run)
    model = fitted.model_
    interpolation = model.backbone.preprocessing.interpolation  # as fit and evaluate resize them
    test = decode_splits(load_source(source), fitted.image_size_, ["test"], interpolation=interpolation).splits["test"]
    normalizer = Normalizer(model.backbone.preprocessing)
    scored = {}
    for precision in ("32", "bf16"):
        started = time.perf_counter()
        probs = probabilities(model, test.images, normalizer, precision=precision)["label"]
        scored[precision] = (probs.argmax(1), time.perf_counter() - started)
    changed = int((scored["32"][0] != scored["bf16"][0]).sum())
    print(f"\n{run}: {len(test.labels)} test images of {source}, {changed} predicted classes differ")
    print(f"{'precision':<12} {'accuracy':>9} {'seconds':>8}")
    for precision, (predicted, seconds) in scored.items():
        accuracy = (predicted == test.labels).float().mean().item()
        print(f"{precision:<12} {100 * accuracy:>8.2f}% {seconds:>8.1f}")


if __name__ == "__main__":
    main()
