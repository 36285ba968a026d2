"""The data layer: a source (folder, CSV, built-in, arrays) → Dataset → decoded uint8 tensors → summary.

The names below are imported on first use (PEP 562): `transferlab.data.decode` and `.folder` need no torch,
so an exported model can predict files without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transferlab.data.builtins import BUILTINS
    from transferlab.data.cache import DecodedSplit, PreparedData, decode_split, decode_splits, prepare
    from transferlab.data.sources import load_source
    from transferlab.data.summary import format_summary, summarize
    from transferlab.data.types import Dataset, Skipped, Split

__all__ = [
    "BUILTINS",
    "Dataset",
    "DecodedSplit",
    "PreparedData",
    "Skipped",
    "Split",
    "decode_split",
    "decode_splits",
    "format_summary",
    "load_source",
    "prepare",
    "summarize",
]

_PUBLIC = {
    "BUILTINS": "transferlab.data.builtins",
    "Dataset": "transferlab.data.types",
    "DecodedSplit": "transferlab.data.cache",
    "PreparedData": "transferlab.data.cache",
    "Skipped": "transferlab.data.types",
    "Split": "transferlab.data.types",
    "decode_split": "transferlab.data.cache",
    "decode_splits": "transferlab.data.cache",
    "format_summary": "transferlab.data.summary",
    "load_source": "transferlab.data.sources",
    "prepare": "transferlab.data.cache",
    "summarize": "transferlab.data.summary",
}


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'transferlab.data' has no attribute {name!r}")
