"""The training loop's progress, and the resumable checkpoint that carries it (one safetensors file, no pickle)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from transferlab._atomic import write_tensors_atomic
from transferlab.errors import TransferlabError


@dataclass
class TrainState:
    """Where the loop is: `epoch` and `step` are the next ones to run. Everything here is JSON-able."""

    epoch: int = 0
    step: int = 0
    global_step: int = 0
    elapsed: float = 0.0
    best_metric: float | None = None  # the lowest validation loss so far
    best_margin: float = 0.0  # that loss's standard error: models within it are as good
    best_epoch: int | None = None
    stale_epochs: int = 0
    stop_reason: str | None = None
    epochs: int | None = None  # the epoch count a time limit fitted the run to (None: the config's)
    history: list[dict[str, Any]] = field(default_factory=list)


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    average: torch.nn.Module | None = None,
    objective: torch.nn.Module | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """Model weights (and their moving average), the objective's own parameters, optimizer state, the float16
    loss scale and loop state in one atomically written file."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if average is not None:
        tensors |= {f"average.{k}": v for k, v in average.state_dict().items()}
    if objective is not None:
        tensors |= {f"objective.{k}": v for k, v in objective.state_dict().items()}
    optim = optimizer.state_dict()
    for index, slots in optim["state"].items():
        for name, value in slots.items():
            if value is None:  # e.g. SGD's momentum buffer before its first step
                continue
            tensors[f"optim.{index}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    groups = [{k: v for k, v in g.items() if k != "params"} | {"params": g["params"]} for g in optim["param_groups"]]
    metadata = {"state": json.dumps(asdict(state)), "param_groups": json.dumps(groups)}
    if scaler is not None:  # its scale and growth tracker are plain numbers
        metadata["scaler"] = json.dumps(scaler.state_dict())
    write_tensors_atomic(path, tensors, metadata)


def load_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    average: torch.nn.Module | None = None,
    objective: torch.nn.Module | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> TrainState:
    if not Path(path).is_file():
        raise TransferlabError(f"no checkpoint to resume from at {path}")
    tensors = load_file(path)
    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata()
    model.load_state_dict(_with_prefix(tensors, "model."))
    if average is not None:
        average.load_state_dict(_with_prefix(tensors, "average."))
    if objective is not None:  # strict: a resumed run must not silently start its task weights afresh
        objective.load_state_dict(_with_prefix(tensors, "objective."))
    slots: dict[int, dict[str, torch.Tensor]] = {}
    parameters = [p for group in optimizer.param_groups for p in group["params"]]  # the state dict's numbering
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            parameter = parameters[int(index)] if int(index) < len(parameters) else None  # else refused below
            slots.setdefault(int(index), {})[name] = _laid_out_as(parameter, value)
    # Unequal counts: load_state_dict refuses them, with its own message.
    saved_and_built = zip(_saved_groups(metadata), optimizer.param_groups, strict=False)
    groups = [saved | _implementation(built) for saved, built in saved_and_built]
    optimizer.load_state_dict({"state": slots, "param_groups": groups})
    if scaler is not None and "scaler" in metadata:  # a float16 run goes on at the scale it had found
        scaler.load_state_dict(json.loads(metadata["scaler"]))
    return TrainState(**json.loads(metadata["state"]))


def _saved_groups(metadata: dict[str, str]) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = json.loads(metadata["param_groups"])
    return groups


def _implementation(group: dict[str, Any]) -> dict[str, Any]:
    """How the optimizer as built runs its update (fused, foreach...): the code's choice for this machine, not
    the checkpoint's, which may come from before the fused update or from another device. The saved groups keep
    what the run trains with: learning rates, weight decay, betas."""
    return {key: group[key] for key in ("fused", "foreach", "capturable") if key in group}


def _laid_out_as(parameter: torch.Tensor | None, value: torch.Tensor) -> torch.Tensor:
    """A per-element optimizer slot (Adam's moments) in its parameter's memory layout. safetensors stores
    every tensor contiguous, and a channels-last convolution's moments read back that way would be paired with
    the wrong weights by the fused update, which walks all its tensors' memory in step."""
    if parameter is None or value.shape != parameter.shape:
        return value  # a scalar slot, such as the step count
    return torch.empty_like(parameter, dtype=value.dtype).copy_(value)


def _with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
