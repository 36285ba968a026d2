"""One process against `torchrun --nproc_per_node N`: the same `transferlab fit`, side by side, as whole
processes (start-up, decoding and the advisor count, as they do for a user).

Each row is a fresh `fit` of Fashion-MNIST with --per-class images per class, the given strategy, size and
epochs, on the built-in's 10,000 test images. The batch size is fixed (--batch-size), so every row takes the
same steps on the same batches: the processes share each batch out (batches.shard). On a CPU the threads are
divided between the processes (OMP_NUM_THREADS = cores / N), so a row compares ways of spending the same
cores; on GPUs each process takes one GPU. `--device cpu` keeps a machine that has GPUs on its cores.

    python benchmarks/distributed.py [--processes 1,2] [--per-class 100] [--strategy full] [--image-size 64]
        [--epochs 4] [--batch-size 32] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(processes: int, args: argparse.Namespace, out: Path) -> tuple[float, float]:
    """(seconds, test accuracy) of one whole fit on `processes` processes."""
    flags = [
        "fashion-mnist",
        f"--per-class={args.per_class}",
        f"--strategy={args.strategy}",
        f"--image-size={args.image_size}",
        f"--epochs={args.epochs}",
        f"--batch-size={args.batch_size}",
        f"--device={args.device}",
        "--no-report",
        f"--out={out}",
    ]
    cores = os.cpu_count() or 1
    environment = os.environ | {"OMP_NUM_THREADS": str(max(1, cores // processes))}
    launcher = [sys.executable, "-m", "transferlab"]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        launcher += ["-m", "transferlab"]
    started = time.monotonic()
    subprocess.run([*launcher, "fit", *flags], check=True, env=environment, capture_output=True)
    seconds = time.monotonic() - started
    return seconds, json.loads((out / "summary.json").read_text())["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts, one row each")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--strategy", default="full")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto", help="auto: the GPUs where there are some, else the CPU")
    args = parser.parse_args()
    counts = [int(n) for n in args.processes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="distributed-") as temp:
        for processes in counts:
            seconds, accuracy = run(processes, args, Path(temp) / f"run-{processes}")
            rows.append((processes, seconds, accuracy))
            print(f"  {processes} process(es): {seconds:.0f} s, test accuracy {100 * accuracy:.1f}%", flush=True)
    print(
        f"\nFashion-MNIST {args.per_class}/class, {args.strategy}, {args.image_size} px, {args.epochs} epochs, "
        f"batch {args.batch_size}, {os.cpu_count()} cores, device {args.device}"
    )
    print(f"{'processes':>9} {'seconds':>8} {'speed-up':>9} {'test acc':>9}")
    base = rows[0][1]
    for processes, seconds, accuracy in rows:
        print(f"{processes:>9} {seconds:>8.0f} {base / seconds:>8.2f}x {100 * accuracy:>8.1f}%")


if __name__ == "__main__":
    main()
