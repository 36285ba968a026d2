"""Refitting: the run's recipe trained again on its training and validation images together, up to the epoch
that validation chose (`--refit`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from transferlab._atomic import write_json_atomic
from transferlab.fitting.building import Run, build_model, build_objective, run_batches, silent, warm_start
from transferlab.fitting.training import run_trainer, saver
from transferlab.run_backbone import open_backbone
from transferlab.rundir import RunDir
from transferlab.scoring import evaluate_run
from transferlab.train.callbacks import FinalCheckpoint, MetricsLog, Progress, ResumableCheckpoint, StopAfter
from transferlab.train.loop import Callback
from transferlab.train.state import TrainState


@dataclass
class Refit:
    """What a refit did: trained again on `train_images` (training and validation images) for `epochs` of the
    `schedule_epochs`-epoch schedule, in `seconds`. `selected`: the scores of the model validation had chosen,
    which the refit's model replaces."""

    epochs: int
    schedule_epochs: int
    train_images: int
    seconds: float
    selected: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def refit_run(
    run: Run, chosen: TrainState, *, resume: bool = False, quiet: bool = False, callbacks: Sequence[Callback] = ()
) -> tuple[Run, Refit]:
    """Train `run`'s recipe again, from the start, on its training and validation images together, up to the
    epoch that validation chose (`chosen.best_epoch`) on the schedule's full length, and keep that model.

    Validation's images only chose the epoch; here they train the model too (a quarter more images at the
    default split). The chosen model is scored first and its scores kept in selected.json. Returns the
    refit's Run and what it did. `resume`: go on from the refit's checkpoint, when it had written one.
    `callbacks` join the refit's own, after them.
    """
    files, config, strategy, main = RunDir(run.run_dir), run.config, run.strategy, run.world.is_main
    assert chosen.best_epoch is not None and config.epochs is not None, "a trained run has a kept epoch"
    selected = _selected(run, chosen) if main else {}
    data = run.data.with_val_in_train()
    torch.manual_seed(config.seed)  # the new heads start alike whether or not the first training ran in this process
    backbone = open_backbone(
        config.backbone, pretrained=strategy.pretrained, weights=config.weights if strategy.pretrained else None
    )
    model = build_model(backbone, data, strategy, config, run.device)
    resuming = resume and files.refit_checkpoint.is_file()
    run.echo(
        f"refit: training again on {data.train_images} images (training and validation) up to epoch "
        f"{chosen.best_epoch} of {config.epochs}, the epoch validation chose"
    )
    if not resuming and main:  # DDP gives the other ranks rank 0's weights
        # Silent: its validation accuracy would be read on images it has now trained on.
        warm_start(model, strategy, config, data, run.device, run.run_dir, silent)
        files.refit_metrics.unlink(missing_ok=True)
    train, _, _, note = run_batches(model, strategy, config, data, None, run.world)
    objective = build_objective(config, model).to(run.device)
    refit = replace(run, model=model, objective=objective, train=train, input_note=note)
    own: list[Callback] = [StopAfter(chosen.best_epoch), FinalCheckpoint(saver(refit))]
    if main:
        own = [MetricsLog(files.refit_metrics), *own, ResumableCheckpoint()]
    if main and not quiet:
        own.append(Progress())
    state = run_trainer(refit, [*own, *callbacks], resuming, held_out=False, checkpoint=files.refit_checkpoint)
    return refit, Refit(chosen.best_epoch, config.epochs, data.train_images, round(state.elapsed, 2), selected)


def _selected(run: Run, chosen: TrainState) -> dict[str, Any]:
    """The scores of the model validation chose (the run dir's, before a refit replaces it), kept with the
    loop's state in selected.json: a resumed refit reads both from there."""
    record = RunDir(run.run_dir).selected
    scores = json.loads(record.read_text()).get("scores") if record.is_file() else None
    if scores is None:
        write_json_atomic(record, {"state": asdict(chosen)})  # first: validation's choice survives a kill from here
        run.model.load_state_dict(load_file(RunDir(run.run_dir).weights))
        scores = {key: value for key, value in evaluate_run(run).items() if key in ("accuracy", "macro_f1", "split")}
        write_json_atomic(record, {"state": asdict(chosen), "scores": scores})
    run.echo(f"selected model (epoch {chosen.best_epoch}): {scores['split']} accuracy {scores['accuracy']:.4f}")
    return scores


def chosen_state(run_dir: Path) -> TrainState | None:
    """The loop's state when validation chose the epoch, once a refit has begun (None before)."""
    record = RunDir(run_dir).selected
    return TrainState(**json.loads(record.read_text())["state"]) if record.is_file() else None
