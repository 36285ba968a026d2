"""What a pretrained backbone's own ImageNet classifier sees in a picture: proof that its weights are real."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as tvf
from PIL import Image
from timm.data import ImageNetInfo
from torchvision.transforms import InterpolationMode

from transferlab.backbones.base import Backbone, Preprocessing
from transferlab.errors import BackboneError
from transferlab.inference import evaluating

# A PIL image, an H×W×3 uint8 array (as scikit-image gives) or a 3×H×W uint8 tensor (as torchvision gives).
ImageLike = Image.Image | np.ndarray | torch.Tensor

_IMAGENET_CLASSES = 1000


Prediction = tuple[int, str, float]  # (ImageNet class index, class name, probability)


@functools.cache
def _imagenet_info() -> ImageNetInfo:
    return ImageNetInfo()  # ships with timm: works offline


def imagenet_class_name(index: int) -> str:
    """The human-readable name of ImageNet-1k class `index`, e.g. 967 -> 'espresso'."""
    return _imagenet_info().index_to_description(index)


def top_k_source_predictions(backbone: Backbone, images: Sequence[ImageLike], k: int = 5) -> list[list[Prediction]]:
    """For each image, the k ImageNet classes the backbone's source classifier rates highest, best first."""
    classifier = backbone.source_classifier
    if classifier is None or classifier.weight.shape[0] != _IMAGENET_CLASSES:
        raise BackboneError(f"{backbone.name} (weights: {backbone.weights_source}) has no ImageNet-1k classifier")
    device = next(backbone.parameters()).device
    batch = torch.stack([preprocess(image, backbone.preprocessing) for image in images]).to(device)
    with evaluating(backbone), torch.inference_mode():  # BatchNorm must use its running statistics
        probs = classifier.logits(backbone(batch)).softmax(dim=-1)
    top = probs.topk(k, dim=-1)
    return [
        [(int(index), imagenet_class_name(int(index)), float(prob)) for prob, index in zip(row_p, row_i, strict=True)]
        for row_p, row_i in zip(top.values, top.indices, strict=True)
    ]


def preprocess(image: ImageLike, preprocessing: Preprocessing) -> torch.Tensor:
    """timm's eval transform: resize the shorter side to input_size / crop_pct, centre-crop, normalise."""
    size = preprocessing.input_size
    resized = tvf.resize(
        _to_uint8_chw(image),
        [math.floor(size / preprocessing.crop_pct)],
        interpolation=InterpolationMode(preprocessing.interpolation),
        antialias=True,
    )
    pixels = tvf.to_dtype(tvf.center_crop(resized, [size]), torch.float32, scale=True)
    return tvf.normalize(pixels, mean=list(preprocessing.mean), std=list(preprocessing.std))


def _to_uint8_chw(image: ImageLike) -> torch.Tensor:
    if isinstance(image, Image.Image):
        return tvf.pil_to_tensor(image.convert("RGB"))
    # movedim rather than permute, so a grayscale H×W array reaches the clear error below, not a shape error.
    tensor = torch.from_numpy(np.ascontiguousarray(image)).movedim(-1, 0) if isinstance(image, np.ndarray) else image
    if tensor.dtype != torch.uint8 or tensor.ndim != 3 or tensor.shape[0] != 3:
        raise ValueError(f"expected an RGB uint8 image, got {tensor.dtype} of shape {tuple(tensor.shape)}")
    return tensor
