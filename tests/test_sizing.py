"""The size a backbone sees a data set at: its own input size for photos, a smaller working size for small
images (sizing.py)."""

from __future__ import annotations

import pytest

from transferlab.sizing import working_size


@pytest.mark.parametrize(
    ("native", "backbone_size", "expected"),
    [
        (8, 224, 96),  # digits: upsampled to the working size, not to 224 px
        (28, 224, 96),  # Fashion-MNIST
        (120, 224, 120),  # between: its own size, not upsampled further
        (167, 224, 167),  # a pixel short of three quarters of 224
        (168, 224, 224),  # three quarters and up: the backbone's own size
        (500, 224, 224),  # photos
        (8, 64, 64),  # never above the backbone's own size
    ],
)
def test_small_images_work_at_96_px_or_their_own_size_and_photos_at_the_backbones(
    native: int, backbone_size: int, expected: int
) -> None:
    assert working_size(native, backbone_size) == expected
