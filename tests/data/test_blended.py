from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from transferlab.data import load_source
from transferlab.data.blended import TEST_PHOTOS, TRAIN_PHOTOS, blend, blended_dataset, photo_pool
from transferlab.data.types import Dataset, Split
from transferlab.errors import DataError

pytest.importorskip("skimage", reason="needs scikit-image: pip install 'transferlab[blended]'")


def random_uint8(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def is_crop_of(crop: np.ndarray, photos: list[np.ndarray]) -> bool:
    """Whether the [H, W, 3] `crop` is an H×W window of one of `photos`."""
    height, width, _ = crop.shape
    target = crop.transpose(2, 0, 1)  # sliding_window_view puts the window's axes last
    return any(
        (sliding_window_view(photo, (height, width), axis=(0, 1)) == target).all(axis=(2, 3, 4)).any()
        for photo in photos
    )


@pytest.fixture(scope="module")
def pools() -> dict[str, list[np.ndarray]]:
    return {"train": photo_pool(TRAIN_PHOTOS), "test": photo_pool(TEST_PHOTOS)}


def test_blending_takes_the_absolute_difference_without_wrapping() -> None:
    # In uint8, 10 - 250 wraps around to 16; the blend must give 240 whichever of the two is larger.
    photos = [np.full((4, 4, 3), 250, dtype=np.uint8)]
    images = np.array([np.full((2, 2), 10), np.full((2, 2), 250), np.full((2, 2), 0)], dtype=np.uint8)
    blended = blend(images, photos, seed=0)
    assert blended[0].tolist() == np.full((2, 2, 3), 240).tolist()
    assert blended[1].tolist() == np.zeros((2, 2, 3)).tolist()
    assert blended[2].tolist() == np.full((2, 2, 3), 250).tolist()


def test_blend_gives_rgb_uint8_crops_of_the_photos() -> None:
    photos = [random_uint8((9, 11, 3), seed=1), random_uint8((7, 20, 3), seed=2)]
    blended = blend(np.zeros((40, 6, 5), dtype=np.uint8), photos, seed=0)
    assert blended.shape == (40, 6, 5, 3)
    assert blended.dtype == np.uint8
    # Over a black image the blend is the crop itself, so every output must be a window of a photo.
    assert all(is_crop_of(crop, photos) for crop in blended)
    assert not is_crop_of(blended[0], [random_uint8((9, 11, 3), seed=3)])  # the check can fail


def test_blend_is_deterministic_for_a_seed_and_differs_across_seeds() -> None:
    images = random_uint8((50, 6, 6))
    photos = [random_uint8((30, 30, 3), seed=1), random_uint8((25, 40, 3), seed=2)]
    first, again, other = (blend(images, photos, seed=s) for s in (4, 4, 5))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_blend_refuses_colour_images_and_photos_smaller_than_the_images() -> None:
    photos = [random_uint8((9, 9, 3))]
    with pytest.raises(DataError, match="grey"):
        blend(random_uint8((2, 4, 4, 3)), photos, seed=0)
    with pytest.raises(DataError, match=r"smaller than the 10×4 images"):
        blend(random_uint8((2, 10, 4)), photos, seed=0)


def test_train_and_test_photo_groups_are_disjoint(pools: dict[str, list[np.ndarray]]) -> None:
    assert TRAIN_PHOTOS and TEST_PHOTOS
    assert not set(TRAIN_PHOTOS) & set(TEST_PHOTOS)
    # Disjoint by content too, not only by name (scikit-image's `cat` is the same file as `chelsea`).
    for photo in pools["train"]:
        assert photo.ndim == 3 and photo.shape[2] == 3 and photo.dtype == np.uint8
        assert not any(photo.shape == other.shape and np.array_equal(photo, other) for other in pools["test"])


def test_each_split_is_blended_with_its_own_photo_group(pools: dict[str, list[np.ndarray]]) -> None:
    black = Split(labels=np.arange(4), arrays=np.zeros((4, 3, 3), dtype=np.uint8))
    source = Dataset("black", ["a", "b", "c", "d"], {"train": black, "val": black, "test": black})
    blended = blended_dataset(source, "black-m")
    assert blended.name == "black-m"
    for split in ("train", "val", "test"):
        arrays = blended.splits[split].arrays
        assert arrays is not None
        assert all(is_crop_of(crop, pools["test" if split == "test" else "train"]) for crop in arrays)
    # Each split draws its own crops, though train and val share their photos.
    assert not np.array_equal(blended.splits["train"].arrays, blended.splits["val"].arrays)


def test_blended_dataset_refuses_images_that_are_not_grey_arrays() -> None:
    colour = Split(labels=np.arange(2), arrays=np.zeros((2, 4, 4, 3), dtype=np.uint8))
    with pytest.raises(DataError, match="train split is not in-memory grey images"):
        blended_dataset(Dataset("rgb", ["a", "b"], {"train": colour}), "rgb-m")


def test_fashion_sample_m_keeps_the_labels_and_shifts_the_pixels() -> None:
    grey, shifted = load_source("fashion-mnist-sample"), load_source("fashion-mnist-sample-m")
    assert shifted.classes == grey.classes
    assert list(shifted.splits) == list(grey.splits)
    for name, split in grey.splits.items():
        assert split.arrays is not None
        arrays = shifted.splits[name].arrays
        assert arrays is not None
        assert np.array_equal(shifted.splits[name].labels, split.labels)
        assert arrays.shape == (*split.arrays.shape, 3)
        assert arrays.dtype == np.uint8
        assert not np.array_equal(arrays, np.repeat(split.arrays[..., None], 3, axis=-1))
        # The shift is in colour: grey pixels have equal channels (variance 0 across them); blended ones have
        # the photos' colours (about 600 on the sample, a standard deviation of 24 grey levels).
        assert np.var(split.arrays[..., None].repeat(3, axis=-1), axis=-1).mean() == 0
        assert np.var(arrays.astype(np.float64), axis=-1).mean() > 200
