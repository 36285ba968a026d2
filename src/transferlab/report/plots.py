"""PNG plots for a run dir. They draw on `Figure` objects, not pyplot: no backend is chosen or switched, so a
notebook user's stays theirs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    """Training and validation loss, and validation accuracy, per epoch."""
    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(9, 3.5))
    left, right = fig.subplots(1, 2)
    left.plot(epochs, [row["train_loss"] for row in history], label="train")
    left.plot(epochs, [row["val_loss"] for row in history], label="validation")
    left.set(xlabel="epoch", ylabel="loss", title="loss")
    left.legend()
    right.plot(epochs, [row["val_accuracy"] for row in history], color="tab:green")
    right.set(xlabel="epoch", ylabel="accuracy", title="validation accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_confusion(confusion: list[list[int]], classes: list[str], path: Path) -> None:
    size = max(4.0, 0.5 * len(classes) + 2)
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=90)
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix")
    for i, row in enumerate(confusion):
        for j, value in enumerate(row):
            if value:
                ax.text(j, i, str(value), ha="center", va="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_compare(rows: list[dict[str, Any]], path: Path) -> None:
    """`compare`'s accuracy per strategy, with each fit's seconds."""
    fig = Figure(figsize=(1.2 * len(rows) + 2, 3.5))
    ax = fig.subplots()
    bars = ax.bar([r["strategy"] for r in rows], [100 * r["accuracy"] for r in rows], color="tab:blue")
    for bar, row in zip(bars, rows, strict=True):
        ax.annotate(
            f"{100 * row['accuracy']:.1f}%\n{row['seconds']:.0f} s",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set(ylabel=f"{rows[0]['evaluated_on']} accuracy (%)", title="strategies compared", ylim=(0, 105))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
