"""The Python API, in scikit-learn's estimator shape: `__init__` stores, `fit` builds and returns self,
learned state ends in `_`, and predicting refuses an unfitted estimator."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from transferlab.config import FitConfig, resolve_device
from transferlab.data import Split, load_source, prepare
from transferlab.data.cache import decode_split
from transferlab.data.decode import IMAGE_EXTENSIONS
from transferlab.data.sources import Source
from transferlab.data.transforms import Normalizer
from transferlab.data.types import DEFAULT_TASK
from transferlab.errors import TransferlabError
from transferlab.evaluate import probabilities, score
from transferlab.model import TransferModel, load_model, save_model

if TYPE_CHECKING:
    from transferlab.fitting import Sources

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

    def fit(
        self, source: Sources, out: str | Path | None = None, quiet: bool = True, target: Source | None = None
    ) -> TransferClassifier:
        """Train on `source` (folder, CSV, built-in name, or `(images, labels)` arrays; for several domains,
        {domain: source}); returns self. Settings `tasks="age,gender"` fit a head per CSV label column.
        `target`: unlabelled images of the domain to adapt to (or the setting `target="folder"`), with the
        setting `adaptation=` choosing the method (default `auto`)."""
        from transferlab.fitting import fit

        config = FitConfig(backbone=self.backbone, strategy=self.strategy).updated(**self.settings)
        run_dir = Path(out) if out else Path(tempfile.mkdtemp(prefix="transferlab-"))
        result = fit(source, config, run_dir, quiet=quiet, target=target)
        self._set_fitted(result.model, result.heads, result.image_size, run_dir)
        self.scores_ = result.scores
        return self

    def _set_fitted(self, model: TransferModel, heads: dict[str, list[str]], image_size: int, run_dir: Path) -> None:
        self.model_, self.heads_, self.image_size_, self.run_dir_ = model, heads, image_size, run_dir
        self.classes_ = next(iter(heads.values()))  # the primary head's, as for a single task
        self.device_ = resolve_device(self.settings.get("device", "auto"))
        # One layout for a fitted and a loaded model, so that both give bit-identical probabilities; channels-last
        # is the faster one on CPU (see benchmarks/throughput.py).
        self.model_.to(self.device_).to(memory_format=torch.channels_last).eval()

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("this TransferClassifier is not fitted yet: call fit() or transferlab.load()")

    def _heads(self, task: str | None, domain: str | None) -> tuple[list[str], str | None]:
        """(the heads to predict with, the domain to run): a task model predicts every task unless one is
        named; a multi-domain model needs its domain."""
        if self.model_.domains:
            if domain not in self.heads_:
                known = ", ".join(self.heads_)
                given = f"'{domain}' is not one of its domains" if domain else "name the images' domain"
                raise TransferlabError(f"this model has a head per domain: {given} ({known})")
            return [domain], domain
        if domain is not None:
            raise TransferlabError("this model has no domains: drop the domain")
        if task is not None and task not in self.heads_:
            raise TransferlabError(f"this model has no task '{task}' (its tasks: {', '.join(self.heads_)})")
        return ([task] if task else list(self.heads_)), None

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

    def _probabilities(self, images: torch.Tensor, domain: str | None) -> dict[str, torch.Tensor]:
        normalizer = Normalizer(self.model_.backbone.preprocessing)
        return probabilities(self.model_, images, normalizer, device=self.device_, domain=domain)

    def predict_proba(self, images: ImagesLike, task: str | None = None, domain: str | None = None) -> np.ndarray:
        """Class probabilities [N, C] of `task` (default: the first) or, for a multi-domain model, of `domain`'s
        head; refuses images that cannot be decoded."""
        self._check_fitted()
        heads, domain = self._heads(task, domain)
        tensor, _, failed = self._decode(images)
        if failed:
            raise TransferlabError(f"cannot read {len(failed)} image(s), first {failed[0][0]}: {failed[0][1]}")
        return self._probabilities(tensor, domain)[heads[0]].numpy()

    def predict(self, images: ImagesLike, task: str | None = None, domain: str | None = None) -> list[str]:
        """The most probable class name for each image (of `task`, or of `domain`'s head)."""
        probs = self.predict_proba(images, task, domain)
        heads, _ = self._heads(task, domain)
        return [self.heads_[heads[0]][i] for i in probs.argmax(axis=1)]

    def predict_paths(
        self, paths: Sequence[Path], top_k: int = 3, task: str | None = None, domain: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Files and folders (searched recursively) → one dict per image: `path` + `top`, or `path` + `error`.

        A multi-task model gives `tasks: {task: {top: [...]}}` instead of `top` (every task, unless `task` is
        named); a multi-domain model predicts with `domain`'s head.
        """
        self._check_fitted()
        heads, domain = self._heads(task, domain)
        files = [f for p in paths for f in _image_files(Path(p))]
        tensor, kept, failed = self._decode(files)
        probs = self._probabilities(tensor, domain)
        tops = {head: _top(probs[head], self.heads_[head], top_k) for head in heads}
        for index, name in enumerate(kept):
            if len(self.heads_) == 1 or self.model_.domains:
                yield {"path": name, "top": tops[heads[0]][index]}
            else:
                yield {"path": name, "tasks": {head: {"top": tops[head][index]} for head in heads}}
        for name, reason in failed:
            yield {"path": name, "error": reason}
        for path in paths:
            if not Path(path).exists():
                yield {"path": str(path), "error": "no such file or folder"}

    def evaluate(self, source: str | Path | tuple, split: str = "auto", domain: str | None = None) -> dict[str, Any]:
        """Accuracy, macro-F1, per-class precision/recall, confusion matrix and top losses on `source`.

        A multi-task model scores every task the source labels: `{"tasks": {task: scores}}`. A multi-domain
        model scores `domain`'s head (default: the one domain whose classes hold the source's).
        """
        self._check_fitted()
        named = not self.model_.domains and list(self.heads_) != [DEFAULT_TASK]  # label columns named as tasks
        dataset = load_source(source, tasks=list(self.heads_) if named else None)
        if self.model_.domains and domain is None:
            domain = _matching_domain(self.heads_, dataset.classes)
        heads, domain = self._heads(None, domain)
        names = {"all": list(dataset.splits), "auto": ["test"] if "test" in dataset.splits else ["train", "val"]}.get(
            split, [split]
        )
        if any(n not in dataset.splits for n in names):
            raise TransferlabError(f"{dataset.name} has no {split} split (it has {', '.join(dataset.splits)})")
        data = prepare(dataset, self.image_size_, interpolation=self.model_.backbone.preprocessing.interpolation)
        parts = [data.splits[n] for n in names]
        probs = self._probabilities(torch.cat([p.images for p in parts]), domain)
        paths = [str(x) for p in parts for x in (p.paths or [])] or None
        labels = torch.cat([p.labels.view(len(p.labels), -1) for p in parts])
        scores = {
            head: _score_head(probs[head], labels[:, column], data.heads[head_of], self.heads_[head], paths)
            for column, (head, head_of) in enumerate(zip(heads, data.heads, strict=True))
        }
        return scores[heads[0]] if len(scores) == 1 else {"tasks": scores}

    def score(self, source: str | Path | tuple) -> float:
        """Accuracy on `source` (its test split when it has one), as scikit-learn's `score`."""
        return float(self.evaluate(source)["accuracy"])

    def save(self, directory: str | Path) -> Path:
        """Write model.safetensors + model.json to `directory`; `transferlab.load` rebuilds from them alone."""
        self._check_fitted()
        extra = {"classes": self.heads_, "strategy": self.strategy, "image_size": self.image_size_}
        save_model(self.model_, Path(directory), extra)
        return Path(directory)


def load(directory: str | Path, device: str = "auto") -> TransferClassifier:
    """A fitted TransferClassifier from a run dir (or any folder written by `save`)."""
    model, meta = load_model(Path(directory))
    clf = TransferClassifier(backbone=meta["backbone"], strategy=meta["strategy"], device=device)
    clf._set_fitted(model, meta["classes"], meta["image_size"], Path(directory))
    return clf


def _top(probs: torch.Tensor, classes: list[str], k: int) -> list[list[dict[str, Any]]]:
    """Each image's `k` most probable classes, most probable first."""
    top = probs.topk(min(k, len(classes)), dim=1)
    return [
        [{"label": classes[i], "prob": round(v, 6)} for v, i in zip(values, indices, strict=True)]
        for values, indices in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]


def _score_head(
    probs: torch.Tensor, labels: torch.Tensor, source_classes: list[str], classes: list[str], paths: list[str] | None
) -> dict[str, Any]:
    """One head's scores on the images the source labels for it, its class names mapped onto the model's."""
    missing = [c for c in source_classes if c not in classes]
    if missing:
        raise TransferlabError(f"classes not known to this model: {', '.join(missing[:5])}")
    keep = torch.nonzero(labels >= 0).flatten()
    remap = torch.tensor([classes.index(c) for c in source_classes])
    names = [paths[i] for i in keep] if paths else None
    return score(probs[keep], remap[labels[keep]], classes, names)


def _matching_domain(heads: dict[str, list[str]], classes: list[str]) -> str:
    """The one domain whose classes hold all of `classes`."""
    matching = [name for name, known in heads.items() if set(classes) <= set(known)]
    if len(matching) != 1:
        raise TransferlabError(f"this model has a head per domain: name the source's domain ({', '.join(heads)})")
    return matching[0]


def _image_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(
            p
            for p in path.rglob("*")
            if p.suffix.lower() in IMAGE_EXTENSIONS
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
    return [path] if path.exists() else []
