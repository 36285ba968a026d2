"""The data layer: a source (folder, CSV, built-in, arrays) → Dataset → decoded uint8 tensors → summary."""

from transferlab.data.builtins import BUILTINS
from transferlab.data.cache import DecodedSplit, PreparedData, decode_split, prepare
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
    "format_summary",
    "load_source",
    "prepare",
    "summarize",
]
