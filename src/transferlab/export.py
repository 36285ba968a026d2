"""`transferlab export`: a run dir's model as one file that runs without transferlab, checked against PyTorch.

The exported graph takes what a consumer has, uint8 RGB images [N, 3, S, S] (any N), and returns each head's
class probabilities under the head's name: the normalisation and the test-time flip are inside it, so its
numbers are `predict`'s numbers. What it cannot hold, the resizing, is written into its metadata with the class
names: the centred square of each image, resized to S×S with the backbone's interpolation.

- `onnx`: torch.onnx's exporter (torch.export underneath), opset OPSET, run by onnxruntime. The graph and its
  metadata are all a consumer needs; `transferlab predict MODEL.onnx` runs it without torch.
- `torchscript`: the same module traced by torch.jit, for a C++ or mobile PyTorch runtime; the metadata rides
  in the archive's extra files (`transferlab.json`).

Before it returns, `export` runs the exported file on real images beside PyTorch and fails, deleting the
file, when any probability differs by more than TOLERANCE.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transferlab.config import FitConfig
from transferlab.data import Split, decode_split, load_source
from transferlab.data.folder import image_files
from transferlab.data.transforms import Normalizer
from transferlab.errors import TransferlabError
from transferlab.evaluate import probabilities
from transferlab.model import TransferModel, load_model
from transferlab.onnx_predict import METADATA_KEY
from transferlab.rundir import RunDir

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
OPSET = 18  # torch.onnx's exporter emits 18; onnxruntime has run it since 1.14
TOLERANCE = 1e-4  # largest difference allowed between the exported file's probabilities and PyTorch's
CHECK_IMAGES = 64


Runner = Callable[[np.ndarray], dict[str, np.ndarray]]  # uint8 images → {head: probabilities}


class ExportError(TransferlabError):
    """The exported file does not reproduce the model, or cannot be checked."""


@dataclass
class Exported:
    path: Path
    format: str
    max_abs_diff: float  # over every head's probabilities on the check images
    images_checked: int
    images_from: str
    seconds: float


class Deployable(nn.Module):
    """uint8 RGB images [N, 3, S, S] → a tuple of each head's probabilities, in `model.head_names` order, with
    the model's normalisation and test-time flip inside: what `evaluate.probabilities` computes."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: TransferModel) -> None:
        super().__init__()
        self.model = model.eval()
        pre = model.backbone.preprocessing
        self.register_buffer("mean", torch.tensor(pre.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(pre.std).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = (images.float() / 255 - self.mean) / self.std
        views = [x, x.flip(-1)] if self.model.test_time_flip else [x]
        heads = self.model.head_names
        if self.model.domains:  # each domain through its own BatchNorm statistics, where it has them
            per_view = [{head: self.model.outputs_from(v, 0, head).logits[head] for head in heads} for v in views]
        else:
            per_view = [self.model.outputs_from(v, 0).logits for v in views]
        return tuple(torch.stack([p[head].softmax(1) for p in per_view]).mean(0) for head in heads)


def metadata(model: TransferModel, meta: dict[str, Any]) -> dict[str, Any]:
    """Everything a consumer needs besides the graph."""
    pre = model.backbone.preprocessing
    return {
        "format_version": 1,
        "input": {
            "name": "images",
            "dtype": "uint8",
            "layout": "NCHW",
            "channels": "RGB",
            "size": meta["image_size"],
            "resize": "the centred square of the image, resized to size x size",
            "interpolation": pre.interpolation,
        },
        "normalisation": {"mean": list(pre.mean), "std": list(pre.std), "in_graph": True},
        "test_time_flip": {"used": model.test_time_flip, "in_graph": model.test_time_flip},
        "outputs": {head: meta["classes"][head] for head in model.head_names},
        "domains": model.domains,
        "backbone": model.backbone.name,
        "opset": OPSET,
    }


def export_model(
    run_dir: Path, format: str = "onnx", out: Path | None = None, check_images: list[Path] | None = None
) -> Exported:
    """Export the model of `run_dir` (or of a folder written by `save`) to `out` (default: next to it, named
    after it), then check it on `check_images` (files or folders; default: up to CHECK_IMAGES images of the
    run's own source, test split first)."""
    if format not in FORMATS:
        raise ExportError(f"unknown format {format!r}: use one of {', '.join(FORMATS)}")
    start = time.monotonic()
    model, meta = load_model(Path(run_dir))
    model.eval()
    images, images_from = _check_images(Path(run_dir), model, meta["image_size"], check_images)
    out = Path(out) if out else Path(run_dir) / f"model{SUFFIXES[format]}"
    out.parent.mkdir(parents=True, exist_ok=True)
    module = Deployable(model).eval()
    info = metadata(model, meta)
    write = _write_onnx if format == "onnx" else _write_torchscript
    run = write(module, images[:2], out, info)
    normalizer = Normalizer(model.backbone.preprocessing, channels_last=False)
    if model.domains:  # each domain's head through its own BatchNorm statistics, as `predict --domain` runs it
        expected = {head: probabilities(model, images, normalizer, domain=head)[head] for head in model.head_names}
    else:
        expected = probabilities(model, images, normalizer)
    got = run(images.numpy())
    diff = max(float(np.abs(got[head] - expected[head].numpy()).max()) for head in model.head_names)
    if not diff <= TOLERANCE:
        out.unlink(missing_ok=True)
        raise ExportError(
            f"the {format} export differs from PyTorch by up to {diff:.2e} (tolerance {TOLERANCE:g}) on "
            f"{len(images)} images from {images_from}: removed {out}"
        )
    return Exported(out, format, diff, len(images), images_from, time.monotonic() - start)


def _write_onnx(module: Deployable, example: torch.Tensor, out: Path, info: dict[str, Any]) -> Runner:
    import onnx
    import onnxruntime

    names = list(info["outputs"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's progress notes and its own deprecation chatter
        torch.onnx.export(
            module,
            (example,),
            str(out),
            input_names=["images"],
            output_names=names,
            dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
    graph = onnx.load(str(out))
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(info)
    onnx.save(graph, str(out))
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    return lambda images: dict(zip(names, session.run(names, {"images": images}), strict=True))


def _write_torchscript(module: Deployable, example: torch.Tensor, out: Path, info: dict[str, Any]) -> Runner:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice
        traced = torch.jit.trace(module, (example,), check_trace=False)
        torch.jit.save(traced, str(out), _extra_files={f"{METADATA_KEY}.json": json.dumps(info)})
        loaded = torch.jit.load(str(out))
    names = list(info["outputs"])

    def run(images: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            return {name: p.numpy() for name, p in zip(names, loaded(torch.from_numpy(images)), strict=True)}

    return run


def _check_images(run_dir: Path, model: TransferModel, size: int, given: list[Path] | None) -> tuple[torch.Tensor, str]:
    """Decoded uint8 images [N, 3, size, size] to compare the export with PyTorch on, and where they came from."""
    if given:
        paths = image_files(given)[:CHECK_IMAGES]
        split, origin = Split(labels=np.zeros(len(paths), dtype=np.int64), paths=paths), "the given files"
    else:
        config_file = RunDir(run_dir).config
        source = FitConfig.load(config_file).source if config_file.is_file() else None
        if source is None:
            raise ExportError(f"{run_dir} records no source to check the export on: give images with --check-images")
        try:
            dataset = load_source(source)
        except TransferlabError as error:
            raise ExportError(
                f"cannot read the run's source to check the export ({error}): use --check-images"
            ) from None
        name = next(n for n in ("test", "val", "train") if n in dataset.splits)
        whole = dataset.splits[name]
        split, origin = whole.subset(np.arange(min(CHECK_IMAGES, len(whole)))), f"{source} ({name} split)"
    decoded = decode_split(split, size, interpolation=model.backbone.preprocessing.interpolation)
    if len(decoded.images) == 0:
        raise ExportError(f"no readable image among {origin} to check the export on")
    return decoded.images, origin
