"""A fitted run's scores: its kept model on the test split (validation when the source has none), each head on
the images labelled for it, and, for domain adaptation, on the target's test split. Written as eval.json."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from transferlab._atomic import write_json_atomic
from transferlab.adaptation.target import has_labelled_test
from transferlab.data import DecodedSplit, PreparedData
from transferlab.data.transforms import Normalizer
from transferlab.evaluate import probabilities, score
from transferlab.report.plots import plot_confusion
from transferlab.report.thumbnails import thumbnail
from transferlab.rundir import RunDir

if TYPE_CHECKING:  # fitting builds the Run and calls this module to score it
    from transferlab.fitting import Run


Probabilities = dict[str, dict[str, torch.Tensor]]  # {source: {head: [N, C]}} on each source's scored split


def _scored(source: PreparedData) -> str:
    return "test" if "test" in source.splits else "val"


def _probabilities(run: Run, split: DecodedSplit, domain: str | None) -> dict[str, torch.Tensor]:
    normalizer = Normalizer(run.model.backbone.preprocessing, run.config.channels_last)
    precision = run.config.inference_precision
    return probabilities(run.model, split.images, normalizer, device=run.device, domain=domain, precision=precision)


def scored_probabilities(run: Run) -> Probabilities:
    """The run's model's class probabilities on each source's scored split: test, or validation without one."""
    return {
        name: _probabilities(run, source.splits[_scored(source)], name or None)
        for name, source in run.data.sources.items()
    }


def _score_split(run: Run, test: DecodedSplit, probs: dict[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    """{head: scores} from `probs` on `test`, each head on the images labelled for it."""
    labels = test.labels.view(len(test.labels), -1)  # a column per head that ran, in its order
    scores = {}
    for column, (head, head_probs) in enumerate(probs.items()):
        keep = torch.nonzero(labels[:, column] >= 0).flatten()
        paths = [str(test.paths[i]) for i in keep] if test.paths else None
        scores[head] = score(head_probs[keep], labels[keep, column], run.heads[head], paths)
        for row in scores[head]["top_losses"]:  # the report shows them, whether or not the files outlive the run
            row["thumbnail"] = thumbnail(test.images[keep[row["index"]]])
    return scores


def evaluate_run(run: Run, probs: Probabilities | None = None) -> dict[str, Any]:
    """Scores of the run's model on the test split (validation when the source has none), saved as eval.json;
    from `probs` where they are at hand (scored_probabilities(run), or an ensemble's members' averaged), else
    from a pass of the model.

    One head: `score`'s keys. Several: `{"tasks": {head: scores}}` (each head on the images labelled for it),
    with `accuracy` and `macro_f1` their means over heads. Domain adaptation: the target's test split's scores
    when it has labels, with the source's under `source`; else the source's, with `target` null.
    """
    probs = scored_probabilities(run) if probs is None else probs
    per_head: dict[str, dict[str, Any]] = {}
    split = ""
    for name, source in run.data.sources.items():
        split = _scored(source)
        scored = _score_split(run, source.splits[split], probs[name])
        per_head |= {head: each | {"split": split} for head, each in scored.items()}
    if len(per_head) == 1:
        scores = next(iter(per_head.values()))
        plot_confusion(scores["confusion"], run.heads[run.model.head_names[0]], RunDir(run.run_dir).confusion)
    else:
        scores = {
            "accuracy": sum(s["accuracy"] for s in per_head.values()) / len(per_head),
            "macro_f1": sum(s["macro_f1"] for s in per_head.values()) / len(per_head),
            "split": split,
            "tasks": per_head,
        }
        for head, head_scores in per_head.items():
            plot_confusion(head_scores["confusion"], run.heads[head], run.run_dir / f"confusion-{head}.png")
    if run.target is not None:
        scores = _with_target(run, scores)
    write_json_atomic(RunDir(run.run_dir).scores, scores)
    return scores


def _with_target(run: Run, source_scores: dict[str, Any]) -> dict[str, Any]:
    """The target's test scores, the source's beside them; the source's alone when the target has no labels."""
    assert run.target is not None
    if not has_labelled_test(run.target):
        return source_scores | {"target": None}
    test = run.target.splits["test"]
    (scores,) = _score_split(run, test, _probabilities(run, test, None)).values()
    plot_confusion(scores["confusion"], run.heads[run.model.head_names[0]], RunDir(run.run_dir).confusion)
    return scores | {"split": "target test", "source": source_scores}
