"""What `predict` prints for each image, from probabilities as NumPy arrays: shared by a fitted model (torch)
and an exported one (onnxruntime, no torch), so both speak the same JSON."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transferlab.errors import TransferlabError


def top(probs: np.ndarray, classes: Sequence[str], k: int) -> list[list[dict[str, Any]]]:
    """Each image's `k` most probable classes, most probable first (ties: the lower class index)."""
    order = np.argsort(-probs, axis=1, kind="stable")[:, : min(k, len(classes))]
    return [
        [{"label": classes[i], "prob": round(float(row[i]), 6)} for i in picks]
        for row, picks in zip(probs, order, strict=True)
    ]


def prediction_rows(
    asked: Sequence[Path],
    names: Sequence[str],
    probs: dict[str, np.ndarray],
    classes: Mapping[str, Sequence[str]],
    top_k: int,
    per_task: bool,
    failed: Sequence[tuple[str, str]] = (),
) -> Iterator[dict[str, Any]]:
    """`predict`'s rows for the paths `asked`: one per image decoded (`names`, in the order of `probs`' rows),
    `path` + `top` for one head or `path` + `tasks: {task: {top}}` (`per_task`); then `path` + `error` for each
    (name, reason) in `failed` and each asked path that does not exist."""
    tops = {head: top(probs[head], classes[head], top_k) for head in probs}
    for index, name in enumerate(names):
        if per_task:
            yield {"path": name, "tasks": {head: {"top": tops[head][index]} for head in tops}}
        else:
            (only,) = tops.values()
            yield {"path": name, "top": only[index]}
    for name, reason in failed:
        yield {"path": name, "error": reason}
    for path in asked:
        if not Path(path).exists():
            yield {"path": str(path), "error": "no such file or folder"}


def choose_heads(heads: list[str], domains: bool, task: str | None, domain: str | None) -> list[str]:
    """The heads to predict with: a task model's every task unless one is named; a multi-domain model's head
    for the images' domain, which it needs."""
    if domains:
        if domain not in heads:
            given = f"'{domain}' is not one of its domains" if domain else "name the images' domain"
            raise TransferlabError(f"this model has a head per domain: {given} ({', '.join(heads)})")
        return [domain]
    if domain is not None:
        raise TransferlabError("this model has no domains: drop the domain")
    if task is not None and task not in heads:
        raise TransferlabError(f"this model has no task '{task}' (its tasks: {', '.join(heads)})")
    return [task] if task else list(heads)
