"""An exported model against PyTorch on this CPU, side by side in one process: images per second of the same
Lite0 model (ImageNet weights, a 10-class head, the test-time flip on) on the same decoded images, PyTorch through
transferlab's own inference path (in float32, and in bfloat16 where the CPU computes it in hardware) and the
exported ONNX file through onnxruntime (float32); then a whole `transferlab predict` process each way on the same
image files, start-up (importing torch or not) included.

    python benchmarks/export_speed.py [--size 96] [--images 256] [--threads 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from transferlab.backbones import create_backbone
from transferlab.data.transforms import Normalizer
from transferlab.evaluate import probabilities
from transferlab.export import export_model
from transferlab.model import TransferModel, save_model
from transferlab.onnx_predict import OnnxPredictor
from transferlab.train.precision import native_bfloat16


def _best_of(runs: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="export-speed-"))
    torch.manual_seed(0)
    model = TransferModel(create_backbone("tf_efficientnet_lite0"), 10, test_time_flip=True).eval()
    classes = [str(c) for c in range(10)]
    save_model(model, root / "run", {"classes": {"label": classes}, "strategy": "head", "image_size": args.size})
    rng = np.random.default_rng(0)
    files = root / "images"
    files.mkdir()
    for i in range(args.images):  # photos' worth of texture: smooth noise, as PNG files
        small = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        Image.fromarray(small).resize((args.size, args.size), Image.Resampling.BICUBIC).save(files / f"{i}.png")
    exported = export_model(root / "run", "onnx", check_images=[files])
    print(f"export: {exported.seconds:.1f} s, parity on {exported.images_checked} images: {exported.max_abs_diff:.1e}")

    images = torch.from_numpy(np.stack([np.asarray(Image.open(f)).transpose(2, 0, 1) for f in sorted(files.iterdir())]))
    normalizer = Normalizer(model.backbone.preprocessing)
    model.to(memory_format=torch.channels_last)  # as a fitted or loaded model predicts
    onnx = OnnxPredictor(exported.path)
    batch = images.numpy()
    precisions = ["32", "bf16"] if native_bfloat16("cpu") else ["32"]  # bfloat16 only where it is hardware's
    with torch.inference_mode():
        torch_seconds = {
            each: _best_of(3, lambda each=each: probabilities(model, images, normalizer, precision=each))
            for each in precisions
        }
    onnx_seconds = _best_of(3, lambda: onnx.probabilities(batch, ["label"]))

    def process(target: Path) -> float:
        start = time.perf_counter()
        command = [sys.executable, "-m", "transferlab", "predict", str(target), str(files), "--top-k", "1"]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start

    torch_process, onnx_process = process(root / "run"), process(exported.path)
    n = args.images
    print(f"\nLite0 + head, {args.size} px, test-time flip, {n} images, {args.threads} threads, best of 3")
    print(f"{'':<34} {'PyTorch':>10} {'onnxruntime':>12} {'ratio':>7}")
    for each, seconds in torch_seconds.items():
        name = f"images per second, PyTorch {'float32' if each == '32' else 'bfloat16'}"
        print(f"{name:<34} {n / seconds:>10.1f} {n / onnx_seconds:>12.1f} {seconds / onnx_seconds:>6.2f}x")
    print(
        f"{'a whole predict process (s)':<34} {torch_process:>10.1f} {onnx_process:>12.1f} "
        f"{torch_process / onnx_process:>6.2f}x"
    )


if __name__ == "__main__":
    main()
