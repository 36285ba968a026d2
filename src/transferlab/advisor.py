"""Choose the strategy from two measured facts about the target set: its size, and its similarity to the
data the backbone was pretrained on — and say why, with the numbers.

|            | similar        | dissimilar                               |
|------------|----------------|------------------------------------------|
| large      | train all      | train all (or scratch)                   |
| small      | head only      | the hard case: freeze less, augment more |

A large set trains every stage whatever its similarity, as CS231n's transfer notes advise. Freezing the stages
before the probe's peak, which this advisor once did for a large similar set, lost 3-5 points each of the
four times it fired, and where a target truly was similar every way of keeping the weights scored within
half a point (benchmarks/README.md, "The four situations" and "A similar verdict at 128 px").

Similarity is measured on the target images with the pretrained backbone, cheaply (one forward pass with
the pretrained weights and one with a random initialisation of the same architecture):
- linear-probe accuracy of every stage's pooled features: where it peaks is where the features stop being
  general and become too specific to the source;
- the probe accuracy of the final features against the same network randomly initialised: what the
  pretrained features are worth on this task;
- LogME of the final features, and how confidently the source classifier recognises the target images.

Given an unlabelled target domain as well, the advice adds how far it lies from the source on the same
pretrained features, and the adaptation method `adapt --method auto` would pick for it: both answers come
before any training, from the same cheap pass.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

from transferlab.adaptation.methods import batchnorms, choose_method, measure_shift
from transferlab.adaptation.shift import describe_shift
from transferlab.adaptation.target import sample_target
from transferlab.backbones import Backbone, create_backbone
from transferlab.config import resolve_device
from transferlab.data import PreparedData, load_source
from transferlab.data.sources import Source
from transferlab.data.splitting import draw_per_class
from transferlab.data.transforms import Normalizer
from transferlab.defaults import BASE_LR, STRONG_AUGMENT_BELOW
from transferlab.logistic import probe_hits
from transferlab.probe import stage_features
from transferlab.random_state import callers_random_state
from transferlab.run_backbone import open_backbone
from transferlab.sizing import MEASURED_SPLITS, image_size_for, prepare_for
from transferlab.train.features import FinalFeatures
from transferlab.transferability import logme

# Fewer labelled images per class than this is a "small" target set.
SMALL_PER_CLASS = 100
# The pretrained final features must beat the same architecture's random features by this many probe points,
# and score within PEAK_TOLERANCE of the best earlier stage (the features stay useful up to the top), for the target
# to count as similar. Strict on purpose: calling a dissimilar set similar freezes too much and loses accuracy
# (Lite0 on Fashion-MNIST, whose probe falls a little at the top, loses points frozen to partial:7), while
# the converse only trains more than needed.
MIN_TRANSFER_GAIN = 0.10
# On a large set, pretrained features that beat random ones by less than this are not worth keeping:
# training the structure from scratch wins (measured: digits, +0 points, and Fashion-MNIST 5-9, +4 points,
# from a tiny network trained on Fashion-MNIST 0-4: scratch beat every fine-tune by 2 to 4 points).
SCRATCH_BELOW_GAIN = 0.05
# Weights trained on this many images or more (ImageNet-1k has 1.28 M) are never given up for scratch: they
# keep their edge in fine-tuning even where their features probe no better than random ones, so the probe gain
# cannot tell when scratch would win. Measured (benchmarks/README.md, "Does the advisor decide the same way on
# every draw?"): ImageNet Lite0 on seven digits draws of 100 per class probes -3.0 to +2.0 points against
# random features (the tiny source's level where scratch won), yet `full` beat scratch on all seven.
LARGE_SOURCE_IMAGES = 1_000_000
# Stages within this many probe points of the best count as the peak.
PEAK_TOLERANCE = 0.01
# The backbone's learning rate against the head's, whatever the similarity. Dissimilar targets need the
# pretrained weights to move further than the classic 1/10 lets them; it is the backbone's own rate that
# counts, not its ratio to the head's (the sweep is in benchmarks/README.md, "Accuracy per strategy"). A
# similar verdict keeps it: on the one truly similar target measured, x0.6 scored within 0.2 points of the
# best strategy, while 1/10 lost 2 points on a set that read similar by chance (Fashion-MNIST at 128 px).
BACKBONE_LR_RATIO = 0.6
# The probes hold out a fifth of the labelled images they read (one fold of five), not the validation split
# that training carves (a tenth, data/splitting.py): on 100 validation images the margins' errors read 2-5
# points, and on one Fashion-MNIST draw the final stage probed 3 points above every other by chance, which
# read as similar and froze 8 stages (82.2% against full's 87%). Where a fifth holds fewer images per class than
# this, every fold is held out in turn (each image once). Every fold always: errors of 1-2 points, but 7.5 s of
# probes against 1.6 s on Fashion-MNIST at 100 per class (benchmarks/README.md, "Validation's share").
MIN_HELD_OUT_PER_CLASS = 10
# The evidence is measured on at most this many images per class, to keep its cost small.
EVIDENCE_PER_CLASS = 100


@dataclass(frozen=True)
class Evidence:
    """What was measured, all of it JSON-able."""

    images_per_class: int
    total_images: int
    small_below: int
    stage_names: list[str]
    stage_probe: list[float]
    random_probe: float
    logme_pretrained: float
    logme_random: float
    source_confidence: float | None
    peak_stage: int
    seconds: float
    # The standard errors of the two margins the decision reads, from the probes' paired hits on the same
    # held-out images: 200 held-out images put them at 1-3 points, as large as the margins themselves.
    transfer_gain_se: float = 0.0
    top_drop_se: float = 0.0
    # How many labelled images the pretrained weights were trained on (None: not known, as for a weights file).
    source_images: int | None = None

    # Rounded: accuracies are counts over the same images, and 0.84 - 0.79 in floating point lands a hair
    # under the 0.05 it equals, which once sent a Fashion-MNIST draw to scratch.
    @property
    def transfer_gain(self) -> float:
        return round(self.stage_probe[-1] - self.random_probe, 9)

    @property
    def large_source(self) -> bool:
        return self.source_images is not None and self.source_images >= LARGE_SOURCE_IMAGES

    @property
    def top_drop(self) -> float:
        """How far the final features' probe falls below the best earlier stage's (negative: above it)."""
        return round(max(self.stage_probe[:-1]) - self.stage_probe[-1], 9)


@dataclass(frozen=True)
class Advice:
    situation: str
    strategy: str
    freeze_stages: int | None
    lr: float
    backbone_lr_ratio: float
    augment: str
    evidence: Evidence
    explanation: str
    # Given a target domain: the shift measured to it and the method chosen (keys as `fit` writes them to
    # advice.json: domain_accuracy, proxy_a_distance, images_per_domain, method, why).
    adaptation: dict[str, Any] | None = None
    # The margins the decision read that lie within one standard error of their threshold, in words.
    close_calls: tuple[str, ...] = ()
    # What the measuring computed that training can reuse; not part of the advice itself.
    final_features: FinalFeatures | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        evidence = asdict(self.evidence) | {
            "transfer_gain": self.evidence.transfer_gain,
            "top_drop": self.evidence.top_drop,
        }
        own = ("evidence", "adaptation", "final_features")
        plain = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in own}
        # Without a target the key is left out: fit's advice.json then reads as it did before.
        adaptation = {} if self.adaptation is None else {"adaptation": self.adaptation}
        return plain | {"evidence": evidence} | adaptation


def peak_stage(stage_probe: list[float]) -> int:
    """The first stage whose probe accuracy is within PEAK_TOLERANCE of the best: where the features peak."""
    best = max(stage_probe)
    return next(i for i, accuracy in enumerate(stage_probe) if accuracy >= best - PEAK_TOLERANCE)


def _features(backbone: Backbone, data: PreparedData, seed: int, device: str) -> tuple[list, list, Any, Any]:
    train, val = data.splits["train"], data.splits["val"]
    pick = torch.from_numpy(draw_per_class(train.labels.numpy(), EVIDENCE_PER_CLASS, np.random.default_rng(seed)))
    normalizer = Normalizer(backbone.preprocessing)
    train_feats = stage_features(backbone, train.images[pick], normalizer, device=device)
    val_feats = stage_features(backbone, val.images, normalizer, device=device)
    return train_feats, val_feats, train.labels[pick].numpy(), val.labels.numpy()


def _probes(pairs: list[tuple[np.ndarray, np.ndarray]], train_y: np.ndarray, val_y: np.ndarray) -> list[np.ndarray]:
    """Each (train features, val features) pair's probe hits on held-out images of both splits, in the same image
    order for every pair: a stratified fifth of them, or each fifth in turn (each image held out once) where a
    fifth is tiny; every probe (and fold) is fitted in one batch."""
    y = np.concatenate([train_y, val_y])
    folds = list(StratifiedKFold(n_splits=min(5, int(np.bincount(y).min())), shuffle=True, random_state=0).split(y, y))
    if np.bincount(y[folds[0][1]]).min() >= MIN_HELD_OUT_PER_CLASS:
        folds = folds[:1]  # enough held out to tell stages apart (see MIN_HELD_OUT_PER_CLASS)
    problems = []
    for train_x, val_x in pairs:
        x = np.concatenate([train_x, val_x])
        problems += [(x[fit], y[fit], x[held], y[held]) for fit, held in folds]
    hits = probe_hits(problems)
    return [np.concatenate(hits[i * len(folds) : (i + 1) * len(folds)]) for i in range(len(pairs))]


def top_drop_error(stage_hits: list[np.ndarray]) -> float:
    """The standard error of Evidence.top_drop, from each stage's hits on the held-out images: paired against
    the best earlier stage. Against the best stage of all, a final stage that is itself the best would read a
    drop of 0.0 ± 0.0, as certain as no measurement on 200 images is (Lite2's on one Fashion-MNIST draw did,
    and the advisor froze six stages for it: 3.65 points below `full`)."""
    earlier = int(np.argmax([hits.mean() for hits in stage_hits[:-1]]))
    return paired_error(stage_hits[earlier], stage_hits[-1])


def paired_error(first: np.ndarray, second: np.ndarray) -> float:
    """The standard error of mean(first) - mean(second), two probes' hits on the same images: paired, so the
    images both get right or both get wrong cost nothing."""
    difference = first.astype(np.float64) - second.astype(np.float64)
    return float(difference.std(ddof=1) / np.sqrt(len(difference))) if len(difference) > 1 else 0.0


def _source_confidence(backbone: Backbone, final_features: np.ndarray) -> float | None:
    if backbone.source_classifier is None:
        return None
    logits = backbone.source_classifier.logits(torch.from_numpy(final_features).float())
    return float(logits.softmax(dim=1).max(dim=1).values.mean())


def _measure(pretrained: Backbone, data: PreparedData, seed: int, device: str) -> tuple[Evidence, FinalFeatures]:
    """The evidence, and the pretrained final features it was read from."""
    start = time.monotonic()
    torch.manual_seed(seed)
    pretrained = pretrained.to(device)
    random_init = create_backbone(pretrained.name, pretrained=False).to(device)
    train_x, val_x, train_y, val_y = _features(pretrained, data, seed, device)
    random_train, random_val, _, _ = _features(random_init, data, seed, device)
    *stage_hits, random_hits = _probes(
        [*zip(train_x, val_x, strict=True), (random_train[-1], random_val[-1])], train_y, val_y
    )
    stage_probe = [float(hits.mean()) for hits in stage_hits]
    labels = torch.cat([data.splits["train"].labels, data.splits["val"].labels])
    counts = torch.bincount(labels, minlength=len(data.classes))
    images, features = {"val": data.splits["val"].images}, {"val": val_x[-1]}
    if len(train_y) == len(data.splits["train"].labels):  # drawn per class, sorted: every image, in order
        images["train"], features["train"] = data.splits["train"].images, train_x[-1]
    evidence = Evidence(
        images_per_class=int(counts.min()),
        total_images=int(counts.sum()),
        small_below=SMALL_PER_CLASS,
        stage_names=pretrained.stage_names,
        stage_probe=stage_probe,
        random_probe=float(random_hits.mean()),
        logme_pretrained=logme(train_x[-1], train_y),
        logme_random=logme(random_train[-1], train_y),
        source_confidence=_source_confidence(pretrained, np.concatenate([train_x[-1], val_x[-1]])),
        peak_stage=peak_stage(stage_probe),
        seconds=round(time.monotonic() - start, 2),
        transfer_gain_se=paired_error(stage_hits[-1], random_hits),
        top_drop_se=top_drop_error(stage_hits),
        source_images=pretrained.pretraining_images,
    )
    return evidence, FinalFeatures(images, features)


def decide(evidence: Evidence, optimizer: str = "adamw") -> Advice:
    """The situation, the strategy and its freeze depth, the learning rate and augmentation, explained."""
    small = evidence.images_per_class < SMALL_PER_CLASS
    # Similar only beyond the probes' noise: a margin within one standard error counts against it, because
    # calling a small dissimilar set similar freezes it all (the costly mistake), while the converse only
    # trains more than needed. The same task drawn twice then gets the same, safer decision.
    similar = (
        evidence.transfer_gain - evidence.transfer_gain_se >= MIN_TRANSFER_GAIN
        and evidence.top_drop + evidence.top_drop_se <= PEAK_TOLERANCE
    )
    if small and similar:
        situation, freeze = "small and similar", None
    elif small:
        # Freeze less: only the first stage, whose edge and colour filters suit any image. Measured on the
        # three small cells of benchmarks/situations.py, the shallowest freeze was within noise of the best.
        situation, freeze = "small and dissimilar", 1
    else:  # every stage trains, similar or not: see the module's docstring
        situation, freeze = f"large and {'similar' if similar else 'dissimilar'}", 0
    strategy = {None: "head", 0: "full"}.get(freeze, f"partial:{freeze}")
    ratio = BACKBONE_LR_RATIO
    # Scratch as well only beyond the noise: pretrained weights are the safer side (scratch on a
    # Fashion-MNIST draw of 100 per class scores about 75% against full's 87%).
    scratch_read = freeze == 0 and not evidence.large_source
    if scratch_read and evidence.transfer_gain + evidence.transfer_gain_se < SCRATCH_BELOW_GAIN:
        strategy, ratio = "scratch", 1.0
    augment = "strong" if (small and not similar) or evidence.images_per_class < STRONG_AUGMENT_BELOW else "light"
    close = close_calls(evidence, scratch_read)
    advice = Advice(situation, strategy, freeze, BASE_LR[optimizer], ratio, augment, evidence, "", None, close)
    return replace(advice, explanation=explain(advice))


def close_calls(evidence: Evidence, scratch_read: bool) -> tuple[str, ...]:
    """Each margin the decision read that lies within one standard error of its threshold, in words, with
    what was done about it."""
    gain, gain_se = 100 * evidence.transfer_gain, 100 * evidence.transfer_gain_se
    drop, drop_se = 100 * evidence.top_drop, 100 * evidence.top_drop_se
    margins = [
        ("the transfer gain", gain, gain_se, 100 * MIN_TRANSFER_GAIN, "similar's", "counted against similarity"),
        (
            "the final features' drop below the best earlier stage",
            drop,
            drop_se,
            100 * PEAK_TOLERANCE,
            "similar's",
            "counted against similarity",
        ),
    ]
    if scratch_read:
        margins.append(
            ("the transfer gain", gain, gain_se, 100 * SCRATCH_BELOW_GAIN, "scratch's", "counted against scratch")
        )
    return tuple(
        f"{name} ({value:+.1f} ± {error:.1f} points) is within one standard error of {rule} {threshold:g}: {done}"
        for name, value, error, threshold, rule, done in margins
        if abs(value - threshold) < error
    )


def explain(advice: Advice) -> str:
    e = advice.evidence
    names = e.stage_names
    size = "small" if e.images_per_class < e.small_below else "large"
    curve = ", ".join(f"{n} {100 * a:.1f}" for n, a in zip(names, e.stage_probe, strict=True))
    lines = [
        f"size: {e.images_per_class} labelled images per class ({e.total_images} in all) -> {size} "
        f"(small below {e.small_below} per class)",
        f"similarity: a linear probe on the pretrained final features scores {100 * e.stage_probe[-1]:.1f}% on "
        f"held-out images, against {100 * e.random_probe:.1f}% for the same network randomly initialised "
        f"({100 * e.transfer_gain:+.1f} ± {100 * e.transfer_gain_se:.1f} points; similar needs >= "
        f"{100 * MIN_TRANSFER_GAIN:.0f} beyond one standard error); "
        f"LogME {e.logme_pretrained:.3f} vs {e.logme_random:.3f}",
        f"probe accuracy per stage (%): {curve}",
        f"the probe peaks at stage {e.peak_stage} ({names[e.peak_stage]}) of {len(names)}; the final features score "
        f"{100 * abs(e.top_drop):.1f} ± {100 * e.top_drop_se:.1f} points {'above' if e.top_drop < 0 else 'below'} "
        "the best earlier stage: "
        + (
            "the features stay useful up to the top"
            if e.top_drop + e.top_drop_se <= PEAK_TOLERANCE
            else "the stages above it may be too specific to the source "
            f"(similar needs <= {100 * PEAK_TOLERANCE:.0f} beyond one standard error)"
        ),
    ]
    lines.append(f"source: {_source_size(e)}")
    if e.source_confidence is not None:
        lines.append(f"the source classifier's mean top probability on these images: {e.source_confidence:.2f}")
    frozen = "" if advice.freeze_stages in (None, 0) else f", freezing {', '.join(names[: advice.freeze_stages])}"
    if advice.situation == "large and similar":
        frozen = ": a large set trains every stage, similar or not (freezing part lost 3-5 points wherever measured)"
    if advice.strategy == "scratch":
        frozen = (
            f": the pretrained features beat random ones by less than {100 * SCRATCH_BELOW_GAIN:.0f} points "
            "beyond one standard error, so the structure trains from scratch"
        )
    rates = f"lr {advice.lr:g}"
    if advice.strategy != "head":
        rates += f" (backbone x{advice.backbone_lr_ratio:g})"
    lines.append(
        f"decision: {advice.situation} -> {advice.strategy}{frozen}; augmentation {advice.augment}, "
        f"{rates} [measured in {e.seconds:.1f} s]"
    )
    if advice.close_calls:
        lines.append(
            "a close call: " + "; ".join(advice.close_calls) + " (within noise the safer verdicts win: dissimilar, "
            "which trains more rather than freezing too much, and pretrained weights rather than scratch); more "
            "labelled images would settle it"
        )
    return "\n".join(lines)


def _source_size(e: Evidence) -> str:
    """How many images the weights were trained on, and what it means for scratch, in words."""
    if e.source_images is None:
        seen = "weights trained on an unknown number of images"
    else:
        seen = f"weights trained on {e.source_images:,} images"
    if e.large_source:
        return f"{seen}, a large source: its weights are kept, whatever the probes say against random ones"
    return (
        f"{seen} (large from {LARGE_SOURCE_IMAGES:,}): on a large set, scratch if its features beat random ones "
        f"by less than {100 * SCRATCH_BELOW_GAIN:.0f} points"
    )


def advise(backbone: Backbone, data: PreparedData, seed: int = 0, device: str = "cpu") -> Advice:
    """Measure, then decide; the advice carries the final features measured, for the warm start to reuse."""
    evidence, final = _measure(backbone, data, seed, device)
    return replace(decide(evidence), final_features=final)


@callers_random_state()
def advise_source(
    source: Source,
    backbone_name: str,
    *,
    weights: str | None = None,
    image_size: int | None = None,
    per_class: int | None = None,
    task: str | None = None,
    seed: int = 0,
    device: str = "auto",
    target: Source | None = None,
) -> Advice:
    """`transferlab advise`: load and decode `source` as `fit` would, then measure and decide; with an
    unlabelled `target` domain, also measure the shift to it and choose the adaptation method. `task` names the
    label column of a multi-task CSV manifest to advise for (default: its `label`)."""
    dataset = load_source(source, tasks=[task] if task else None, per_class=per_class, seed=seed)
    backbone = open_backbone(backbone_name, weights=weights)
    size = image_size_for(dataset, backbone, image_size)
    data = prepare_for(dataset, backbone, size, MEASURED_SPLITS)
    device = resolve_device(device)
    advice = advise(backbone, data, seed, device)
    if target is None:
        return advice
    target_data = sample_target(target, data.classes, size, backbone.preprocessing.interpolation, seed)
    return _with_adaptation(advice, backbone, data, target_data, seed, device)


def _with_adaptation(
    advice: Advice, pretrained: Backbone, source: PreparedData, target: PreparedData, seed: int, device: str
) -> Advice:
    """`advice` plus the domain shift from `source` to `target` on the `pretrained` features, and the method
    that `adapt --method auto` would choose from it (the same measurement and rule)."""
    shift = measure_shift(pretrained, source, target, seed, device)
    method, why = choose_method(shift, bool(batchnorms(pretrained)))
    lines = [
        f"domain shift, on {len(shift.source_rows)} source and {len(target.splits['train'].labels)} target training "
        f"images: {describe_shift(shift.classifier)}",
        f"adaptation method: {method} ({why})",
    ]
    return replace(
        advice,
        adaptation=shift.to_json() | {"method": method, "why": why},
        explanation="\n".join([advice.explanation, *lines]),
    )
