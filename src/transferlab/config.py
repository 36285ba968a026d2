"""Every setting of a run, as one frozen dataclass: defaults, then YAML, then CLI flags (each flag is a field).

The resolved config is saved in the run dir as `config.yaml`, so a run can be repeated or resumed from it.
"""

from __future__ import annotations

import numbers
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from transferlab.errors import ConfigError

STRATEGY_NAMES = ("auto", "head", "partial:K", "full", "scratch")  # see strategies.py
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("step", "cosine", "onecycle")
AUGMENTATIONS = ("auto", "none", "light", "strong")
MIXES = ("none", "mixup", "cutmix")  # see train/mixing.py
WEIGHTINGS = ("equal", "uncertainty", "gradnorm")  # how the tasks' losses combine (see train/objectives.py)
SHARINGS = ("hard", "soft")
ADAPTATIONS = ("auto", "none", "adabn", "coral", "dann")  # see adaptation/methods.py
SOURCE_WEIGHTINGS = ("none", "importance", "classes")
PRECISIONS = ("auto", "32", "bf16", "16")  # see train/precision.py
INFERENCE_PRECISIONS = ("auto", "32", "bf16")  # the same, for the passes that only report
VALIDATIONS = ("source", "dev")  # which loss keeps the checkpoint of an adapted run (see adaptation/monitor.py)
KEEP_BY = ("loss", "tempered_loss")  # the validation loss that keeps the checkpoint (see train/loop.validate)


@dataclass(frozen=True)
class FitConfig:
    """How to fit: which backbone, which strategy, and how to train it.

    `lr` is the head's learning rate; trained backbone stages get `lr * backbone_lr_ratio` (discriminative
    rates: pretrained layers need small steps, the new head needs large ones; unset, the strategy's own ratio:
    0.1 from pretrained weights, 1.0 from scratch). `test_time_flip`: a model trained with flip augmentation
    predicts each image as the mean of it and its mirror image; unset, it does so unless a `time_limit` is set
    (defaults.py). `ema_epochs`: the horizon, in epochs, of the moving average of the weights that is
    validated and saved (0: the raw weights); unset, 2 without a `time_limit` and 0 with one. `mix`: each training
    batch blended with a shuffled copy of itself, `mixup` or `cutmix`, by a share drawn from
    Beta(`mix_alpha`, `mix_alpha`), and its labels with it (train/mixing.py). `None` means "chosen from the
    data and strategy", and the chosen value is what `config.yaml` records. `decay_biases_and_norms`: False
    keeps biases and normalisation weights out of weight decay, as timm's optimizer factory does.
    `precision`: the training step's arithmetic: `auto` is bfloat16 autocast on a GPU (float16 with a loss
    scaler on a GPU without bfloat16) and float32 on a CPU; `32` turns mixed precision off.
    `inference_precision`: the arithmetic of scoring the test split (and of `predict` on the saved model):
    `auto` is bfloat16 where the device computes it in hardware (a CPU with AVX-512 BF16 or AMX, a GPU), else
    float32; `32` is float32 everywhere (train/precision.py). `ensemble`: fit that many members, one after
    another, with seeds `seed`, `seed + 1`, ... (each its own train/validation split where the source has a
    test split to score them on; else the first's, `split_seed`, on which they are scored), the first's
    decisions and an equal share of `time_limit` for each, and predict with their probabilities averaged
    (ensemble.py); the members share `sample_seed` (unset: `seed`), so that `per_class` draws them the same
    labelled images;
    unset, one model, unless a `time_limit` holds more: the first member trains with the whole limit, and what
    it leaves goes to further members (defaults.members_within).
    `refit`: once
    validation has chosen the epoch, train the same recipe again from the start, on the training and
    validation images together, up to that epoch, and keep that model (fitting.refit_run). `keep_by`: the
    validation loss that keeps the checkpoint and stops early: `loss`, or `tempered_loss`, the same once the
    logits are divided by the temperature that minimises it, which scores the model's ranking of the classes
    without its over- or under-confidence.

    Several heads: `tasks` names a CSV manifest's label columns ("age,gender,race"), `domains` lists
    "NAME=SOURCE" data sets, each with its own classes, learned by one network with a head per domain.
    `weighting` combines the heads' losses; `sharing` is `hard` (one backbone) or `soft` (a copy of the trained
    stages per head, pulled together by `soft_l2` × their squared distance to the mean). `domain_batchnorm`
    gives each domain its own BatchNorm layers in the trained stages.

    Domain adaptation: `target` is a source whose images (never its labels) are learned alongside, by the
    `adaptation` method, whose transfer loss is weighted by `transfer_weight` and aligns the output of a
    trained `bottleneck` layer of that width (0: none). `source_weighting` weighs the source images by how
    target-like they are (`importance`) or their classes by how much the target predicts them (`classes`,
    for a target with only some of the source's classes). `validation` is what keeps the checkpoint and
    stops early, since the target's labels cannot: the source's validation loss, or `dev`, that loss weighted
    by each image's density ratio towards the target (Deep Embedded Validation).
    """

    source: str | None = None
    tasks: str | None = None
    domains: list[str] | None = None
    weighting: str = "equal"
    sharing: str = "hard"
    soft_l2: float = 0.001  # the best of 0.001, 0.01 and 0.1 on benchmarks/multitask.py (one seed)
    domain_batchnorm: bool = False
    target: str | None = None
    adaptation: str = "auto"
    transfer_weight: float = 1.0
    bottleneck: int | None = None
    source_weighting: str = "none"
    validation: str = "source"
    backbone: str = "tf_efficientnet_lite0"
    weights: str | None = None
    strategy: str = "auto"
    epochs: int | None = None
    lr: float | None = None
    backbone_lr_ratio: float | None = None
    batch_size: int | None = None
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    decay_biases_and_norms: bool = True  # timm's rule (False) lost 0.35 points: benchmarks/levers.py
    momentum: float = 0.9
    schedule: str = "cosine"
    step_size: int = 7
    gamma: float = 0.1
    label_smoothing: float = 0.1
    ema_epochs: float | None = None
    mix: str = "none"  # mixup gained +0.10 ± 0.39 points over 3 seeds: benchmarks/levers.py
    mix_alpha: float = 1.0
    augment: str = "auto"
    cached_views: int | None = None
    test_time_flip: bool | None = None
    image_size: int | None = None
    patience: int | None = None
    keep_by: str = "loss"
    time_limit: float | None = None
    per_class: int | None = None
    val_fraction: float | None = None  # a tenth of each class, 10 to a fifth (data/splitting.py)
    refit: bool = False
    ensemble: int | None = None  # unset: the time limit decides (defaults.members_within)
    seed: int = 0
    sample_seed: int | None = None  # which images `per_class` keeps; unset, `seed` (data/sources.load_source)
    split_seed: int | None = None  # which of them validation holds; unset, `seed`
    channels_last: bool = True
    precision: str = "auto"
    inference_precision: str = "auto"
    report: bool = True  # write report.html at the end
    device: str = "auto"

    def __post_init__(self) -> None:
        self._precisions_as_text()
        self._check_types()
        check_strategy_name(self.strategy)
        self._check_choice("optimizer", OPTIMIZERS)
        self._check_choice("schedule", SCHEDULES)
        self._check_choice("augment", AUGMENTATIONS)
        self._check_mix()
        self._check_refit()
        self._check_ensemble()
        self._check_choice("precision", PRECISIONS)
        self._check_choice("inference_precision", INFERENCE_PRECISIONS)
        self._check_choice("keep_by", KEEP_BY)
        self._check_heads()
        self._check_adaptation()
        for name in ("epochs", "batch_size", "image_size", "per_class", "step_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}")
        for name in ("lr", "backbone_lr_ratio", "time_limit"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be positive, got {value}")
        if self.val_fraction is not None and not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be between 0 and 1, got {self.val_fraction}")
        if self.ema_epochs is not None and self.ema_epochs < 0:
            raise ConfigError(f"ema_epochs must be 0 or more, got {self.ema_epochs}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.cached_views is not None and self.cached_views < 0:
            raise ConfigError(f"cached_views must be 0 or more, got {self.cached_views}")

    def _precisions_as_text(self) -> None:
        """`precision: 32` in YAML is read as a number; the setting is the text "32"."""
        for name in ("precision", "inference_precision"):
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, name, str(value))

    def _check_types(self) -> None:
        """Each setting has its declared type, so that `seed: "1"` in a YAML file fails here, in one line, not
        deep inside numpy after the data was decoded."""
        for field in fields(self):
            value, declared = getattr(self, field.name), str(field.type)
            if value is None and declared.endswith("| None"):
                continue
            kind = declared.removesuffix(" | None")
            ok = {
                "int": isinstance(value, numbers.Integral) and not isinstance(value, bool),
                "float": isinstance(value, numbers.Real) and not isinstance(value, bool),
                "bool": isinstance(value, bool),
                "str": isinstance(value, str),
                "list[str]": isinstance(value, list) and all(isinstance(item, str) for item in value),
            }[kind]
            if not ok:
                raise ConfigError(f"{field.name} must be {_KIND_NAMES[kind]}, got {value!r}")

    def _check_heads(self) -> None:
        """The multi-task and multi-domain settings."""
        self._check_choice("weighting", WEIGHTINGS)
        self._check_choice("sharing", SHARINGS)
        if self.soft_l2 < 0:
            raise ConfigError(f"soft_l2 must be 0 or more, got {self.soft_l2}")
        if self.tasks is not None and not self.task_list:
            raise ConfigError("tasks must name at least one label column")
        if self.tasks and self.domains:
            raise ConfigError("give tasks (label columns of one source) or domains (several sources), not both")
        _ = self.domain_sources  # parsed now, so that a bad --domain fails before any work

    def _check_mix(self) -> None:
        self._check_choice("mix", MIXES)
        if self.mix_alpha <= 0:
            raise ConfigError(f"mix_alpha must be positive, got {self.mix_alpha}")
        if self.mix != "none" and (self.tasks or self.domains or self.target):
            raise ConfigError("mix blends one task's labels: drop it with tasks, domains or a target")

    def _check_ensemble(self) -> None:
        if self.ensemble is not None and self.ensemble < 1:
            raise ConfigError(f"ensemble must be at least 1 member, got {self.ensemble}")
        if self.ensemble is not None and self.ensemble > 1:
            for name in ("refit", "tasks", "domains", "target"):
                if getattr(self, name):
                    raise ConfigError(f"an ensemble is of single-task fits: not with {name}")

    def _check_refit(self) -> None:
        if self.refit and self.target:
            raise ConfigError("refit is fit's: domain adaptation keeps its validation images held out, to judge by")
        if self.refit and self.time_limit:
            raise ConfigError("refit trains a second time, which a time limit does not budget: give one or the other")

    def _check_adaptation(self) -> None:
        self._check_choice("adaptation", ADAPTATIONS)
        self._check_choice("source_weighting", SOURCE_WEIGHTINGS)
        self._check_choice("validation", VALIDATIONS)
        if self.transfer_weight < 0:
            raise ConfigError(f"transfer_weight must be 0 or more, got {self.transfer_weight}")
        if self.bottleneck is not None and self.bottleneck < 0:
            raise ConfigError(f"bottleneck must be 0 (none) or more, got {self.bottleneck}")
        if self.target is not None and (self.tasks or self.domains):
            raise ConfigError("domain adaptation takes one task of one source: drop tasks or domains")

    @property
    def task_list(self) -> list[str] | None:
        """The label columns named by `tasks`, or None for the one `label` column."""
        return [t.strip() for t in self.tasks.split(",") if t.strip()] if self.tasks is not None else None

    @property
    def drawing_seed(self) -> int:
        """The seed that chooses which images `per_class` keeps: `sample_seed`, unset `seed`."""
        return self.seed if self.sample_seed is None else self.sample_seed

    @property
    def splitting_seed(self) -> int:
        """The seed that chooses which of them validation holds: `split_seed`, unset `seed`."""
        return self.seed if self.split_seed is None else self.split_seed

    @property
    def domain_sources(self) -> dict[str, str]:
        """{domain: source} from `domains` ("NAME=SOURCE" each); empty without domains."""
        parsed: dict[str, str] = {}
        for item in self.domains or []:
            name, equals, source = item.partition("=")
            if not equals or not name.strip() or not source.strip():
                raise ConfigError(f"a domain is NAME=SOURCE, got {item!r}")
            if name.strip() in parsed:
                raise ConfigError(f"domain {name.strip()!r} given twice")
            parsed[name.strip()] = source.strip()
        if len(parsed) == 1:
            raise ConfigError("one domain is a plain fit: give two or more, or drop --domain")
        return parsed

    def _check_choice(self, name: str, choices: tuple[str, ...]) -> None:
        if getattr(self, name) not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")

    def updated(self, **changes: Any) -> FitConfig:
        """A copy with `changes` applied; `None` values mean "not given" and are ignored."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FitConfig:
        return cls().updated(**values)

    def save(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: Path) -> FitConfig:
        try:
            values = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"cannot read config {path}: {error}") from error
        if not isinstance(values, dict):
            raise ConfigError(f"config {path} must be a mapping of setting: value")
        return cls.from_dict(values)


_KIND_NAMES = {
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "str": "text",
    "list[str]": "a list of text",
}


def check_strategy_name(name: str) -> None:
    """Refuse a strategy name that is none of STRATEGY_NAMES, before any data is read."""
    if name not in ("auto", "head", "full", "scratch") and not re.fullmatch(r"partial:\d+", name):
        raise ConfigError(f"unknown strategy {name!r}: use one of {', '.join(STRATEGY_NAMES)}")


def resolve_device(name: str) -> str:
    """`auto` picks the GPU when there is one."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
