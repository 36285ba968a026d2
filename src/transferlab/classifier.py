"""The Python API: a scikit-learn estimator. `__init__` stores its named parameters, `fit` builds and returns
self, learned state ends in `_`, and an unfitted estimator refuses with scikit-learn's NotFittedError, so
`clone`, `cross_val_score`, `GridSearchCV` and `Pipeline` work on it."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.utils import Tags

from transferlab.config import FitConfig, resolve_device
from transferlab.data import Split, decode_splits, load_source
from transferlab.data.cache import decode_split
from transferlab.data.folder import image_files
from transferlab.data.sources import Source
from transferlab.data.transforms import Normalizer
from transferlab.data.types import DEFAULT_TASK, Dataset
from transferlab.errors import ConfigError, TransferlabError
from transferlab.evaluate import probabilities, score
from transferlab.model import TransferModel, load_model, save_model
from transferlab.predictions import choose_heads, prediction_rows

if TYPE_CHECKING:
    from transferlab.fitting import Sources

ImagesLike = Sequence[str | Path] | np.ndarray


class NotFittedError(TransferlabError, SklearnNotFittedError):
    """predict/score/save before fit: scikit-learn's NotFittedError, and one of transferlab's errors."""


class TransferClassifier(ClassifierMixin, BaseEstimator):
    """Fit a pretrained backbone to your images.

    >>> clf = TransferClassifier(strategy="full").fit(images, labels)       # uint8 [N, H, W(, 3)], any labels
    >>> clf = TransferClassifier().fit("fashion-mnist-sample")               # or a folder, CSV, built-in
    >>> clf.predict(["shoe.png"])

    The parameters are FitConfig's settings of the same name, with its defaults (None: chosen from the data).
    `config` takes any other FitConfig setting, as a dict (`{"label_smoothing": 0.0}`).
    """

    def __init__(
        self,
        backbone: str = FitConfig.backbone,
        weights: str | None = FitConfig.weights,
        strategy: str = FitConfig.strategy,
        epochs: int | None = FitConfig.epochs,
        lr: float | None = FitConfig.lr,
        batch_size: int | None = FitConfig.batch_size,
        image_size: int | None = FitConfig.image_size,
        augment: str = FitConfig.augment,
        per_class: int | None = FitConfig.per_class,
        time_limit: float | None = FitConfig.time_limit,
        seed: int = FitConfig.seed,
        device: str = FitConfig.device,
        tasks: str | None = FitConfig.tasks,
        weighting: str = FitConfig.weighting,
        sharing: str = FitConfig.sharing,
        soft_l2: float = FitConfig.soft_l2,
        adaptation: str = FitConfig.adaptation,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.backbone = backbone
        self.weights = weights
        self.strategy = strategy
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.image_size = image_size
        self.augment = augment
        self.per_class = per_class
        self.time_limit = time_limit
        self.seed = seed
        self.device = device
        self.tasks = tasks
        self.weighting = weighting
        self.sharing = sharing
        self.soft_l2 = soft_l2
        self.adaptation = adaptation
        self.config = config

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        # Images ([N, H, W(, C)] arrays or file paths), not a 2-D table of features.
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        return tags

    def fit_config(self) -> FitConfig:
        """The FitConfig this estimator's parameters describe."""
        named = {name: value for name, value in self.get_params().items() if name != "config"}
        others = dict(self.config or {})
        both = sorted(set(others) & set(named))
        if both:
            raise ConfigError(f"set {', '.join(both)} as the estimator's parameter, not in config")
        return FitConfig().updated(**others).updated(**named)

    def fit(
        self,
        X: Sources | ImagesLike,  # noqa: N803 (scikit-learn's name)
        y: Sequence[Any] | np.ndarray | None = None,
        *,
        out: str | Path | None = None,
        quiet: bool = True,
        target: Source | None = None,
    ) -> TransferClassifier:
        """Train on images `X` with labels `y` (a uint8 array [N, H, W(, C)] or a list of image paths), or on a
        source `X` alone: a folder, CSV, built-in name, `(images, labels)`, or {domain: source} for several
        domains. Returns self.

        `out` keeps the run dir (checkpoints, metrics, plots); without it the run trains in a temporary folder
        that is removed when fit returns (the fitted model lives on in memory: `save` writes it). `target`:
        unlabelled images of the domain to adapt to, with `adaptation` choosing the method.
        """
        from transferlab.fitting import fit

        config = self.fit_config()
        if isinstance(X, tuple) and len(X) == 2 and y is None:  # (images, labels): the labels as given
            images, labels = cast("tuple[ImagesLike, np.ndarray]", X)
            return self.fit(images, labels, out=out, quiet=quiet, target=target)
        if isinstance(X, (np.ndarray, list)) != (y is not None):
            raise TransferlabError("give images with their labels, fit(X, y), or a source alone, fit(source)")
        source, label_values = (cast("Sources", X), None) if y is None else _labelled(cast(ImagesLike, X), y)
        with tempfile.TemporaryDirectory(prefix="transferlab-") as scratch:
            run_dir = Path(out) if out else Path(scratch) / "run"
            result = fit(source, config, run_dir, quiet=quiet, target=target)
            self._set_fitted(result.model, result.heads, result.image_size, run_dir if out else None, label_values)
        self.scores_ = result.scores
        return self

    def _set_fitted(
        self,
        model: TransferModel,
        heads: dict[str, list[str]],
        image_size: int,
        run_dir: Path | None,
        label_values: list[Any] | None = None,
    ) -> None:
        """`run_dir`: where the run was kept (None: trained in a removed temporary folder). `label_values`: the
        labels as `fit(X, y)` was given them, in the order of the primary head's class names."""
        self.model_, self.heads_, self.image_size_, self.run_dir_ = model, heads, image_size, run_dir
        # The primary head's labels, as given (scikit-learn's `classes_`): ints stay ints; class names otherwise.
        self.classes_ = np.asarray(label_values if label_values is not None else next(iter(heads.values())))
        self.device_ = resolve_device(self.device)
        # One layout for a fitted and a loaded model, so that both give bit-identical probabilities; channels-last
        # is the faster one on CPU (see benchmarks/throughput.py).
        self.model_.to(self.device_).to(memory_format=torch.channels_last).eval()

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("this TransferClassifier is not fitted yet: call fit() or transferlab.load()")

    def _heads(self, task: str | None, domain: str | None) -> tuple[list[str], str | None]:
        """(the heads to predict with, the domain to run): see `predictions.choose_heads`."""
        heads = choose_heads(list(self.heads_), self.model_.domains, task, domain)
        return heads, domain if self.model_.domains else None

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
        precision = self.fit_config().inference_precision
        return probabilities(self.model_, images, normalizer, device=self.device_, domain=domain, precision=precision)

    def predict_proba(self, images: ImagesLike, task: str | None = None, domain: str | None = None) -> np.ndarray:
        """Class probabilities [N, C] of `task` (default: the first) or, for a multi-domain model, of `domain`'s
        head; refuses images that cannot be decoded."""
        self._check_fitted()
        heads, domain = self._heads(task, domain)
        tensor, _, failed = self._decode(images)
        if failed:
            raise TransferlabError(f"cannot read {len(failed)} image(s), first {failed[0][0]}: {failed[0][1]}")
        return self._probabilities(tensor, domain)[heads[0]].numpy()

    def predict(self, images: ImagesLike, task: str | None = None, domain: str | None = None) -> np.ndarray:
        """The most probable class of each image: the primary head's as `classes_` holds them, another task's
        (`task`) or a domain's head (`domain`) as class names."""
        probs = self.predict_proba(images, task, domain)
        heads, _ = self._heads(task, domain)
        classes = self.classes_ if heads[0] == next(iter(self.heads_)) else np.asarray(self.heads_[heads[0]])
        return classes[probs.argmax(axis=1)]

    def predict_paths(
        self, paths: Sequence[Path], top_k: int = 3, task: str | None = None, domain: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Files and folders (searched recursively) → one dict per image: `path` + `top`, or `path` + `error`.

        A multi-task model gives `tasks: {task: {top: [...]}}` instead of `top` (every task, unless `task` is
        named); a multi-domain model predicts with `domain`'s head.
        """
        self._check_fitted()
        heads, domain = self._heads(task, domain)
        tensor, kept, failed = self._decode(image_files(paths))
        probs = {head: p.numpy() for head, p in self._probabilities(tensor, domain).items() if head in heads}
        per_task = len(self.heads_) > 1 and not self.model_.domains
        yield from prediction_rows(paths, kept, probs, self.heads_, top_k, per_task, failed)

    def evaluate(self, source: str | Path | tuple, split: str = "auto", domain: str | None = None) -> dict[str, Any]:
        """Accuracy, macro-F1, per-class precision/recall, confusion matrix and top losses on `source`.

        A multi-task model scores every task the source labels: `{"tasks": {task: scores}}`. A multi-domain
        model scores `domain`'s head (default: the one domain whose classes hold the source's).
        """
        self._check_fitted()
        return self._evaluate(self._load(source), split, domain)

    def _load(self, source: str | Path | tuple) -> Dataset:
        """`source` read with its label columns named as this model's tasks, where it has several."""
        named = not self.model_.domains and list(self.heads_) != [DEFAULT_TASK]
        return load_source(source, tasks=list(self.heads_) if named else None)

    def _evaluate(self, dataset: Dataset, split: str, domain: str | None) -> dict[str, Any]:
        if self.model_.domains and domain is None:
            domain = _matching_domain(self.heads_, dataset.classes)
        heads, domain = self._heads(None, domain)
        names = {"all": list(dataset.splits), "auto": ["test"] if "test" in dataset.splits else ["train", "val"]}.get(
            split, [split]
        )
        if any(n not in dataset.splits for n in names):
            raise TransferlabError(f"{dataset.name} has no {split} split (it has {', '.join(dataset.splits)})")
        interpolation = self.model_.backbone.preprocessing.interpolation
        data = decode_splits(dataset, self.image_size_, names, interpolation=interpolation)
        parts = [data.splits[n] for n in names]
        probs = self._probabilities(torch.cat([p.images for p in parts]), domain)
        paths = [str(x) for p in parts for x in (p.paths or [])] or None
        labels = torch.cat([p.labels.view(len(p.labels), -1) for p in parts])
        scores = {
            head: _score_head(probs[head], labels[:, column], data.heads[head_of], self.heads_[head], paths)
            for column, (head, head_of) in enumerate(zip(heads, data.heads, strict=True))
        }
        return scores[heads[0]] if len(scores) == 1 else {"tasks": scores}

    def score(
        self,
        X: Source | ImagesLike,  # noqa: N803 (scikit-learn's name)
        y: Sequence[Any] | np.ndarray | None = None,
        sample_weight: np.ndarray | None = None,
    ) -> float:
        """Accuracy: of `predict(X)` against labels `y`, as scikit-learn scores; or, with `X` a source alone, on
        its test split (a source without one is refused: scoring train or val would flatter the model), of the
        first task for a multi-task model."""
        if y is not None:
            return float(super().score(X, y, sample_weight))
        self._check_fitted()
        dataset = self._load(X)  # type: ignore[arg-type]
        if "test" not in dataset.splits:
            raise TransferlabError(
                f"this source has no test split to score (it has {', '.join(dataset.splits)}): give labels, "
                "or use evaluate(source, split=...) and name the split"
            )
        scores = self._evaluate(dataset, "test", None)
        if "tasks" in scores:  # a multi-task model: the task predict() predicts, as scikit-learn's score reads it
            scores = scores["tasks"][self._heads(None, None)[0][0]]
        return float(scores["accuracy"])

    def save(self, directory: str | Path) -> Path:
        """Write model.safetensors + model.json to `directory`; `transferlab.load` rebuilds from them alone."""
        self._check_fitted()
        extra = {"classes": self.heads_, "strategy": self.strategy, "image_size": self.image_size_}
        save_model(self.model_, Path(directory), extra | {"label_values": self.classes_.tolist()})
        return Path(directory)


def load(directory: str | Path, device: str = "auto", inference_precision: str = "auto") -> TransferClassifier:
    """A fitted TransferClassifier from a run dir (or any folder written by `save`), predicting in
    `inference_precision` (FitConfig's)."""
    model, meta = load_model(Path(directory))
    settings = {"inference_precision": inference_precision} if inference_precision != "auto" else None
    clf = TransferClassifier(backbone=meta["backbone"], strategy=meta["strategy"], device=device, config=settings)
    clf._set_fitted(model, meta["classes"], meta["image_size"], Path(directory), meta.get("label_values"))
    return clf


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


def _labelled(images: ImagesLike, labels: Sequence[Any] | np.ndarray) -> tuple[Source, list[Any]]:
    """(a source, the distinct labels in class order) from images and labels as scikit-learn passes them."""
    values = np.unique(np.asarray(labels))
    names = [str(value) for value in values]
    if len(set(names)) < len(names):
        raise TransferlabError("two labels read the same as text (1 and '1'?): give labels of one type")
    index = np.searchsorted(values, np.asarray(labels))
    if isinstance(images, np.ndarray):
        return (images, index, names), values.tolist()
    return (list(map(Path, images)), index, names), values.tolist()
