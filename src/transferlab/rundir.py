"""A run dir's files, named in one place: what `fit` writes, `--resume` reads and `load` rebuilds from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    """The files of the run dir at `path`. A saved model alone (`save`) is `weights` + `meta`."""

    path: Path

    @property
    def weights(self) -> Path:
        """The kept model's weights (safetensors)."""
        return self.path / "model.safetensors"

    @property
    def meta(self) -> Path:
        """How to rebuild the model: backbone, heads, classes, preprocessing (JSON)."""
        return self.path / "model.json"

    @property
    def checkpoint(self) -> Path:
        """Everything a resumed run needs: weights, their average, optimizer, objective, loop state."""
        return self.path / "checkpoint.safetensors"

    @property
    def refit_checkpoint(self) -> Path:
        """The refit's resumable checkpoint (`--refit`: training again on train+val)."""
        return self.path / "refit-checkpoint.safetensors"

    @property
    def refit_metrics(self) -> Path:
        """The refit's epochs, one JSON line each (its training loss: nothing is held out)."""
        return self.path / "refit-metrics.jsonl"

    @property
    def selected(self) -> Path:
        """Before a refit: the epoch validation chose, the loop's state then, and that model's scores (JSON)."""
        return self.path / "selected.json"

    @property
    def config(self) -> Path:
        """The resolved settings, every automatic one filled in."""
        return self.path / "config.yaml"

    @property
    def metrics(self) -> Path:
        """One JSON line per epoch."""
        return self.path / "metrics.jsonl"

    @property
    def advice(self) -> Path:
        """The advisor's evidence and decision (and the adaptation method's)."""
        return self.path / "advice.json"

    @property
    def scores(self) -> Path:
        """The kept model's scores on the test split (or validation)."""
        return self.path / "eval.json"

    @property
    def data(self) -> Path:
        """The data summary of each source: classes, counts per split, sizes, skipped files, leakage notes."""
        return self.path / "data.json"

    @property
    def report(self) -> Path:
        """The self-contained HTML report."""
        return self.path / "report.html"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def curves(self) -> Path:
        return self.path / "curves.png"

    @property
    def confusion(self) -> Path:
        return self.path / "confusion.png"
