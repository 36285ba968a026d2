"""The Python API, in scikit-learn's estimator shape: `__init__` stores, `fit` builds and returns self,
learned state ends in `_`, and predicting refuses an unfitted estimator."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transferlab.config import FitConfig, resolve_device
from transferlab.data import Split, load_source, prepare
from transferlab.data.cache import decode_split
from transferlab.data.decode import IMAGE_EXTENSIONS
from transferlab.data.transforms import Normalizer
from transferlab.errors import TransferlabError
from transferlab.evaluate import probabilities, score
from transferlab.model import TransferModel, load_model, save_model

ImagesLike = Sequence[str | Path] | np.ndarray


class NotFittedError(TransferlabError):
    """predict/score/save before fit."""


class TransferClassifier:
    """Fit a pretrained backbone to your images.

    >>> clf = TransferClassifier(backbone="tf_efficientnet_lite0", strategy="full").fit("fashion-mnist-sample")
    >>> clf.predict(["shoe.png"])

    Keyword arguments are FitConfig fields (`epochs`, `lr`, `image_size`, `time_limit`, ...).
    """

    def __init__(self, backbone: str = "tf_efficientnet_lite0", strategy: str = FitConfig.strategy, **settings: Any):
        self.backbone = backbone
        self.strategy = strategy
        self.settings = settings

    def fit(self, source: str | Path | tuple, out: str | Path | None = None, quiet: bool = True) -> TransferClassifier:
        """Train on `source` (folder, CSV, built-in name, or `(images, labels)` arrays); returns self."""
        from transferlab.fitting import fit

        config = FitConfig(backbone=self.backbone, strategy=self.strategy).updated(**self.settings)
        run_dir = Path(out) if out else Path(tempfile.mkdtemp(prefix="transferlab-"))
        result = fit(source, config, run_dir, quiet=quiet)
        self._set_fitted(result.model, result.classes, result.image_size, run_dir)
        self.scores_ = result.scores
        return self

    def _set_fitted(self, model: TransferModel, classes: list[str], image_size: int, run_dir: Path) -> None:
        self.model_, self.classes_, self.image_size_, self.run_dir_ = model, classes, image_size, run_dir
        self.device_ = resolve_device(self.settings.get("device", "auto"))
        # One layout for a fitted and a loaded model, so that both give bit-identical probabilities; channels-last
        # is the faster one on CPU (see benchmarks/throughput.py).
        self.model_.to(self.device_).to(memory_format=torch.channels_last).eval()

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("this TransferClassifier is not fitted yet: call fit() or transferlab.load()")

    def _decode(self, images: ImagesLike) -> tuple[torch.Tensor, list[str], list[tuple[str, str]]]:
        """Decoded uint8 images at the model's size, their names, and (name, reason) for those that failed."""
        interpolation = self.model_.backbone.preprocessing.interpolation
        if isinstance(images, np.ndarray):
            split = Split(labels=np.zeros(len(images), dtype=np.int64), arrays=images)
            names = [str(i) for i in range(len(images))]
        else:
            paths = [Path(p) for p in images]
            split = Split(labels=np.zeros(len(paths), dtype=np.int64), paths=paths)
            names = [str(p) for p in paths]
        decoded = decode_split(split, self.image_size_, interpolation=interpolation)
        kept = [str(p) for p in decoded.paths] if decoded.paths is not None else names
        return decoded.images, kept, [(s.path, s.reason) for s in decoded.skipped]

    def predict_proba(self, images: ImagesLike) -> np.ndarray:
        """Class probabilities [N, C]; refuses images that cannot be decoded."""
        self._check_fitted()
        tensor, _, failed = self._decode(images)
        if failed:
            raise TransferlabError(f"cannot read {len(failed)} image(s), first {failed[0][0]}: {failed[0][1]}")
        normalizer = Normalizer(self.model_.backbone.preprocessing)
        return probabilities(self.model_, tensor, normalizer, device=self.device_).numpy()

    def predict(self, images: ImagesLike) -> list[str]:
        """The most probable class name for each image."""
        return [self.classes_[i] for i in self.predict_proba(images).argmax(axis=1)]

    def predict_paths(self, paths: Sequence[Path], top_k: int = 3) -> Iterator[dict[str, Any]]:
        """Files and folders (searched recursively) → one dict per image: `path` + `top`, or `path` + `error`."""
        self._check_fitted()
        files = [f for p in paths for f in _image_files(Path(p))]
        tensor, kept, failed = self._decode(files)
        normalizer = Normalizer(self.model_.backbone.preprocessing)
        probs = probabilities(self.model_, tensor, normalizer, device=self.device_)
        top = probs.topk(min(top_k, len(self.classes_)), dim=1)
        for name, values, indices in zip(kept, top.values.tolist(), top.indices.tolist(), strict=True):
            yield {
                "path": name,
                "top": [{"label": self.classes_[i], "prob": round(v, 6)} for v, i in zip(values, indices, strict=True)],
            }
        for name, reason in failed:
            yield {"path": name, "error": reason}
        for path in paths:
            if not Path(path).exists():
                yield {"path": str(path), "error": "no such file or folder"}

    def evaluate(self, source: str | Path | tuple, split: str = "auto") -> dict[str, Any]:
        """Accuracy, macro-F1, per-class precision/recall, confusion matrix and top losses on `source`."""
        self._check_fitted()
        dataset = load_source(source)
        missing = [c for c in dataset.classes if c not in self.classes_]
        if missing:
            raise TransferlabError(f"classes not known to this model: {', '.join(missing[:5])}")
        names = {"all": list(dataset.splits), "auto": ["test"] if "test" in dataset.splits else ["train", "val"]}.get(
            split, [split]
        )
        if any(n not in dataset.splits for n in names):
            raise TransferlabError(f"{dataset.name} has no {split} split (it has {', '.join(dataset.splits)})")
        data = prepare(dataset, self.image_size_, interpolation=self.model_.backbone.preprocessing.interpolation)
        parts = [data.splits[n] for n in names]
        images = torch.cat([p.images for p in parts])
        remap = torch.tensor([self.classes_.index(c) for c in data.classes])
        labels = remap[torch.cat([p.labels for p in parts])]
        paths = [str(x) for p in parts for x in (p.paths or [])] or None
        probs = probabilities(self.model_, images, Normalizer(self.model_.backbone.preprocessing), device=self.device_)
        return score(probs, labels, self.classes_, paths)

    def score(self, source: str | Path | tuple) -> float:
        """Accuracy on `source` (its test split when it has one), as scikit-learn's `score`."""
        return float(self.evaluate(source)["accuracy"])

    def save(self, directory: str | Path) -> Path:
        """Write model.safetensors + model.json to `directory`; `transferlab.load` rebuilds from them alone."""
        self._check_fitted()
        extra = {"classes": self.classes_, "strategy": self.strategy, "image_size": self.image_size_}
        save_model(self.model_, Path(directory), extra)
        return Path(directory)


def load(directory: str | Path, device: str = "auto") -> TransferClassifier:
    """A fitted TransferClassifier from a run dir (or any folder written by `save`)."""
    model, meta = load_model(Path(directory))
    clf = TransferClassifier(backbone=meta["backbone"], strategy=meta["strategy"], device=device)
    clf._set_fitted(model, meta["classes"], meta["image_size"], Path(directory))
    return clf


def _image_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(
            p
            for p in path.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
    return [path] if path.exists() else []
