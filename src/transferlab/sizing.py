"""At which size a backbone sees a data set, and decoding it that way."""

from __future__ import annotations

from collections.abc import Sequence

from transferlab.backbones import Backbone
from transferlab.data import Dataset, PreparedData, prepare
from transferlab.data.decode import native_size

# Images much smaller than the backbone's native input (28 px Fashion-MNIST, 8 px digits) are upsampled to
# this working size rather than to 224 px: most of the accuracy for a fraction of the time
# (benchmarks/README.md, "Measurements behind the defaults").
SMALL_IMAGE_SIZE = 96

# What the probes, the advisor and the rankings measure on. A test split stays unread until a model is scored:
# `probe fashion-mnist --per-class 100` took 7.6-7.8 s without its 10,000 test images against 9.0-9.3 s with
# them, and 190 MB less memory at its peak.
MEASURED_SPLITS = ("train", "val")


def working_size(native: int, backbone_size: int) -> int:
    """The backbone's own input size for photos; a smaller working size for small images."""
    return backbone_size if native >= backbone_size * 0.75 else min(backbone_size, max(SMALL_IMAGE_SIZE, native))


def image_size_for(dataset: Dataset, backbone: Backbone, requested: int | None = None) -> int:
    """`requested`, else the working size for this data and backbone. A requested 0 is kept, for decoding to
    refuse: read as "automatic", it would run a different size from the one asked for, silently."""
    if requested is not None:
        return requested
    return working_size(native_size(dataset.splits["train"]), backbone.preprocessing.input_size)


def prepare_for(dataset: Dataset, backbone: Backbone, size: int, names: Sequence[str] | None = None) -> PreparedData:
    """Decode `dataset` (its splits `names`, default every one) at `size` the way `backbone`'s weights were
    trained to see images."""
    return prepare(dataset, size, names, interpolation=backbone.preprocessing.interpolation)
