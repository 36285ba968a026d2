"""Domain adaptation's methods, and how `auto` picks one: what `build_run` asks when a fit has a target.

- `none`: the source alone (the baseline; a plain fit, scored on the target);
- `adabn`: the source alone, then every BatchNorm layer's statistics re-estimated on the target (Li et al.,
  2016);
- `coral`, `dann`: a transfer loss beside the source's (see objectives.py), on a trained bottleneck.

`auto` measures the shift on pretrained features before training (a domain classifier, shift.py) and picks
`none` when the domains look alike, else the method that did best on benchmarks/adaptation.py: `adabn` (on
both shifted targets, and cheap), or `dann` for a backbone without BatchNorm.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transferlab._atomic import write_json_atomic
from transferlab.adaptation.adabn import IMAGES, align_batchnorm
from transferlab.adaptation.objectives import (
    Adaptation,
    Coral,
    DomainAdversarial,
    TransferTerm,
)
from transferlab.adaptation.shift import (
    DomainClassifier,
    classify_domains,
    density_ratio,
    describe_shift,
    effective_sample_size,
    importance_weights,
    pooled_features,
)
from transferlab.adaptation.target import FEATURES_PER_DOMAIN, has_labelled_test, load_target, prepare_target
from transferlab.backbones import Backbone
from transferlab.config import FitConfig
from transferlab.data import PreparedData
from transferlab.data.sources import Source
from transferlab.data.transforms import Normalizer
from transferlab.errors import ConfigError
from transferlab.fitdata import FitData
from transferlab.model import TransferModel
from transferlab.rundir import RunDir
from transferlab.train.objectives import CrossEntropy, Objective

Echo = Callable[[str], None]
ALIGNING = ("coral", "dann")  # the methods with a transfer loss on the bottleneck's features
BOTTLENECK = 256  # TLlib's width for its DANN, CDAN and MCC examples
# `auto`: below this proxy A-distance on pretrained features the domains count as one. On the benchmark the
# no-shift control measures near 0 and the -M targets near 2 (fashion-mnist-sample to its -m version: 1.89),
# so any threshold between sends every row to its best choice; 1.0 is the middle.
SHIFT_THRESHOLD = 1.0


@dataclass
class Shift:
    """The measured shift between the source's and the target's training images."""

    classifier: DomainClassifier
    source_rows: np.ndarray  # which source training images were measured

    def to_json(self) -> dict[str, Any]:
        return {
            "domain_accuracy": self.classifier.accuracy,
            "proxy_a_distance": self.classifier.proxy_a_distance,
            "images_per_domain": len(self.source_rows),
        }


def measure_shift(backbone: Backbone, source: PreparedData, target: PreparedData, seed: int, device: str) -> Shift:
    """A domain classifier on the pretrained backbone's pooled features of both training sets (at most
    FEATURES_PER_DOMAIN images each)."""
    generator = np.random.default_rng(seed)
    source_images, target_images = source.splits["train"].images, target.splits["train"].images
    rows = np.sort(generator.permutation(len(source_images))[:FEATURES_PER_DOMAIN])
    target_rows = np.sort(generator.permutation(len(target_images))[:FEATURES_PER_DOMAIN])
    backbone = backbone.to(device)
    source_features = pooled_features(backbone, source_images[torch.from_numpy(rows)], device=device)
    target_features = pooled_features(backbone, target_images[torch.from_numpy(target_rows)], device=device)
    return Shift(classify_domains(source_features, target_features, seed=seed), rows)


def choose_method(shift: Shift, has_batchnorm: bool = True) -> tuple[str, str]:
    """(method, why) for `auto`: none, adabn, or (without BatchNorm layers to re-estimate) dann."""
    distance = shift.classifier.proxy_a_distance
    if distance < SHIFT_THRESHOLD:
        return "none", f"proxy A-distance {distance:.2f} < {SHIFT_THRESHOLD}: the domains look alike, so no adaptation"
    if has_batchnorm:
        return (
            "adabn",
            f"proxy A-distance {distance:.2f} >= {SHIFT_THRESHOLD}: adabn, the benchmark's best and cheapest",
        )
    return "dann", f"proxy A-distance {distance:.2f} >= {SHIFT_THRESHOLD}, no BatchNorm to re-estimate: dann"


def prepare_adaptation(
    target_source: Source | None,
    config: FitConfig,
    backbone: Backbone,
    data: FitData,
    run_dir: Path,
    device: str,
    echo: Echo,
) -> tuple[FitConfig, PreparedData | None]:
    """What `build_run` needs to adapt: the config with the method chosen (and why, into advice.json), and the
    target decoded like the source. Without a target: nothing to do."""
    if target_source is None:
        if config.validation == "dev":
            raise ConfigError("validation 'dev' weighs the source's validation images towards a target: give one")
        return config, None
    if data.domains:
        raise ConfigError("domain adaptation takes one source, not several domains")
    source = data.sources[""]
    dataset = load_target(target_source, source.classes, seed=config.seed, val_fraction=config.val_fraction)
    assert config.image_size is not None, "the image size is chosen before"
    target = prepare_target(dataset, config.image_size, backbone.preprocessing.interpolation)
    config, measured = resolve_adaptation(config, backbone, source, target, device, echo)
    if measured:
        advice = RunDir(run_dir).advice
        known = json.loads(advice.read_text()) if advice.is_file() else {}
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(advice, known | {"adaptation": measured})
    return config, target


def resolve_adaptation(
    config: FitConfig, backbone: Backbone, source: PreparedData, target: PreparedData, device: str, echo: Echo
) -> tuple[FitConfig, dict[str, Any]]:
    """`config` with the method and bottleneck chosen; and what was measured, for advice.json."""
    measured: dict[str, Any] = {}
    if config.adaptation == "auto":
        shift = measure_shift(backbone, source, target, config.seed, device)
        method, why = choose_method(shift, bool(batchnorms(backbone)))
        echo(f"adaptation: {describe_shift(shift.classifier)}")
        echo(f"adaptation: auto chose '{method}': {why}")
        measured = shift.to_json() | {"method": method, "why": why}
        config = config.updated(adaptation=method)
    if config.bottleneck is None:
        config = config.updated(bottleneck=BOTTLENECK if config.adaptation in ALIGNING else 0)
    return config, measured


def check_method(config: FitConfig, model: TransferModel) -> None:
    if config.adaptation == "adabn" and not batchnorms(model):
        raise ConfigError(f"adabn re-estimates BatchNorm statistics, and {model.backbone.name} has no BatchNorm layer")


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def transfer_term(method: str, features: int) -> TransferTerm | None:
    if method == "coral":
        return Coral()
    if method == "dann":
        return DomainAdversarial(features)
    return None


def source_image_weights(
    config: FitConfig, backbone: Backbone, source: PreparedData, target: PreparedData, device: str, echo: Echo
) -> torch.Tensor | None:
    """Importance weights p_target(x) / p_source(x) of every source training image, clipped and normalised to
    mean 1, from a domain classifier on pretrained features (fitted on every source training image), where
    `config` weighs the source images so; else None."""
    if config.source_weighting != "importance":
        return None
    images = source.splits["train"].images
    features = pooled_features(backbone.to(device), images, device=device)
    target_images = target.splits["train"].images
    rows = np.random.default_rng(config.seed).permutation(len(target_images))[:FEATURES_PER_DOMAIN]
    target_features = pooled_features(backbone, target_images[torch.from_numpy(np.sort(rows))], device=device)
    weights = importance_weights(density_ratio(classify_domains(features, target_features, seed=config.seed)))
    echo(
        f"importance weights: {len(weights)} source images, effective sample size "
        f"{effective_sample_size(weights):.0f}, largest weight {weights.max():.2f}"
    )
    return torch.from_numpy(weights).float()


def reads_target(config: FitConfig) -> bool:
    """Whether training reads target images beside the source's: a transfer loss, or PADA's class weights.
    `none` and `adabn` train on the source alone, exactly as a plain fit does."""
    return config.adaptation in ALIGNING or config.source_weighting == "classes"


def build_adaptation(config: FitConfig, model: TransferModel, image_weights: torch.Tensor | None) -> Objective:
    """The source's loss, weighted as configured, plus the method's transfer term (refused where the model
    cannot take the method); plain cross-entropy, as `fit`'s, when there is neither."""
    check_method(config, model)
    if not reads_target(config) and image_weights is None:
        return CrossEntropy(config.label_smoothing)
    width = model.bottleneck or model.backbone.feature_dim
    return Adaptation(
        transfer_term(config.adaptation, width),
        weight=config.transfer_weight,
        label_smoothing=config.label_smoothing,
        image_weights=image_weights,
        class_weighting=config.source_weighting == "classes",
        num_classes=model.num_classes,
    )


def adapt_batchnorm(
    model: TransferModel, source: PreparedData, target: PreparedData, config: FitConfig, device: str
) -> None:
    """AdaBN: every BatchNorm layer's statistics aligned so that the target's clean training images are
    normalised as the source's were (see adabn.py); IMAGES of each, drawn with the run's seed."""
    normalizer = Normalizer(model.backbone.preprocessing, config.channels_last)
    generator = torch.Generator().manual_seed(config.seed)

    def sample(data: PreparedData) -> torch.Tensor:
        images = data.splits["train"].images
        return normalizer(images[torch.randperm(len(images), generator=generator)[:IMAGES]], device=device)

    align_batchnorm(model, sample(source), sample(target))


def describe_adaptation(config: FitConfig, target: PreparedData) -> str:
    sizes = {split: len(decoded.labels) for split, decoded in target.splits.items()}
    aligned = f"{config.adaptation} on a {config.bottleneck}-wide bottleneck, weight {config.transfer_weight:g}"
    what = {
        "none": "none (the source alone)",
        "adabn": "adabn (the source alone, then BatchNorm statistics aligned to the target)",
    }.get(config.adaptation, aligned)
    weighting = "" if config.source_weighting == "none" else f"; source weighted by {config.source_weighting}"
    labelled = "labelled test split" if has_labelled_test(target) else "no labelled test split"
    frozen = ""
    if config.strategy == "head" and config.adaptation in ALIGNING:
        frozen = " (strategy head: the backbone is frozen, so only the bottleneck can move towards the target)"
    name = config.target or "in memory"
    kept = {
        "source": "the source's validation loss (target labels are never read)",
        "dev": "the source's validation loss weighted towards the target (DEV)",
    }[config.validation]
    return f"adaptation: {what}{frozen}{weighting}; target {name}: {sizes}, {labelled}; checkpoint kept by {kept}"
