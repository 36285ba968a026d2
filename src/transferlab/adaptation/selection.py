"""`transferlab select`: keep the source images that look most like the target, as a manifest `fit` reads.

When only part of a large labelled source resembles the target domain, training on that part alone can beat
training on all of it (the rest teaches features the target never shows) and is cheaper than reweighting
every image during training. The ranking is the density ratio p_target(x) / p_source(x) of shift.py, from a
domain classifier on the pretrained backbone's pooled features, so it needs no training and no target label.

The result is a plain CSV manifest (path, label, split), so any later `fit` or `adapt` reads it like any other
source, and the selection can be inspected, edited or versioned.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from transferlab._atomic import write_bytes_atomic
from transferlab.adaptation.shift import (
    DomainClassifier,
    classify_domains,
    density_ratio,
    describe_shift,
    keep_count,
    pooled_features,
    select,
)
from transferlab.adaptation.target import sample_target
from transferlab.config import FitConfig, resolve_device
from transferlab.data import Dataset, Split, load_source
from transferlab.data.sources import Source
from transferlab.errors import ConfigError
from transferlab.run_backbone import open_backbone
from transferlab.sizing import image_size_for, prepare_for

# A class that keeps less than this fraction of its proportional share is flagged: the selection all but
# removed it, and a model trained on the manifest would hardly learn it.
THIN_SHARE = 0.2


@dataclass(frozen=True, eq=False)
class Selection:
    """What `select_source` kept and why. `available` and `kept` count images per class, in `classes` order."""

    manifest: Path
    classes: list[str]
    available: list[int]  # usable source images (train and val) per class
    kept: list[int]
    shift: DomainClassifier  # source against target, on the pretrained features
    ratio_kept: float  # mean density ratio p_target / p_source of the kept images
    ratio_dropped: float | None  # of the dropped ones; None when every image was kept

    def thin_classes(self) -> list[str]:
        """Classes that kept less than THIN_SHARE of their proportional share of the kept images."""
        fraction = sum(self.kept) / sum(self.available)
        return [
            name
            for name, kept, available in zip(self.classes, self.kept, self.available, strict=True)
            if kept < THIN_SHARE * fraction * available
        ]


def parse_keep(text: str) -> int | float:
    """`--keep`'s value: "300" is a count, "0.3" a fraction (their ranges are checked against the source)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    raise ConfigError(f"--keep takes a count (300) or a fraction (0.3), got '{text}'")


def select_source(
    source: Source,
    target: Source,
    keep: int | float,
    out: Path,
    *,
    backbone: str = FitConfig.backbone,
    weights: str | None = None,
    image_size: int | None = None,
    seed: int = 0,
    device: str = "auto",
) -> Selection:
    """Rank every source training image (train and val) by how target-like it looks, keep the best `keep` (a
    count, or a fraction of the source), every class at least one, and write them to the CSV manifest `out`.

    Images are decoded at the size `fit` would pick (`image_size_for`), features come from the pretrained
    `backbone` (or `weights`). In-memory sources (built-ins, arrays) have no files to point at: their kept
    images are written as PNG files into `<out stem>-images/<class>/` first. The manifest is written last,
    atomically, so an interrupted run never leaves one that names missing files.
    """
    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise ConfigError(f"the manifest must be a .csv file (fit reads only those), got {out}")
    dataset = load_source(source, seed=seed, val_fraction=0)  # val, if the source has one, is ranked too
    pretrained = open_backbone(backbone, weights=weights)
    size = image_size_for(dataset, pretrained, image_size)
    ranked = _train_and_val(dataset)
    decoded = prepare_for(ranked, pretrained, size).splits["train"]
    labels = decoded.labels.numpy()
    try:
        keep_count(keep, len(labels))  # checked before the costly part
    except ValueError as err:
        raise ConfigError(str(err)) from err
    target_data = sample_target(target, dataset.classes, size, pretrained.preprocessing.interpolation, seed)
    device = resolve_device(device)
    pretrained = pretrained.to(device)
    shift = classify_domains(
        pooled_features(pretrained, decoded.images, device=device),
        pooled_features(pretrained, target_data.splits["train"].images, device=device),
        seed=seed,
    )
    ratio = density_ratio(shift)
    chosen = select(ratio, labels, keep)
    dropped = np.setdiff1d(np.arange(len(labels)), chosen)
    names = [dataset.classes[label] for label in labels[chosen]]
    if decoded.paths is not None:
        # absolute: the manifest's relative paths are read against its own folder, not the working one
        files = [decoded.paths[i].absolute() for i in chosen]
    else:
        files = _write_images(ranked.splits["train"].arrays, chosen, names, out)
    _write_manifest(out, files, names)
    count = len(dataset.classes)
    return Selection(
        manifest=out,
        classes=list(dataset.classes),
        available=np.bincount(labels, minlength=count).tolist(),
        kept=np.bincount(labels[chosen], minlength=count).tolist(),
        shift=shift,
        ratio_kept=float(ratio[chosen].mean()),
        ratio_dropped=float(ratio[dropped].mean()) if len(dropped) else None,
    )


def _train_and_val(dataset: Dataset) -> Dataset:
    """`dataset` with its train and val samples together as one train split (its test split left out)."""
    parts = [dataset.splits[name] for name in ("train", "val") if name in dataset.splits]
    arrays = [part.arrays for part in parts if part.arrays is not None]
    merged = Split(
        labels=np.concatenate([part.labels for part in parts]),
        paths=[path for part in parts for path in part.paths or []] if not arrays else None,
        arrays=np.concatenate(arrays) if arrays else None,
    )
    return replace(dataset, splits={"train": merged})


def _write_images(arrays: np.ndarray | None, rows: np.ndarray, classes: list[str], out: Path) -> list[Path]:
    """The in-memory images at `rows` (of class `classes`, one each) as `<out stem>-images/<class>/<row>.png`,
    at their own size (fit resizes them as it resizes any file); their paths relative to the manifest's folder."""
    assert arrays is not None, "a source without files holds arrays"
    files = []
    for row, name in zip(rows, classes, strict=True):
        # The class folder is only for browsing (the manifest holds the labels): any name is made path-safe.
        file = Path(f"{out.stem}-images", re.sub(r"[^\w-]+", "_", name) or "_", f"{row}.png")
        (out.parent / file).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arrays[row]).save(out.parent / file)
        files.append(file)
    return files


def _write_manifest(out: Path, paths: list[Path], labels: list[str]) -> None:
    """A path,label,split manifest, every row in train: `fit` carves its own val from it."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "label", "split"])
    writer.writerows([path.as_posix(), label, "train"] for path, label in zip(paths, labels, strict=True))
    write_bytes_atomic(out, text.getvalue().encode())


def format_selection(selection: Selection) -> str:
    """What was kept, class by class (thin classes flagged), the measured shift and the density ratios."""
    kept, total = sum(selection.kept), sum(selection.available)
    thin = set(selection.thin_classes())
    width = max(len(name) for name in selection.classes)
    lines = [f"kept {kept} of {total} source images ({100 * kept / total:.0f}%), the most target-like first"]
    lines.append("per class, kept / available:")
    for name, count, available in zip(selection.classes, selection.kept, selection.available, strict=True):
        flag = f"  <- under {100 * THIN_SHARE:.0f}% of its share: unlike the target" if name in thin else ""
        lines.append(f"  {name:<{width}} {count:>6} / {available}{flag}")
    lines.append(f"shift: {describe_shift(selection.shift)}")
    dropped = "none dropped" if selection.ratio_dropped is None else f"{selection.ratio_dropped:.3g} dropped"
    lines.append(f"density ratio p_target/p_source, mean: {selection.ratio_kept:.3g} kept, {dropped}")
    return "\n".join(lines)
