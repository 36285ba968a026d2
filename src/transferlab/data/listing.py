"""Naming a few of many things in one line, for error messages and notes that must stay one line."""

from __future__ import annotations

from collections.abc import Sequence


def name_some(items: Sequence[str], limit: int = 5) -> str:
    """'a, b, c' or, past `limit` items, 'a, b, c and 4 more'."""
    shown = ", ".join(items[:limit])
    return f"{shown} and {len(items) - limit} more" if len(items) > limit else shown
