"""The advisor: the decision rule on each of the four situations, real measurement on real data, and
`fit --strategy auto` training what it chose."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.conftest import TINY
from transferlab.advisor import (
    BACKBONE_LR_RATIO,
    SMALL_PER_CLASS,
    Evidence,
    _probes,
    advise,
    advise_source,
    decide,
    paired_error,
    peak_stage,
    top_drop_error,
)
from transferlab.backbones import create_backbone
from transferlab.config import FitConfig
from transferlab.data import load_source, prepare
from transferlab.fitting import fit

STAGES = ["stem", "b0", "b1", "b2", "b3", "b4", "head"]


def _evidence(per_class: int, curve: list[float], random_probe: float) -> Evidence:
    return Evidence(
        images_per_class=per_class,
        total_images=per_class * 10,
        small_below=SMALL_PER_CLASS,
        stage_names=STAGES,
        stage_probe=curve,
        random_probe=random_probe,
        logme_pretrained=1.0,
        logme_random=0.1,
        source_confidence=0.8,
        peak_stage=peak_stage(curve),
        seconds=1.0,
    )


RISING = [0.40, 0.50, 0.60, 0.70, 0.80, 0.85, 0.90]  # useful up to the top: similar
PEAKED = [0.40, 0.60, 0.75, 0.70, 0.65, 0.62, 0.60]  # best at b1, specific above: dissimilar
TOP_FALLS = [0.54, 0.685, 0.745, 0.795, 0.815, 0.855, 0.83]


@pytest.mark.parametrize(
    ("per_class", "curve", "random_probe", "situation", "strategy", "ratio"),
    [
        (10, RISING, 0.50, "small and similar", "head", BACKBONE_LR_RATIO),
        (500, RISING, 0.50, "large and similar", "full", BACKBONE_LR_RATIO),
        (500, PEAKED, 0.50, "large and dissimilar", "full", BACKBONE_LR_RATIO),
        (10, PEAKED, 0.50, "small and dissimilar", "partial:1", BACKBONE_LR_RATIO),
        # far better than random (+17.5) but falling 2.5 points at the top, as Lite0's on Fashion-MNIST does
        (500, TOP_FALLS, 0.655, "large and dissimilar", "full", BACKBONE_LR_RATIO),
        # a rising curve whose final features barely beat random ones is no evidence of similarity
        (500, RISING, 0.85, "large and dissimilar", "full", BACKBONE_LR_RATIO),
        # pretrained features worth almost nothing on a large set: the structure trains from scratch
        (500, PEAKED, 0.58, "large and dissimilar", "scratch", 1.0),
    ],
)
def test_the_four_situations(per_class, curve, random_probe, situation, strategy, ratio) -> None:
    evidence = _evidence(per_class, curve, random_probe)
    advice = decide(evidence)
    assert (advice.situation, advice.strategy, advice.backbone_lr_ratio) == (situation, strategy, ratio)
    assert advice.augment == ("strong" if per_class < 50 else "light")
    # the explanation carries the numbers it decided on
    assert f"{per_class} labelled images per class" in advice.explanation
    assert f"{100 * curve[-1]:.1f}%" in advice.explanation and situation in advice.explanation


def test_the_peak_is_the_first_stage_within_a_point_of_the_best() -> None:
    assert peak_stage(RISING) == 6 and peak_stage(PEAKED) == 2
    assert peak_stage([0.40, 0.795, 0.80, 0.70]) == 1  # 0.795 is within 0.01 of 0.80: the earlier stage
    assert peak_stage([0.40, 0.789, 0.80, 0.70]) == 2


def test_a_large_set_that_reads_similar_trains_every_stage() -> None:
    # Lite0's probes on Fashion-MNIST seed 0 at 128 px: the final stage 2.5 ± 2.8 points above blocks.5, a
    # similar verdict that froze 8 stages at x0.1 (83.2% on the test images) where `full` x0.6 scores 87.4%
    curve = [0.55, 0.55, 0.705, 0.77, 0.745, 0.80, 0.815, 0.815, 0.84]
    names = ["stem", *(f"blocks.{i}" for i in range(7)), "head"]
    reading = replace(
        _evidence(100, curve, 0.645), stage_names=names, transfer_gain_se=0.036, top_drop_se=0.028, peak_stage=8
    )
    advice = decide(reading)
    assert (advice.situation, advice.strategy, advice.freeze_stages) == ("large and similar", "full", 0)
    assert advice.backbone_lr_ratio == BACKBONE_LR_RATIO == 0.6
    assert "a large set trains every stage, similar or not" in advice.explanation
    assert "freezing stem" not in advice.explanation


def test_a_final_stage_that_is_itself_the_best_is_measured_against_the_best_earlier_one() -> None:
    # Lite2's probes on a Fashion-MNIST draw, on 200 validation images: blocks.5 82.5%, the final stage 83.0%.
    # The two disagree on 21 images, 11 of them in the final stage's favour: a margin chance alone gives.
    rng = np.random.default_rng(0)
    earlier = np.r_[np.ones(165), np.zeros(35)].astype(np.int64)
    final = earlier.copy()
    final[:10], final[165:176] = 0, 1
    hits = [*((rng.random(200) < 0.6).astype(np.int64) for _ in range(5)), earlier, final]  # 7 stages
    evidence = replace(_evidence(500, [float(h.mean()) for h in hits], 0.5), top_drop_se=top_drop_error(hits))
    assert evidence.top_drop == pytest.approx(-0.005)
    assert evidence.top_drop_se == pytest.approx(paired_error(earlier, final)) and evidence.top_drop_se > 0.02
    advice = decide(evidence)  # against the best stage of all (itself), it read 0.0 ± 0.0 and froze stages
    assert advice.situation == "large and dissimilar" and advice.strategy == "full"
    assert "the final features score 0.5 ± 2.3 points above the best earlier stage" in advice.explanation


def test_similarity_must_stand_beyond_the_probes_noise_and_a_close_call_is_said() -> None:
    # The final stage within a point of the best (as one draw of Fashion-MNIST PNGs measured): similar on
    # the point estimate, but not beyond one standard error of 1.5 points, so the safer verdict, dissimilar.
    curve = [0.40, 0.50, 0.60, 0.70, 0.80, 0.855, 0.85]
    clear = decide(replace(_evidence(500, curve, 0.5), peak_stage=5))
    assert clear.situation == "large and similar" and not clear.close_calls
    noisy = decide(replace(_evidence(500, curve, 0.5), peak_stage=5, top_drop_se=0.015))
    assert (noisy.situation, noisy.strategy) == ("large and dissimilar", "full")
    assert noisy.close_calls == (
        "the final features' drop below the best earlier stage (+0.5 ± 1.5 points) is within one standard error of "
        "similar's 1: counted against similarity",
    )
    assert "a close call: the final features' drop" in noisy.explanation
    # a gain of +11 points, whose error reaches below the 10 that similarity needs
    assert decide(replace(_evidence(500, RISING, 0.79), transfer_gain_se=0.02)).situation == "large and dissimilar"
    assert decide(replace(_evidence(500, RISING, 0.79), transfer_gain_se=0.005)).situation == "large and similar"
    # scratch, too, only beyond the noise: a +5.0 ± 2.9 gain (a real Fashion-MNIST draw) keeps the weights
    draw = replace(_evidence(500, [*PEAKED[:-1], 0.84], 0.79), transfer_gain_se=0.029)
    assert draw.transfer_gain == 0.05 and decide(draw).strategy == "full"
    assert decide(replace(draw, random_probe=0.82, transfer_gain_se=0.01)).strategy == "scratch"


def test_a_large_source_is_never_given_up_for_scratch() -> None:
    # ImageNet Lite0 on digits draws of 100 per class: -3.0 ± 2.1 to +2.0 ± 2.1 points over random features,
    # as little as the tiny source's gain where scratch won; yet a fine-tune beat scratch on every draw.
    draw = replace(_evidence(500, [*PEAKED[:-1], 0.95], 0.93), transfer_gain_se=0.021)
    assert decide(draw).strategy == "scratch"  # weights of unknown provenance: the small source's rule
    assert decide(replace(draw, source_images=30_000)).strategy == "scratch"
    for random_probe in (0.93, 0.98):  # +2.0 and -3.0 points
        imagenet = decide(replace(draw, source_images=1_281_167, random_probe=random_probe))
        assert (imagenet.strategy, imagenet.backbone_lr_ratio) == ("full", BACKBONE_LR_RATIO)
        assert "weights trained on 1,281,167 images, a large source: its weights are kept" in imagenet.explanation
        assert not any("scratch's" in call for call in imagenet.close_calls)


def test_the_paired_error_counts_only_the_images_two_probes_disagree_on() -> None:
    both = np.array([True] * 90 + [False] * 10)
    assert paired_error(both, both) == 0.0  # the same hits: no doubt about the difference
    flipped = both.copy()
    flipped[:10] = False  # 10 of 100 images turn wrong: a difference of 0.1
    assert paired_error(both, flipped) == pytest.approx(np.std([1.0] * 10 + [0.0] * 90, ddof=1) / 10)


def test_probes_hold_out_a_fifth_of_every_labelled_image_not_the_training_validation_split() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 100)  # 100 a class: training keeps 90, validation 10
    features = labels[:, None] + rng.normal(0, 2, size=(300, 4))
    train, val = np.r_[0:90, 100:190, 200:290], np.r_[90:100, 190:200, 290:300]
    (hits,) = _probes([(features[train], features[val])], labels[train], labels[val])
    assert len(hits) == 60  # a fifth of the 300, 20 a class: not validation's 30
    small = np.r_[0:16, 100:116, 200:216], np.r_[16:20, 116:120, 216:220]  # 20 a class
    (each,) = _probes([(features[small[0]], features[small[1]])], labels[small[0]], labels[small[1]])
    assert len(each) == 60  # a fifth would hold 4 a class: every image held out once instead


def test_measure_on_real_data(digits, tiny_weights) -> None:
    data = prepare(load_source(digits, per_class=40), 32)
    evidence = advise(create_backbone(TINY, weights=tiny_weights), data).evidence
    assert evidence.images_per_class == 40 and evidence.total_images == 120
    assert evidence.stage_names[0] == "stem" and len(evidence.stage_probe) == len(evidence.stage_names)
    assert evidence.peak_stage == peak_stage(evidence.stage_probe)
    assert 0 <= evidence.transfer_gain_se < 0.2 and 0 <= evidence.top_drop_se < 0.2  # at most a few points
    assert max(evidence.stage_probe) > 0.6  # digits are easy: some stage's features beat chance (1/3) well
    assert json.dumps(decide(evidence).to_json())  # JSON-able, keys as the CLI promises


def test_advise_leaves_the_callers_random_state_as_it_found_it(digits, tiny_weights) -> None:
    torch.manual_seed(1234)
    without_advice = torch.rand(4)
    torch.manual_seed(1234)
    # it builds a backbone (random initialisation, then the weights) and seeds the probes
    advise_source(digits, TINY, weights=str(tiny_weights), image_size=32, per_class=40)
    assert torch.equal(torch.rand(4), without_advice)


def test_fit_auto_saves_the_advice_and_trains_its_choice(digits, tiny_weights, tmp_path) -> None:
    config = FitConfig(backbone=TINY, weights=str(tiny_weights), strategy="auto", image_size=32, epochs=1, per_class=40)
    result = fit(digits, config, tmp_path / "run", quiet=True)
    advice = json.loads((tmp_path / "run" / "advice.json").read_text())
    assert set(advice) >= {"situation", "strategy", "freeze_stages", "evidence"}
    saved = FitConfig.load(tmp_path / "run" / "config.yaml")
    assert result.strategy.name == advice["strategy"] == saved.strategy
    assert result.strategy.backbone_lr_ratio == advice["backbone_lr_ratio"] == saved.backbone_lr_ratio


def test_a_ratio_the_user_set_overrides_the_advisors(digits, tiny_weights, tmp_path) -> None:
    config = FitConfig(
        backbone=TINY, weights=str(tiny_weights), strategy="auto", image_size=32, epochs=1, per_class=40
    ).updated(backbone_lr_ratio=0.7)
    result = fit(digits, config, tmp_path / "run", quiet=True)
    assert (
        result.strategy.backbone_lr_ratio == 0.7 == FitConfig.load(tmp_path / "run" / "config.yaml").backbone_lr_ratio
    )
