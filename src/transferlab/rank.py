"""Rank backbones for a target data set before fine-tuning any: LogME, H-score and a linear probe of each one's
final pooled features, side by side, best LogME first."""

from __future__ import annotations

import time
from dataclasses import dataclass

from transferlab.backbones import Backbone
from transferlab.config import resolve_device
from transferlab.data import Dataset, PreparedData, load_source
from transferlab.data.sources import Source
from transferlab.data.transforms import Normalizer
from transferlab.errors import ConfigError
from transferlab.probe import probe_accuracy, stage_features
from transferlab.run_backbone import open_backbone
from transferlab.sizing import MEASURED_SPLITS, image_size_for, prepare_for
from transferlab.transferability import h_score, logme


@dataclass(frozen=True)
class RankRow:
    """One backbone's scores on the target; `seconds` is feature extraction plus scoring (decoding excluded)."""

    backbone: str  # as given: a registered name or a run dir
    weights_source: str
    image_size: int
    feature_dim: int
    logme: float
    h_score: float
    probe_accuracy: float  # linear probe trained on train, scored on val
    seconds: float


def rank_backbones(
    source: Source,
    names: list[str],
    image_size: int | None = None,
    per_class: int | None = None,
    seed: int = 0,
    *,
    task: str | None = None,
    pretrained: bool = True,
    device: str = "auto",
) -> list[RankRow]:
    """Score each backbone in `names` on `source`; rows sorted by LogME, highest first.

    Each backbone sees the data at `image_size`, else at the size `fit` would pick for it. Every backbone is
    built before any is scored, so an unknown name fails at once, not after the others ran. `task` names the
    label column of a multi-task CSV manifest to rank for (default: its `label`).
    """
    if not names:
        raise ConfigError("rank needs at least one backbone name")
    backbones = [open_backbone(name, pretrained=pretrained) for name in names]
    dataset = load_source(source, tasks=[task] if task else None, per_class=per_class, seed=seed)
    decoded: dict[tuple[int, str], PreparedData] = {}  # backbones that share a size and resampling share a decode
    rows = [
        _score(name, backbone, dataset, image_size_for(dataset, backbone, image_size), decoded, resolve_device(device))
        for name, backbone in zip(names, backbones, strict=True)
    ]
    return sorted(rows, key=lambda row: row.logme, reverse=True)


def _score(
    name: str,
    backbone: Backbone,
    dataset: Dataset,
    size: int,
    decoded: dict[tuple[int, str], PreparedData],
    device: str,
) -> RankRow:
    key = (size, backbone.preprocessing.interpolation)
    if key not in decoded:
        decoded[key] = prepare_for(dataset, backbone, size, MEASURED_SPLITS)
    train, val = decoded[key].splits["train"], decoded[key].splits["val"]
    started = time.perf_counter()
    backbone.to(device)
    normalizer = Normalizer(backbone.preprocessing)
    train_x = stage_features(backbone, train.images, normalizer, device=device)[-1]
    val_x = stage_features(backbone, val.images, normalizer, device=device)[-1]
    train_y, val_y = train.labels.numpy(), val.labels.numpy()
    return RankRow(
        backbone=name,
        weights_source=backbone.weights_source,
        image_size=size,
        feature_dim=train_x.shape[1],
        logme=logme(train_x, train_y),
        h_score=h_score(train_x, train_y),
        probe_accuracy=probe_accuracy(train_x, train_y, val_x, val_y),
        seconds=time.perf_counter() - started,
    )


def format_rank_table(rows: list[RankRow]) -> str:
    """One line per backbone, in the given order, with its scores and the seconds they took."""
    width = max([len("backbone"), *(len(row.backbone) for row in rows)])
    lines = [
        f"{'backbone':<{width}}  {'size':>4}  {'dim':>5}  {'LogME':>8}  {'H-score':>8}  {'probe acc':>9}  {'s':>6}"
    ]
    lines += [
        f"{row.backbone:<{width}}  {row.image_size:>4}  {row.feature_dim:>5}  {row.logme:>8.4f}  {row.h_score:>8.3f}  "
        f"{row.probe_accuracy:>9.4f}  {row.seconds:>6.1f}"
        for row in rows
    ]
    return "\n".join(lines)
