"""TransferClassifier inside scikit-learn: parameters, clone, cross-validation, grid search, pipelines, and the
estimator checks that apply to an estimator of images. Tiny backbone, real digits, real fits."""

from __future__ import annotations

import inspect
import tempfile
import warnings
from dataclasses import fields

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import SkipTestWarning
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils import estimator_checks

from tests.conftest import TINY
from transferlab.classifier import TransferClassifier
from transferlab.config import FitConfig
from transferlab.errors import ConfigError, TransferlabError

# The estimator checks that need no data, or only an unfitted estimator: each must pass.
API_CHECKS = [
    "check_estimator_cloneable",
    "check_estimator_tags_renamed",
    "check_valid_tag_types",
    "check_estimator_repr",
    "check_no_attributes_set_in_init",
    "check_do_not_raise_errors_in_init_or_set_params",
    "check_mixin_order",
    "check_get_params_invariance",
    "check_set_params",
    "check_parameters_default_constructible",
    "check_estimators_unfitted",
]


def _tiny(tiny_weights, **changes) -> TransferClassifier:
    settings = {"backbone": TINY, "weights": str(tiny_weights), "strategy": "head", "image_size": 32, "epochs": 10}
    settings["lr"] = 0.01  # a linear head on a tiny random backbone: 3 epochs at 1e-3 stay at chance
    return TransferClassifier(**(settings | changes))


@pytest.fixture(scope="module")
def small(digits):
    images, labels = digits
    return images[:150], labels[:150]


def test_the_parameters_are_fit_config_settings_with_its_defaults() -> None:
    parameters = inspect.signature(TransferClassifier.__init__).parameters
    defaults = {f.name: f.default for f in fields(FitConfig)}
    for name, parameter in parameters.items():
        if name not in ("self", "config"):
            assert parameter.default == defaults[name], name  # one place for each default: FitConfig
    assert TransferClassifier(strategy="full", config={"label_smoothing": 0.0}).fit_config() == FitConfig(
        strategy="full", label_smoothing=0.0
    )
    with pytest.raises(ConfigError, match="set strategy as the estimator's parameter"):
        TransferClassifier(config={"strategy": "full"}).fit_config()


def test_get_params_set_params_and_clone(tiny_weights) -> None:
    clf = _tiny(tiny_weights, config={"label_smoothing": 0.0})
    twin = clone(clf)
    assert twin is not clf and twin.get_params() == clf.get_params()
    assert twin.set_params(strategy="partial:3") is twin and twin.strategy == "partial:3"
    assert clf.strategy == "head"


@pytest.mark.parametrize("name", API_CHECKS)
def test_the_estimator_checks_that_apply_pass(name) -> None:
    getattr(estimator_checks, name)(TransferClassifier.__name__, TransferClassifier())


def test_check_estimator_skips_its_table_checks_for_an_estimator_of_images() -> None:
    # The rest of scikit-learn's checks fit random 2-D float tables, which are not images: the tags say so, and
    # check_estimator skips them. test_the_estimator_checks_that_apply_pass runs the ones that need no data.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimator_checks.check_estimator(TransferClassifier())
    assert any(issubclass(w.category, SkipTestWarning) for w in caught)


def test_fit_on_images_and_labels_keeps_the_labels_as_given_and_leaves_no_temporary_run(
    small, tiny_weights, tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the temporary run dir would be left
    images, labels = small
    names = np.array(["zero", "one", "two"])[labels]
    clf = _tiny(tiny_weights)
    assert clf.fit(images, names) is clf
    assert clf.classes_.tolist() == ["one", "two", "zero"]  # sorted, as scikit-learn orders them
    assert set(clf.predict(images[:10])) <= set(names)
    assert clf.run_dir_ is None and list(tmp_path.iterdir()) == []
    assert clf.get_params() == _tiny(tiny_weights).get_params()  # fit changed no parameter
    with pytest.raises(TransferlabError, match="give images with their labels"):
        clf.fit(images)


def test_fit_on_image_files_and_labels(small, tiny_weights, tmp_path) -> None:
    from PIL import Image

    images, labels = small
    paths = []
    for i, image in enumerate(images[:60]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(image).save(paths[-1])
    clf = _tiny(tiny_weights).fit([str(p) for p in paths], labels[:60])
    assert clf.classes_.tolist() == [0, 1, 2]
    assert len(clf.predict([str(p) for p in paths[:5]])) == 5


def test_cross_val_score_and_a_pipeline(small, tiny_weights) -> None:
    images, labels = small
    scores = cross_val_score(_tiny(tiny_weights), images, labels, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.5  # three classes: chance is 1/3
    invert = FunctionTransformer(lambda batch: 255 - batch)
    pipeline = Pipeline([("invert", invert), ("classify", _tiny(tiny_weights))]).fit(images, labels)
    assert pipeline.score(images, labels) == np.mean(pipeline.predict(images) == labels)


@pytest.mark.slow
def test_grid_search_over_the_strategy(small, tiny_weights) -> None:
    images, labels = small
    search = GridSearchCV(_tiny(tiny_weights), {"strategy": ["head", "partial:3"]}, cv=2).fit(images, labels)
    assert [row["strategy"] for row in search.cv_results_["params"]] == ["head", "partial:3"]
    assert search.best_params_["strategy"] in ("head", "partial:3")
    assert search.best_estimator_.strategy == search.best_params_["strategy"]
    assert search.score(images, labels) > 0.5
