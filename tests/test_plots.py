"""The run dir's plots: real PNGs, drawn without touching the user's matplotlib backend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PIL import Image

SCRIPT = """
import matplotlib
matplotlib.use("pdf")  # a user's own choice, as a notebook makes one
from transferlab.report.plots import plot_compare, plot_confusion, plot_curves
history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "val_accuracy": 0.5 + e / 10} for e in (1, 2, 3)]
plot_curves(history, OUT / "curves.png")
plot_confusion([[5, 1], [2, 4]], ["cat", "dog"], OUT / "confusion.png")
plot_compare([{"strategy": "head", "accuracy": 0.8, "seconds": 3, "evaluated_on": "test"}], OUT / "compare.png")
print(matplotlib.get_backend())
"""


def test_plots_are_pngs_and_leave_the_user_s_backend_alone(tmp_path: Path) -> None:
    script = f"from pathlib import Path\nOUT = Path({str(tmp_path)!r})\n{SCRIPT}"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "pdf"
    for name in ("curves.png", "confusion.png", "compare.png"):
        with Image.open(tmp_path / name) as image:
            image.load()
            assert image.format == "PNG" and min(image.size) >= 300
