"""The fit pipeline: source → samples → decoded cache → batches → TransferModel → Trainer → run dir.

It comes in three parts that every kind of fit shares: `build_run` (data, backbone, strategy, model,
objective, batches; fitting/building.py), `train_run` (the one Trainer, with the run dir's callbacks;
fitting/training.py) and `finish_run` (the kept model scored and summarised, here). `--refit` trains the
recipe once more between the last two (fitting/refitting.py). `fit` is them in a row, for one task, several
tasks or several domains.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from transferlab._atomic import write_json_atomic
from transferlab.adaptation.methods import adapt_batchnorm
from transferlab.config import FitConfig
from transferlab.data.sources import Source
from transferlab.data.summary import summarize
from transferlab.defaults import fits_an_ensemble
from transferlab.fitting.building import Echo, Run, Sources, build_run, silent
from transferlab.fitting.refitting import Refit, chosen_state, refit_run
from transferlab.fitting.training import model_extra, train_run
from transferlab.model import TransferModel, save_model
from transferlab.random_state import callers_random_state
from transferlab.report.html import write_report
from transferlab.report.plots import plot_curves
from transferlab.rundir import RunDir
from transferlab.scoring import Probabilities, evaluate_run, scored_probabilities
from transferlab.strategies import Strategy
from transferlab.train.precision import inference_dtype
from transferlab.train.state import TrainState

__all__ = [
    "FitResult",
    "Run",
    "Source",
    "Sources",
    "build_run",
    "finish_run",
    "fit",
    "fit_run",
    "refit_run",
    "train_run",
]


@dataclass
class FitResult:
    run_dir: Path
    model: TransferModel
    heads: dict[str, list[str]]  # {task or domain: class names}
    config: FitConfig
    strategy: Strategy
    state: TrainState
    scores: dict[str, Any]  # on the test split, or on validation when the source has no test split
    image_size: int
    refit: Refit | None = None  # what `config.refit` did
    # The kept model's class probabilities behind `scores`, where this process computed them (an ensemble
    # averages its members' rather than running them all again)
    test_probabilities: Probabilities | None = None

    @property
    def classes(self) -> list[str]:
        """The primary (first) head's classes."""
        return next(iter(self.heads.values()))


def finish_run(run: Run, state: TrainState, refit: Refit | None = None) -> FitResult:
    """Load the kept model, plot the curves (validation's, when there was a `refit`), score it, and write
    summary.json. A refit's model is scored on the test split; without one, nothing held out is left to score
    it, and the selected model's validation scores stand for it, as model selection's estimate."""
    run.model.load_state_dict(load_file(RunDir(run.run_dir).weights))
    if run.target is not None and run.config.adaptation == "adabn":
        adapt_batchnorm(run.model, run.data.sources[""], run.target, run.config, run.device)
        save_model(run.model, run.run_dir, model_extra(run))
        run.echo("adabn: every BatchNorm layer's statistics aligned to normalise the target as it did the source")
    plot_curves(state.history, RunDir(run.run_dir).curves)
    probs = None
    if refit is not None and refit.selected["split"] != "test":
        scores = json.loads(RunDir(run.run_dir).scores.read_text())
        run.echo("no test split: the refit's model is judged by the validation scores of the model it replaces")
    else:
        probs = scored_probabilities(run)
        scores = evaluate_run(run, probs)
    for head, each in scores.get("tasks", {}).items():
        run.echo(f"{each['split']} {head}: accuracy {each['accuracy']:.4f}, macro-F1 {each['macro_f1']:.4f}")
    notes = " (mean over heads)" if "tasks" in scores else ""
    if inference_dtype(run.config.inference_precision, run.device) is not None:
        notes += "; scored in bfloat16 (--inference-precision 32: float32)"
    if run.config.time_limit is not None and run.config.test_time_flip is False:
        notes += "; no test-time flip under --time-limit (--test-time-flip: on)"
    if "source" in scores:
        source = scores["source"]
        run.echo(f"source {source['split']}: accuracy {source['accuracy']:.4f}, macro-F1 {source['macro_f1']:.4f}")
    run.echo(f"{scores['split']}: accuracy {scores['accuracy']:.4f}, macro-F1 {scores['macro_f1']:.4f}{notes}")
    if scores.get("target", "") is None:
        run.echo("target accuracy unknown: the target has no labelled test split")
    summary = {
        "strategy": run.strategy.name,
        "stop_reason": state.stop_reason,
        "best_epoch": state.best_epoch,
        "train_seconds": round(state.elapsed + (refit.seconds if refit else 0.0), 2),
        "input": run.input_note,
        "skipped": [{"path": s.path, "reason": s.reason} for s in run.data.skipped],
        "accuracy": scores["accuracy"],
        "evaluated_on": scores["split"],
    }
    if refit is not None:
        summary["refit"] = refit.to_json()
    write_json_atomic(RunDir(run.run_dir).summary, summary)
    write_json_atomic(RunDir(run.run_dir).data, {name: summarize(d, name) for name, d in run.data.sources.items()})
    if run.config.report:
        run.echo(f"report: {write_report(run.run_dir)}")
    assert run.config.image_size is not None, "build_run sets the image size"
    return FitResult(
        run.run_dir, run.model, run.heads, run.config, run.strategy, state, scores, run.config.image_size, refit, probs
    )


def fit(
    source: Sources | None,
    config: FitConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    quiet: bool = False,
    target: Source | None = None,
) -> FitResult:
    """Fit `config.backbone` to `source` with `config.strategy`; everything lands in `run_dir`.

    `source` is one data source (its `config.tasks` label columns, or its one label), or {domain: source}
    for multi-domain learning (also given as `config.domains`). `target` (or `config.target`): adapt to this
    unlabelled domain with `config.adaptation` (domain adaptation; see adaptation/).
    """
    files = RunDir(Path(run_dir))
    asked = FitConfig.load(files.config) if resume and files.config.is_file() else config
    # An ensemble's run dir holds no checkpoint of its own (its members do): one that does is a single run.
    single_before = resume and files.checkpoint.is_file()
    if target is None and not single_before and fits_an_ensemble(asked):
        from transferlab.ensemble import fit_ensemble  # which fits each member through fit_run below

        return fit_ensemble(source, config, Path(run_dir), resume=resume, quiet=quiet)
    return fit_run(source, config, run_dir, resume=resume, quiet=quiet, target=target)[1]


@callers_random_state()
def fit_run(
    source: Sources | None,
    config: FitConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    quiet: bool = False,
    target: Source | None = None,
) -> tuple[Run, FitResult]:
    """`fit` of one model: the Run it trained, and what it kept and scored."""
    echo: Echo = silent if quiet else (lambda msg: print(msg, flush=True))
    run = build_run(source, config, Path(run_dir), resume=resume, echo=echo, target=target)
    chosen = chosen_state(run.run_dir) if resume else None  # a resumed refit: the first training is done
    state = chosen or train_run(run, resume=resume, quiet=quiet)
    refit = None
    if run.config.refit:
        run, refit = refit_run(run, state, resume=resume, quiet=quiet)
    if run.world.is_main:
        result = finish_run(run, state, refit)
    run.world.barrier()  # the other ranks return what rank 0 kept and scored
    if not run.world.is_main:
        run.model.load_state_dict(load_file(RunDir(run.run_dir).weights))
        scores = json.loads(RunDir(run.run_dir).scores.read_text())
        assert run.config.image_size is not None, "build_run sets the image size"
        result = FitResult(
            run.run_dir, run.model, run.heads, run.config, run.strategy, state, scores, run.config.image_size, refit
        )
    return run, result
