"""CSV manifests: a `path,label` row per image (paths relative to the CSV's folder), an optional `split`
column, and any other columns kept alongside the samples.

A manifest may label several tasks, one column each (`path,age,gender,race`): name them with `tasks`. A
task's empty cell is a missing label, not a class: the image trains the tasks it has labels for.
"""

from __future__ import annotations

import csv
from pathlib import Path

from transferlab.data.listing import name_some
from transferlab.data.types import SPLIT_ALIASES, LabelledFiles
from transferlab.errors import DataError

_KNOWN = ("path", "label", "split")


def read_manifest(csv_path: Path, tasks: list[str] | None = None) -> dict[str, LabelledFiles]:
    """The manifest's images by split (rows with no split, or an empty one, are train).

    Without `tasks`, every row needs a `label`; with them, each task's column must exist and may be empty.
    """
    with csv_path.open(newline="", encoding="utf-8-sig") as file:  # utf-8-sig: spreadsheets often write a BOM
        reader = csv.DictReader(file)
        columns = [name.strip() for name in reader.fieldnames or []]
        reader.fieldnames = columns
        for needed in ("path", *(tasks or ["label"])):
            if needed not in columns:
                hint = "; name its label columns with --tasks, or one with --task" if needed == "label" else ""
                raise DataError(
                    f"{csv_path} has no '{needed}' column (its columns: {', '.join(columns) or 'none'}){hint}"
                )
        extra = [name for name in columns if name not in _KNOWN and name not in (tasks or [])]
        found: dict[str, LabelledFiles] = {}
        for line, row in enumerate(reader, start=2):
            split = _split_of(row, csv_path, line)
            files = found.setdefault(
                split, LabelledFiles(extra={c: [] for c in extra}, tasks={t: [] for t in tasks or []})
            )
            files.paths.append(csv_path.parent / _value(row, "path", csv_path, line))
            if not tasks:
                files.labels.append(_value(row, "label", csv_path, line))
            for name, values in [*files.tasks.items(), *files.extra.items()]:
                values.append((row.get(name) or "").strip())
    _check_exist(csv_path, found)
    return found


def _value(row: dict[str, str], column: str, csv_path: Path, line: int) -> str:
    value = (row.get(column) or "").strip()
    if not value:
        raise DataError(f"line {line} of {csv_path} has an empty '{column}'")
    return value


def _split_of(row: dict[str, str], csv_path: Path, line: int) -> str:
    value = (row.get("split") or "train").strip().lower() or "train"
    if value not in SPLIT_ALIASES:
        raise DataError(f"line {line} of {csv_path} has split '{value}': use train, val or test")
    return SPLIT_ALIASES[value]


def _check_exist(csv_path: Path, found: dict[str, LabelledFiles]) -> None:
    if not found:
        raise DataError(f"{csv_path} lists no images")
    missing = [str(p) for files in found.values() for p in files.paths if not p.exists()]
    if missing:
        raise DataError(f"{len(missing)} files named in {csv_path} do not exist: {name_some(missing)}")
