"""`fit --ensemble N`: N members fitted one after another, predicting with their probabilities averaged.

Member k is an ordinary run in `RUN_DIR/members/k`, with seed `seed + k`, so it draws its own train/validation
split and its own batches, of the same labelled images: the members share the `sample_seed` that chooses
which images `per_class` keeps. A source without a test split has the ensemble scored on validation images,
which no member may have trained on: there the members keep the first's split (`split_seed`), and differ in
their batches, augmentation and dropout alone. The first member takes the advisor's decisions; the others
are fitted with the first's resolved settings, so the advisor runs once. With `--ensemble N` each gets an
equal share of `--time-limit`. The run dir itself holds the Ensemble (model.Ensemble: the members' weights in
one safetensors file) and its scores on the test split (or the validation split its members share), so
`evaluate`, `predict` and `export` take it as they take one model.

With `--ensemble` unset, a `--time-limit` decides the count: the first member trains with the whole limit,
and the time its schedule leaves goes to further members (defaults.members_within), so that a long limit
buys a better model rather than idling. Where too little is left, the one member's files move up and the run
dir is a single run, as without a limit.

Resume: members whose run dir holds a checkpoint resume from it (a finished one trains no further), the others
start; a killed ensemble loses at most the epoch its current member was in.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from transferlab._atomic import write_bytes_atomic, write_json_atomic
from transferlab.config import FitConfig
from transferlab.defaults import members_within
from transferlab.errors import ConfigError
from transferlab.fitting import FitResult, Run, Sources, fit_run
from transferlab.model import Ensemble, read_meta, save_model
from transferlab.report.html import write_report
from transferlab.rundir import RunDir
from transferlab.scoring import Probabilities, evaluate_run


def fit_ensemble(
    source: Sources | None, config: FitConfig, run_dir: Path, *, resume: bool = False, quiet: bool = False
) -> FitResult:
    """Fit `config.ensemble` members into `run_dir/members/` (unset: as many as `config.time_limit` holds, see
    defaults.members_within), then keep and score their ensemble in `run_dir`."""
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
    limit, count = config.time_limit, config.ensemble
    # One draw of `per_class` labelled images for every member; each its own train/validation split of them
    settings = config.updated(
        ensemble=1,
        time_limit=limit / count if limit and count else limit,
        report=False,
        sample_seed=config.drawing_seed,
    )
    first_run, first = _member(0, count, source, settings, run_dir, resume, quiet)
    count = _count(config, first, quiet)
    share = (limit - first.state.elapsed) / (count - 1) if config.ensemble is None and limit and count > 1 else None
    settings = first.config.updated(report=False, time_limit=share or settings.time_limit)  # the first's decisions
    if count > 1 and "test" not in first_run.data.sources[""].splits:
        settings = settings.updated(split_seed=first.config.splitting_seed)
        if not quiet:
            print("no test split: the members keep the first's validation images, and are scored on them", flush=True)
    runs, results = [first_run], [first]
    for index in range(1, count):
        run, result = _member(index, count, source, settings, run_dir, resume, quiet)
        runs.append(run)
        results.append(result)
    if count == 1:  # the time limit held one model: the run dir becomes that single run
        _promote(first.run_dir, run_dir)
        kept = replace(first, run_dir=run_dir, config=first.config.updated(report=config.report))
    else:
        kept = _keep(config, runs, results, run_dir, quiet)
    if config.report:
        report = write_report(run_dir)
        if not quiet:
            print(f"report: {report}")
    return kept


def _count(config: FitConfig, first: FitResult, quiet: bool) -> int:
    """The member count: as asked, or as many as the time limit holds once the first has trained."""
    if config.ensemble is not None:
        return config.ensemble
    assert config.time_limit is not None, "fits_an_ensemble: an automatic count needs a time limit"
    count = members_within(config.time_limit, first.state.elapsed)
    if not quiet:
        print(_count_note(count, config.time_limit, first.state.elapsed), flush=True)
    return count


def _keep(config: FitConfig, runs: list[Run], results: list[FitResult], run_dir: Path, quiet: bool) -> FitResult:
    """Save the members' Ensemble in `run_dir` and score it on the split every member was scored on: the test
    split, or the validation split they share."""
    model = Ensemble([result.model for result in results])
    first, last = results[0], results[-1]
    described = model.describe()
    meta = read_meta(first.run_dir)
    save_model(model, run_dir, {k: v for k, v in meta.items() if k not in described and k != "format_version"})
    scores = evaluate_run(replace(runs[-1], model=model, run_dir=run_dir), _averaged(results))
    write_json_atomic(RunDir(run_dir).summary, _summary(config, results, scores))
    if not quiet:
        alone = ", ".join(f"{100 * result.scores['accuracy']:.2f}%" for result in results)
        print(f"{scores['split']}: ensemble of {len(results)}: accuracy {scores['accuracy']:.4f} (each alone: {alone})")
    resolved = first.config.updated(ensemble=len(results), time_limit=config.time_limit, report=config.report)
    return FitResult(run_dir, model, last.heads, resolved, last.strategy, last.state, scores, last.image_size)


def _averaged(results: list[FitResult]) -> Probabilities | None:
    """The members' test probabilities averaged, as the Ensemble computes them, without running every member
    over the test split again (a tenth of a 10-minute fit on this project's CPU, for 4 members); None where a
    member's are not at hand."""
    each = [result.test_probabilities for result in results]
    known = [probs for probs in each if probs is not None]
    if len(known) < len(each):
        return None
    return {
        source: {head: torch.stack([probs[source][head] for probs in known]).mean(0) for head in heads}
        for source, heads in known[0].items()
    }


def _promote(member_dir: Path, run_dir: Path) -> None:
    """Move the one member's files up into the run dir, in an order that a kill at any point leaves resumable:
    until the checkpoint moves, a resume finds the member (its model and settings still in place) and
    finishes it again; after, it finds a single run, whose model is already beside it."""
    member, run = RunDir(member_dir), RunDir(run_dir)
    last = {member.checkpoint, member.config, member.weights, member.meta}
    for path in sorted(member_dir.iterdir()):
        if path not in last:
            path.replace(run_dir / path.name)
    for path in (member.weights, member.meta):
        write_bytes_atomic(run_dir / path.name, path.read_bytes())
    # ensemble unset, as asked: should the checkpoint not have moved yet, a resume goes through the member again
    staged = member_dir / f".{member.config.name}.promoted"
    replace(FitConfig.load(member.config), ensemble=None).save(staged)  # updated() skips a None
    staged.replace(run.config)
    member.checkpoint.replace(run.checkpoint)
    shutil.rmtree(run_dir / "members")


def _member(
    index: int, count: int | None, source: Sources | None, settings: FitConfig, run_dir: Path, resume: bool, quiet: bool
) -> tuple[Run, FitResult]:
    """Fit member `index` (seed `settings.seed + index`) into `run_dir/members/index`, resuming it where it has a
    checkpoint."""
    member_dir = run_dir / "members" / str(index)
    again = resume and RunDir(member_dir).checkpoint.is_file()
    if not quiet and count:
        print(f"member {index + 1} of {count} (seed {settings.seed + index}): {member_dir}", flush=True)
    elif not quiet:  # most often the one model of the run: its files move up when it stays alone
        print(f"model 1 (seed {settings.seed}); more follow if its schedule leaves time of the limit", flush=True)
    return fit_run(source, settings.updated(seed=settings.seed + index), member_dir, resume=again, quiet=quiet)


def _count_note(count: int, limit: float, first: float) -> str:
    if count == 1:
        return (
            f"one model: the first trained {first:.0f} s of the {limit:g} s limit, and what is left holds no "
            f"second member (one needs half the first's time, {first / 2:.0f} s)"
        )
    return (
        f"the first member trained {first:.0f} s of the {limit:g} s limit: {count - 1} more, of "
        f"{(limit - first) / (count - 1):.0f} s each, their probabilities averaged (--ensemble 1: one model)"
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
