"""Predicting with an exported ONNX model: onnxruntime, Pillow and NumPy, no torch. The images are decoded
and resized as transferlab decodes them, from what the model's metadata says."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transferlab.data.decode import INTERPOLATIONS, BadImage, open_scaled, quiet_size_warnings, square_crop
from transferlab.data.folder import image_files
from transferlab.errors import TransferlabError
from transferlab.predictions import choose_heads, prediction_rows

METADATA_KEY = "transferlab"  # the ONNX metadata entry (JSON) that export writes
BATCH = 32


class OnnxPredictor:
    """An exported `.onnx` file, run by onnxruntime on the CPU."""

    def __init__(self, path: str | Path) -> None:
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if raw is None:
            raise TransferlabError(f"{path} is no transferlab export: it has no '{METADATA_KEY}' metadata")
        self.info: dict[str, Any] = json.loads(raw)
        self.classes: dict[str, list[str]] = self.info["outputs"]

    def probabilities(self, images: np.ndarray, heads: Sequence[str]) -> dict[str, np.ndarray]:
        """{head: [N, C] probabilities} of uint8 images [N, 3, S, S], in batches."""
        chunks = [
            self.session.run(list(heads), {"images": images[start : start + BATCH]})
            for start in range(0, len(images), BATCH)
        ]
        return {head: np.concatenate([chunk[k] for chunk in chunks]) for k, head in enumerate(heads)}

    def predict_paths(
        self, paths: Sequence[Path], top_k: int = 3, task: str | None = None, domain: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """As `TransferClassifier.predict_paths`: one dict per image, `path` + `top` (or `tasks`), or `error`."""
        heads = choose_heads(list(self.classes), self.info["domains"], task, domain)
        size = self.info["input"]["size"]
        resample = INTERPOLATIONS[self.info["input"]["interpolation"]]
        decoded, kept, failed = [], [], []
        with quiet_size_warnings():
            for file in image_files(paths):
                try:
                    image, _ = open_scaled(file, min_side=size)
                except BadImage as bad:
                    failed.append((str(file), bad.reason))
                    continue
                decoded.append(square_crop(image, size, resample))
                kept.append(str(file))
        probs = self.probabilities(np.stack(decoded), heads) if kept else {}
        per_task = len(self.classes) > 1 and not self.info["domains"]
        yield from prediction_rows(paths, kept, probs, self.classes, top_k, per_task, failed)
