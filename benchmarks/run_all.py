"""`make bench`: every benchmark, one after another (two at once on two cores would slow each other many
times over), each printing its own table."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS = [
    "throughput.py",
    "inference_speed.py",
    "train_step_speed.py",
    "frozen_speed.py",
    "accuracy.py",
    "time_to_accuracy.py",
    "ensemble.py",
    "files_vs_arrays.py",
    "advisor_cost.py",
    "advisor_stability.py",
    "situations.py",
    "multitask.py",
    "adaptation.py",
    "levers.py",
    "export_speed.py",
    "distributed.py",
    "peers.py",  # needs the bench extra (fastai), which `make bench` installs
]


def main() -> int:
    here = Path(__file__).parent
    failed = []
    for name in BENCHMARKS:
        print(f"\n=== {name}", flush=True)
        start = time.monotonic()
        # Each script with its own defaults: they take different flags.
        if subprocess.run([sys.executable, str(here / name)], check=False).returncode:
            failed.append(name)
        print(f"=== {name}: {time.monotonic() - start:.0f} s", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
