"""Stage probes on real data (scikit-learn's digits) through the tiny registered EfficientNet."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from tests.conftest import TINY
from transferlab.backbones import create_backbone
from transferlab.data import load_source, prepare
from transferlab.data.transforms import Normalizer
from transferlab.logistic import training_span
from transferlab.probe import (
    ProbeReport,
    format_probe_table,
    plot_probe,
    probe_stages,
    stage_features,
)


@pytest.fixture(scope="module")
def prepared():
    return prepare(load_source("digits", per_class=30), 32)


@pytest.fixture
def backbone():
    torch.manual_seed(0)
    return create_backbone(TINY, pretrained=False)


def test_stage_features_runs_each_stage_once_per_batch_and_ends_in_the_pooled_features(prepared, backbone) -> None:
    images = prepared.splits["train"].images[:40]
    sizes: list[list[int]] = [[] for _ in backbone.stages]
    for index, stage in enumerate(backbone.stages):
        stage.register_forward_hook(lambda _m, inputs, _out, index=index: sizes[index].append(len(inputs[0])))
    normalizer = Normalizer(backbone.preprocessing)

    features = stage_features(backbone, images, normalizer, batch_size=16)

    # 40 images in batches of 16: 3 batches, one pass each (one-image passes: the BatchNorm fold's example)
    assert all([n for n in seen if n > 1] == [16, 16, 8] for seen in sizes)
    assert backbone.training  # the caller's mode is restored
    assert [f.shape for f in features] == [(40, f.shape[1]) for f in features]
    assert features[-1].shape[1] == backbone.feature_dim
    with torch.no_grad():
        expected = backbone.eval().forward_features(normalizer(images)).numpy()
    np.testing.assert_allclose(features[-1], expected, rtol=1e-4, atol=1e-5)


def test_probe_stages_scores_every_stage_above_chance_at_the_top(prepared, backbone, tmp_path) -> None:
    probes = probe_stages(backbone, prepared)

    assert [p.index for p in probes] == list(range(backbone.num_stages))
    assert [p.name for p in probes] == backbone.stage_names
    assert all(0.0 <= p.accuracy <= 1.0 and np.isfinite(p.logme) for p in probes)
    chance = 1 / len(prepared.classes)
    # Even random convolutions keep enough of 10 digit shapes for a linear probe to beat chance well.
    assert all(p.accuracy > 2 * chance for p in probes[-2:])

    report = ProbeReport("digits", TINY, backbone.weights_source, 32, probes)
    table = format_probe_table(report)
    assert all(p.name in table for p in probes) and len(table.splitlines()) == len(probes) + 2
    png = plot_probe(report, tmp_path / "probe.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_probe_in_the_training_span_predicts_as_on_the_full_features() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 10)
    centres = rng.normal(size=(4, 300))
    train = centres[labels] + 4 * rng.normal(size=(40, 300))  # 40 images, 300 features: n < d
    val = centres[labels] + 4 * rng.normal(size=(40, 300))
    small_train, small_val = training_span(train, val)
    assert small_train.shape == (40, 40) and small_val.shape == (40, 40)
    full = LogisticRegression(max_iter=5000, tol=1e-10).fit(train, labels)
    small = LogisticRegression(max_iter=5000, tol=1e-10).fit(small_train, labels)
    assert np.allclose(full.predict_proba(val), small.predict_proba(small_val), atol=1e-4)
    assert 0.5 < full.score(val, labels) < 1  # a real task, not a trivially separable one
