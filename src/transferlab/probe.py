"""Linear probes at every stage of a backbone: where in the network the target's classes become separable.

A probe is a logistic regression on one stage's globally pooled output, trained on the train split and scored
on the val split; LogME of the same features rides along. One forward pass per batch feeds every stage's probe.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from transferlab._atomic import write_json_atomic
from transferlab.backbones import Backbone
from transferlab.config import resolve_device
from transferlab.data import PreparedData, load_source
from transferlab.data.sources import Source
from transferlab.data.transforms import Normalizer
from transferlab.inference import INFERENCE_BATCH, evaluating, without_batchnorm
from transferlab.logistic import probe_accuracies
from transferlab.run_backbone import open_backbone
from transferlab.sizing import MEASURED_SPLITS, image_size_for, prepare_for
from transferlab.transferability import logme


@dataclass(frozen=True)
class StageProbe:
    """How well one stage's pooled features serve the target."""

    index: int
    name: str
    feature_dim: int
    accuracy: float  # of the linear probe, on the val split
    logme: float  # of the train split's features


@dataclass(frozen=True)
class ProbeReport:
    """The probes of every stage of one backbone on one data set, and what they were measured on."""

    data: str
    backbone: str
    weights_source: str
    image_size: int
    stages: list[StageProbe]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def stage_features(
    backbone: Backbone,
    images: torch.Tensor,
    normalizer: Normalizer,
    batch_size: int = INFERENCE_BATCH,
    device: str = "cpu",
) -> list[np.ndarray]:
    """The globally pooled output of every stage for uint8 `images` [N, 3, S, S]: one [N, C_stage] per stage.

    Each batch goes through the network once, each stage feeding the next, in eval mode (BatchNorm uses its
    running statistics; the caller's mode is restored). The backbone must already be on `device`.
    """
    pooled: list[list[torch.Tensor]] = [[] for _ in range(backbone.num_stages)]
    fast: Backbone | None = None
    with evaluating(backbone):
        for start in range(0, len(images), batch_size):
            x = normalizer(images[start : start + batch_size], device=device)
            fast = fast or without_batchnorm(backbone, "forward_stages", x[:1])
            for index in range(backbone.num_stages):
                x = fast.forward_stages(x, index, index + 1)
                pooled[index].append(fast.pool(x).float().cpu())
    return [torch.cat(chunks).numpy() for chunks in pooled]


def probe_accuracy(
    train_features: np.ndarray, train_labels: np.ndarray, val_features: np.ndarray, val_labels: np.ndarray
) -> float:
    """Accuracy on the val features of a logistic regression fitted on the standardised train features."""
    return probe_accuracies([(train_features, train_labels, val_features, val_labels)])[0]


def probe_stages(
    backbone: Backbone, prepared: PreparedData, *, batch_size: int = INFERENCE_BATCH, device: str = "cpu"
) -> list[StageProbe]:
    """A linear probe and LogME for every stage of `backbone`, on decoded data (train fits, val scores)."""
    backbone.to(device)
    normalizer = Normalizer(backbone.preprocessing)
    train, val = prepared.splits["train"], prepared.splits["val"]
    train_stages = stage_features(backbone, train.images, normalizer, batch_size, device)
    val_stages = stage_features(backbone, val.images, normalizer, batch_size, device)
    train_labels, val_labels = train.labels.numpy(), val.labels.numpy()
    pairs = list(zip(train_stages, val_stages, strict=True))
    accuracies = probe_accuracies([(train_x, train_labels, val_x, val_labels) for train_x, val_x in pairs])
    return [
        StageProbe(
            index=index,
            name=backbone.stage_names[index],
            feature_dim=train_x.shape[1],
            accuracy=accuracy,
            logme=logme(train_x, train_labels),
        )
        for index, ((train_x, _), accuracy) in enumerate(zip(pairs, accuracies, strict=True))
    ]


def run_probe(
    source: Source,
    backbone_name: str,
    *,
    out_dir: Path | None = None,
    image_size: int | None = None,
    per_class: int | None = None,
    task: str | None = None,
    seed: int = 0,
    pretrained: bool = True,
    device: str = "auto",
) -> ProbeReport:
    """Probe every stage of `backbone_name` (a registered name or a run dir) on `source`.

    With `out_dir`, also writes `probe.json` and `probe.png` there. `task` names the label column of a
    multi-task CSV manifest to probe for (default: its `label`).
    """
    backbone = open_backbone(backbone_name, pretrained=pretrained)
    dataset = load_source(source, tasks=[task] if task else None, per_class=per_class, seed=seed)
    size = image_size_for(dataset, backbone, image_size)
    data = prepare_for(dataset, backbone, size, MEASURED_SPLITS)
    stages = probe_stages(backbone, data, device=resolve_device(device))
    report = ProbeReport(dataset.name, backbone_name, backbone.weights_source, size, stages)
    if out_dir is not None:
        write_json_atomic(Path(out_dir) / "probe.json", report.to_dict())
        plot_probe(report, Path(out_dir) / "probe.png")
    return report


def format_probe_table(report: ProbeReport) -> str:
    """One line per stage: its name, width, probe accuracy and LogME, under a line saying what was measured."""
    lines = [
        f"{report.backbone} (weights: {report.weights_source}) on {report.data} at {report.image_size} px",
        f"{'stage':>5}  {'name':<12} {'dim':>6}  {'probe acc':>9}  {'LogME':>8}",
    ]
    lines += [
        f"{p.index:>5}  {p.name:<12} {p.feature_dim:>6}  {p.accuracy:>9.4f}  {p.logme:>8.4f}" for p in report.stages
    ]
    return "\n".join(lines)


def plot_probe(report: ProbeReport, path: Path) -> Path:
    """A PNG of probe accuracy per stage, low stages on the left; returns `path`."""
    # A bare Figure needs no pyplot state and no GUI backend, so it is safe in a headless run.
    fig = Figure(figsize=(max(5.0, 0.7 * len(report.stages) + 2), 3.5))
    ax = fig.subplots()
    ax.plot([p.name for p in report.stages], [p.accuracy for p in report.stages], marker="o")
    ax.set(xlabel="stage", ylabel="val accuracy", ylim=(0, 1), title=f"linear probe: {report.backbone}")
    ax.tick_params(axis="x", labelrotation=45)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
