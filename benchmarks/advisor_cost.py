"""What the advisor costs a user, as whole processes: `transferlab advise` against `transferlab fit --strategy
full`, each timed from its start (importing torch, building the backbone, decoding) to its end, on the same
Fashion-MNIST draw (--sizes images per class, seed 0; the fit scores all 10,000 test images, as a user's
would). Also the advisor's own measuring time inside the process, as it reports it.

    python benchmarks/advisor_cost.py [--sizes 20] [--sizes 20,500]   (500 per class: a fit of ~15 minutes)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL = 0.15  # the advisor's whole process at most 15% of the whole `full` process


def timed(args: list[str]) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "transferlab", *args], check=True, capture_output=True, text=True)
    return time.monotonic() - started, done.stdout + done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="20", help="comma-separated images per class")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="advisor-cost-") as temp:
        for per_class in [int(n) for n in args.sizes.split(",")]:
            data = ["fashion-mnist", "--per-class", str(per_class)]
            advise, said = timed(["advise", *data])
            measured = float(re.search(r"measured in ([0-9.]+) s", said).group(1))  # type: ignore[union-attr]
            out = str(Path(temp) / f"full-{per_class}")
            full, told = timed(["fit", *data, "--strategy", "full", "--no-report", "--out", out])
            rows.append((per_class, advise, measured, full))
            stopped = re.search(r"^stopped: (.*)$", told, re.MULTILINE)  # how many epochs the fit's time bought
            print(
                f"  {per_class}/class: advise {advise:.1f} s (measuring {measured:.1f} s), full {full:.1f} s "
                f"({stopped.group(1) if stopped else 'no stop line'})",
                flush=True,
            )
    print(f"\n{'per class':>9} {'advise (s)':>11} {'measuring (s)':>14} {'full fit (s)':>13} {'ratio':>7}  goal")
    for per_class, advise, measured, full in rows:
        verdict = "PASS" if advise / full <= GOAL else "MISS"
        print(
            f"{per_class:>9} {advise:>11.1f} {measured:>14.1f} {full:>13.1f} {advise / full:>6.0%}  "
            f"{verdict} (≤ {GOAL:.0%})"
        )


if __name__ == "__main__":
    main()
