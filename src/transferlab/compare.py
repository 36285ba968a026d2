"""`transferlab compare`: every strategy on the same data and budget, side by side."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from transferlab._atomic import write_json_atomic
from transferlab.config import FitConfig
from transferlab.fitting import Source, fit
from transferlab.report.plots import plot_compare


def trainable_parameters(result: Any) -> int:
    """Parameters the strategy trained: the heads plus the backbone stages after the frozen prefix."""
    model, strategy = result.model, result.strategy
    groups = strategy.param_groups(model, lr=1.0)
    return sum(p.numel() for group in groups for p in group["params"])


def compare(source: Source, strategies: list[str], config: FitConfig, out: Path, quiet: bool = True) -> list[dict]:
    """Fit each strategy with `config` (same epochs or time limit) into `out/<strategy>`; one row each."""
    rows = []
    for name in strategies:
        start = time.monotonic()
        # One model a strategy unless an ensemble is asked for: a time limit's automatic members would come in
        # different counts for strategies of different paces, and blur the comparison.
        each = config.updated(strategy=name, ensemble=config.ensemble or 1)
        result = fit(source, each, Path(out) / name.replace(":", "-"), quiet=quiet)
        rows.append(
            {
                # `auto` shows what the advisor chose: "auto: full"
                "strategy": name if name == result.strategy.name else f"{name}: {result.strategy.name}",
                "accuracy": result.scores["accuracy"],
                "macro_f1": result.scores["macro_f1"],
                "evaluated_on": result.scores["split"],
                "seconds": round(time.monotonic() - start, 1),
                "trainable_parameters": trainable_parameters(result),
                "epochs": result.state.epoch,
            }
        )
    write_json_atomic(Path(out) / "compare.json", rows)
    plot_compare(rows, Path(out) / "compare.png")
    return rows


def format_compare(rows: list[dict]) -> str:
    lines = [f"{'strategy':<14} {'accuracy':>9} {'macro-F1':>9} {'seconds':>8} {'trainable':>11} {'epochs':>6}"]
    for row in rows:
        lines.append(
            f"{row['strategy']:<14} {row['accuracy']:>9.4f} {row['macro_f1']:>9.4f} {row['seconds']:>8.1f} "
            f"{row['trainable_parameters']:>11,} {row['epochs']:>6}"
        )
    if rows:
        lines.append(f"(scored on the {rows[0]['evaluated_on']} split)")
    return "\n".join(lines)
