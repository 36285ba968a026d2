"""`fit --ensemble N`: N members fitted one after another, predicting with their probabilities averaged.

Member k is an ordinary run in `RUN_DIR/members/k`, with seed `seed + k`, so it draws its own train/validation
split of the same labelled images and its own batches. The first member takes the advisor's decisions; the
others are fitted with the first's resolved settings, so the advisor runs once. Each gets an equal share of
`--time-limit`. The run dir itself holds the Ensemble (model.Ensemble: the members' weights in one
safetensors file) and its scores on the test split, so `evaluate`, `predict` and `export` take it as they take
one model. On Fashion-MNIST at 100 labelled images per class, four members at a 100 s limit each scored 89.40%
where one scored 87.0-87.4% (benchmarks/ensemble.py).

Resume: members whose run dir holds a checkpoint resume from it (a finished one trains no further), the others
start; a killed ensemble loses at most the epoch its current member was in.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from transferlab._atomic import write_json_atomic
from transferlab.config import FitConfig
from transferlab.errors import ConfigError
from transferlab.fitting import FitResult, Sources, fit_run
from transferlab.model import Ensemble, read_meta, save_model
from transferlab.rundir import RunDir
from transferlab.scoring import evaluate_run


def fit_ensemble(
    source: Sources | None, config: FitConfig, run_dir: Path, *, resume: bool = False, quiet: bool = False
) -> FitResult:
    """Fit `config.ensemble` members into `run_dir/members/`, then keep and score their ensemble in `run_dir`."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("an ensemble fits its members one after another, in one process: run it without torchrun")
    if resume:
        config = FitConfig.load(RunDir(run_dir).config)
        source = source if source is not None else config.source  # in-memory arrays: given again
    else:
        if isinstance(source, str | Path):  # recorded, as fit records it, for --resume
            config = config.updated(source=str(source))
        run_dir.mkdir(parents=True, exist_ok=True)
        config.save(RunDir(run_dir).config)
    count = config.ensemble
    share = config.time_limit / count if config.time_limit else None
    settings = config.updated(ensemble=1, time_limit=share, report=False)
    runs, results = [], []
    for index in range(count):
        member_dir = run_dir / "members" / str(index)
        again = resume and RunDir(member_dir).checkpoint.is_file()
        if not quiet:
            print(f"member {index + 1} of {count} (seed {config.seed + index}): {member_dir}", flush=True)
        run, result = fit_run(source, settings.updated(seed=config.seed + index), member_dir, resume=again, quiet=quiet)
        if index == 0:
            _check_scorable(run.data.sources[""].splits)
            settings = result.config.updated(report=False)  # the first member's resolved decisions, for the rest
        runs.append(run)
        results.append(result)
    ensemble = Ensemble([result.model for result in results])
    first = read_meta(results[0].run_dir)
    described = ensemble.describe()
    save_model(ensemble, run_dir, {k: v for k, v in first.items() if k not in described and k != "format_version"})
    scores = evaluate_run(replace(runs[-1], model=ensemble, run_dir=run_dir))  # every member's test split is one
    write_json_atomic(RunDir(run_dir).summary, _summary(config, results, scores))
    if not quiet:
        alone = ", ".join(f"{100 * result.scores['accuracy']:.2f}%" for result in results)
        print(f"{scores['split']}: ensemble of {count}: accuracy {scores['accuracy']:.4f} (each alone: {alone})")
    last = results[-1]
    return FitResult(run_dir, ensemble, last.heads, config, last.strategy, last.state, scores, last.image_size)


def _check_scorable(splits: dict[str, Any]) -> None:
    if "test" not in splits:
        raise ConfigError(
            "an ensemble is scored on a test split, and this source has none: each member's validation split "
            "holds images the other members trained on"
        )


def _summary(config: FitConfig, results: list[FitResult], scores: dict[str, Any]) -> dict[str, Any]:
    members = [
        {
            "run_dir": f"members/{index}",
            "seed": config.seed + index,
            "accuracy": result.scores["accuracy"],
            "train_seconds": round(result.state.elapsed, 2),
            "stop_reason": result.state.stop_reason,
        }
        for index, result in enumerate(results)
    ]
    return {
        "strategy": results[0].strategy.name,
        "ensemble": members,
        "train_seconds": round(sum(member["train_seconds"] for member in members), 2),
        "accuracy": scores["accuracy"],
        "evaluated_on": scores["split"],
    }
