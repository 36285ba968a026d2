"""Scoring a model: the metrics on a hand-made case, and probabilities with and without the mirror-image average."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import TINY
from transferlab.backbones import create_backbone
from transferlab.data.transforms import Normalizer
from transferlab.evaluate import probabilities, score
from transferlab.model import TransferModel


def test_test_time_flip_averages_each_image_with_its_mirror() -> None:
    torch.manual_seed(0)
    model = TransferModel(create_backbone(TINY, pretrained=False), 4)
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    normalizer = Normalizer(model.backbone.preprocessing)
    plain = probabilities(model, images, normalizer)["label"]
    mirrored = probabilities(model, images.flip(-1), normalizer)["label"]
    model.test_time_flip = True
    both = probabilities(model, images, normalizer)["label"]
    assert torch.allclose(both, (plain + mirrored) / 2, atol=1e-6)
    assert not torch.allclose(plain, mirrored, atol=1e-4)  # the images are not symmetric: the average is real
    assert torch.allclose(both.sum(dim=1), torch.ones(5))


def test_score_on_a_hand_made_case() -> None:
    # true:      a  a  a  b  b  c      predicted: a  a  b  b  c  c
    probs = torch.tensor(
        [[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.1, 0.3, 0.6], [0.0, 0.1, 0.9]]
    )
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    scores = score(probs, labels, ["a", "b", "c"], names=[f"img{i}" for i in range(6)], top=5)
    assert scores["accuracy"] == pytest.approx(4 / 6) and scores["count"] == 6
    assert scores["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    per_class = scores["per_class"]
    assert (per_class["a"]["precision"], per_class["a"]["recall"]) == (1.0, pytest.approx(2 / 3))
    assert (per_class["b"]["precision"], per_class["b"]["recall"]) == (0.5, 0.5)
    assert (per_class["c"]["precision"], per_class["c"]["recall"]) == (0.5, 1.0)
    f1 = [2 * (2 / 3) / (1 + 2 / 3), 0.5, 2 * 0.5 / 1.5]
    assert scores["macro_f1"] == pytest.approx(sum(f1) / 3)
    # the wrong ones, the most confident first: img2 predicted b at 0.7, img4 c at 0.6
    assert [(row["image"], row["label"], row["predicted"], row["confidence"]) for row in scores["top_losses"]] == [
        ("img2", "a", "b", pytest.approx(0.7)),
        ("img4", "b", "c", pytest.approx(0.6)),
    ]


def test_the_mistakes_are_listed_most_confident_first_not_by_loss() -> None:
    """img0 gave its true class the least (0.05) but predicted with 0.50; img1 predicted with 0.90: the list and
    the confidence it prints read in the same order."""
    probs = torch.tensor([[0.05, 0.50, 0.45], [0.10, 0.90, 0.00], [0.80, 0.15, 0.05]])
    scores = score(probs, torch.tensor([0, 0, 1]), ["a", "b", "c"], names=["img0", "img1", "img2"])
    confidences = [row["confidence"] for row in scores["top_losses"]]
    assert [row["image"] for row in scores["top_losses"]] == ["img1", "img2", "img0"]
    assert confidences == sorted(confidences, reverse=True)
