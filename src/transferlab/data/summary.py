"""What a prepared data set holds, as a dict (for JSON and code) and as an aligned table (for people)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from transferlab.data.cache import PreparedData, skip_summary
from transferlab.data.types import Skipped


def summarize(prepared: PreparedData, name: str) -> dict[str, Any]:
    """Keys: name, classes, counts ({split: {class: n}}), image_sizes (original [w, h]), skipped, notes.

    A multi-task set has `tasks` ({task: {classes, counts, missing ({split: n})}}) instead of classes and counts.
    """
    sizes = Counter(size for decoded in prepared.splits.values() for size in decoded.sizes)
    if prepared.tasks:
        labels: dict[str, Any] = {"tasks": {task: _task_counts(prepared, k) for k, task in enumerate(prepared.tasks)}}
    else:
        counted = _task_counts(prepared, 0)
        labels = {"classes": counted["classes"], "counts": counted["counts"]}
    return {
        "name": name,
        **labels,
        "image_sizes": _size_stats(sizes),
        "skipped": [{"path": bad.path, "reason": bad.reason} for bad in prepared.skipped],
        "notes": list(prepared.notes),
    }


def _task_counts(prepared: PreparedData, column: int) -> dict[str, Any]:
    """One task's classes, images per class in each split, and images whose label is missing."""
    classes = list(prepared.heads.values())[column]
    counts, missing = {}, {}
    for split, decoded in prepared.splits.items():
        labels = decoded.labels.reshape(len(decoded.labels), -1)[:, column]
        counts[split] = dict(
            zip(classes, torch.bincount(labels[labels >= 0], minlength=len(classes)).tolist(), strict=True)
        )
        missing[split] = int((labels < 0).sum())
    return {"classes": classes, "counts": counts, "missing": missing}


def _size_stats(sizes: Counter[tuple[int, int]]) -> dict[str, Any]:
    """min and max by pixel count, and the most common size with how many images have it."""
    if not sizes:
        return {}
    by_area = sorted(sizes, key=lambda wh: (wh[0] * wh[1], wh))
    common, count = sizes.most_common(1)[0]
    return {
        "min": list(by_area[0]),
        "max": list(by_area[-1]),
        "most_common": list(common),
        "most_common_count": count,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """Plain text for people: images per class in each split, original sizes, skipped files and why, notes."""
    tasks = summary.get("tasks") or {"": summary}
    first = next(iter(tasks.values()))
    images = sum(sum(n.values()) + first.get("missing", {}).get(s, 0) for s, n in first["counts"].items())
    if "tasks" in summary:
        lines = [f"{summary['name']}: {len(tasks)} tasks, {images:,} images"]
        for task, described in tasks.items():
            missing = ", ".join(f"{split} {n}" for split, n in described["missing"].items())
            lines += [f"task {task}: {len(described['classes'])} classes; missing labels: {missing}"]
            lines += _count_table(described)
    else:
        lines = [f"{summary['name']}: {len(summary['classes'])} classes, {images:,} images", *_count_table(summary)]
    lines.append(f"image sizes: {_format_sizes(summary['image_sizes'], images)}")
    skipped = summary["skipped"]
    if skipped:
        lines.append(skip_summary([Skipped(**bad) for bad in skipped], images + len(skipped)))
        lines += [f"  {bad['path']}: {bad['reason']}" for bad in skipped]
    if summary["notes"]:
        lines += ["notes:", *(f"  - {note}" for note in summary["notes"])]
    return "\n".join(lines)


def _count_table(summary: dict[str, Any]) -> list[str]:
    counts: dict[str, dict[str, int]] = summary["counts"]
    splits = list(counts)
    rows = [[c, *(str(counts[s][c]) for s in splits)] for c in summary["classes"]]
    rows.append(["total", *(str(sum(counts[s].values())) for s in splits)])
    header = ["class", *splits]
    widths = [max(len(row[k]) for row in [header, *rows]) for k in range(len(header))]

    def line(cells: list[str]) -> str:  # class names flush left, numbers flush right
        pairs = zip(cells, widths, strict=True)
        return "  ".join(cell.rjust(w) if k else cell.ljust(w) for k, (cell, w) in enumerate(pairs))

    return [line(header), *(line(row) for row in rows)]


def _format_sizes(stats: dict[str, Any], images: int) -> str:
    if not stats:
        return "none"

    def wh(size: list[int]) -> str:
        return f"{size[0]}×{size[1]}"

    if stats["most_common_count"] == images:
        return f"{wh(stats['most_common'])} (all)"
    return (
        f"min {wh(stats['min'])}, max {wh(stats['max'])}, "
        f"most common {wh(stats['most_common'])} ({stats['most_common_count']:,} images)"
    )
