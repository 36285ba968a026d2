"""What a prepared data set holds, as a dict (for JSON and code) and as an aligned table (for people)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from transferlab.data.cache import PreparedData, skip_summary
from transferlab.data.types import Skipped


def summarize(prepared: PreparedData, name: str) -> dict[str, Any]:
    """Keys: name, classes, counts ({split: {class: n}}), image_sizes (original [w, h]), skipped, notes."""
    classes = prepared.classes
    counts = {
        split: dict(zip(classes, torch.bincount(decoded.labels, minlength=len(classes)).tolist(), strict=True))
        for split, decoded in prepared.splits.items()
    }
    sizes = Counter(size for decoded in prepared.splits.values() for size in decoded.sizes)
    return {
        "name": name,
        "classes": list(classes),
        "counts": counts,
        "image_sizes": _size_stats(sizes),
        "skipped": [{"path": bad.path, "reason": bad.reason} for bad in prepared.skipped],
        "notes": list(prepared.notes),
    }


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
    counts: dict[str, dict[str, int]] = summary["counts"]
    images = sum(sum(per_class.values()) for per_class in counts.values())
    lines = [
        f"{summary['name']}: {len(summary['classes'])} classes, {images:,} images",
        *_count_table(summary),
    ]
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
