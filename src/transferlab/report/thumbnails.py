"""Small PNG thumbnails as data URIs: images a report can show without the files they came from."""

from __future__ import annotations

import base64
import io

import torch
from PIL import Image

SIDE = 96


def thumbnail(image: torch.Tensor) -> str:
    """A decoded uint8 image [3, H, W] as a `data:image/png;base64,...` URI, at most SIDE pixels a side."""
    picture = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
    picture.thumbnail((SIDE, SIDE))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
