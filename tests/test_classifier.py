"""The scikit-learn-shaped API: fit → predict, save → load → identical probabilities, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sklearn.exceptions
from PIL import Image

import transferlab
import transferlab.classifier
from tests.conftest import TINY, image_folder
from transferlab.classifier import NotFittedError, TransferClassifier
from transferlab.data import load_source
from transferlab.errors import TransferlabError


@pytest.fixture(scope="module")
def fitted(digits, tiny_weights, tmp_path_factory) -> TransferClassifier:
    clf = TransferClassifier(
        backbone=TINY, strategy="head", weights=str(tiny_weights), image_size=32, epochs=10, lr=0.01, per_class=40
    )
    return clf.fit(digits, out=tmp_path_factory.mktemp("run"))


def test_unfitted_estimator_refuses_to_predict_with_scikit_learn_s_error() -> None:
    with pytest.raises(NotFittedError, match="not fitted") as error:
        TransferClassifier().predict(np.zeros((1, 8, 8), np.uint8))
    assert isinstance(error.value, sklearn.exceptions.NotFittedError)


def test_learned_state_ends_in_underscore_and_classes_are_the_labels_as_given(fitted: TransferClassifier) -> None:
    assert fitted.classes_.tolist() == [0, 1, 2]  # ints in, ints out
    assert fitted.predict(np.zeros((2, 8, 8), np.uint8)).dtype.kind == "i"
    assert fitted.image_size_ == 32
    assert fitted.run_dir_.is_dir()


def test_save_load_predict_gives_identical_probabilities(fitted, digits, tmp_path) -> None:
    images = digits[0][:20]
    fitted.save(tmp_path / "saved")
    again = transferlab.load(tmp_path / "saved")
    assert np.array_equal(fitted.predict_proba(images), again.predict_proba(images))
    assert np.array_equal(again.predict(images), fitted.predict(images))
    assert again.classes_.tolist() == [0, 1, 2]  # saved with the model
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["model.json", "model.safetensors"]


def test_a_loaded_model_predicts_in_the_precision_it_is_asked_for(fitted, digits, tmp_path) -> None:
    images = digits[0][:20]
    fitted.save(tmp_path / "saved")
    exact = transferlab.load(tmp_path / "saved", inference_precision="32").predict_proba(images)
    fast = transferlab.load(tmp_path / "saved", inference_precision="bf16").predict_proba(images)
    assert exact.dtype == fast.dtype == np.float32
    assert not np.array_equal(exact, fast) and np.abs(exact - fast).max() < 0.05


def test_predict_paths_reports_a_corrupt_file_and_goes_on(fitted, digits, tmp_path) -> None:
    for i in range(3):
        Image.fromarray(digits[0][i]).save(tmp_path / f"good{i}.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    rows = list(fitted.predict_paths([tmp_path, tmp_path / "missing.png"], top_k=2))
    good = [r for r in rows if "top" in r]
    bad = {Path(r["path"]).name: r["error"] for r in rows if "error" in r}
    assert len(good) == 3 and all(len(r["top"]) == 2 for r in good)
    probs = [t["prob"] for t in good[0]["top"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert set(bad) == {"broken.png", "missing.png"}


def test_score_is_accuracy_of_predict_and_a_source_without_a_test_split_is_refused(fitted, digits) -> None:
    images, labels = digits
    accuracy = fitted.score(images, labels)
    assert accuracy == np.mean(fitted.predict(images) == labels)
    assert accuracy > 0.6  # three classes: chance is 1/3
    scores = fitted.evaluate(digits, split="all")
    assert scores["count"] == len(labels) and scores["accuracy"] == pytest.approx(accuracy)
    assert set(scores) >= {"accuracy", "macro_f1", "per_class", "confusion", "top_losses"}
    with pytest.raises(TransferlabError, match="no test split to score"):
        fitted.score(digits)  # it would score training images


def test_score_on_a_source_reads_it_once_and_scores_its_test_split(fitted, digits, tmp_path, monkeypatch) -> None:
    folder = image_folder(tmp_path, *digits)
    reads = []

    def counted(*args, **kwargs):
        reads.append(args[0])
        return load_source(*args, **kwargs)

    monkeypatch.setattr(transferlab.classifier, "load_source", counted)
    accuracy = fitted.score(folder)
    assert reads == [folder]
    assert accuracy == fitted.evaluate(folder, split="test")["accuracy"] > 0.6
