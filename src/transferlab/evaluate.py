"""Scores of a fitted model on labelled images: accuracy, macro-F1, per-class precision/recall, confusion
matrix, and the most confidently wrong images (the first place to look for label noise or a real weakness)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from transferlab.data.transforms import Normalizer
from transferlab.inference import BFLOAT16_BATCH, INFERENCE_BATCH, evaluating, without_batchnorm
from transferlab.model import TransferModel
from transferlab.train.precision import inference_dtype


@torch.no_grad()
def probabilities(
    model: TransferModel,
    images: torch.Tensor,
    normalizer: Normalizer,
    batch_size: int | None = None,
    device: str = "cpu",
    domain: str | None = None,
    precision: str = "32",
) -> dict[str, torch.Tensor]:
    """Softmax class probabilities {head: [N, C]} (float32) for decoded uint8 images [N, 3, S, S], every head
    from one pass (a multi-domain model: `domain`'s head), averaged with the mirror images' when the model
    predicts with `test_time_flip`. `precision`: an `inference_precision` (train/precision.py); `batch_size`
    defaults to the faster one for it."""
    names = [domain] if domain is not None else model.head_names
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    dtype = inference_dtype(precision, device)
    batch_size = batch_size or (INFERENCE_BATCH if dtype is None else BFLOAT16_BATCH)
    # Folding costs about half a batch's pass (inference.without_batchnorm): one batch alone runs as it is.
    fast: TransferModel | None = None if len(images) > batch_size else model
    with evaluating(model):
        for start in range(0, len(images), batch_size):
            x = normalizer(images[start : start + batch_size], device=device)
            fast = fast or without_batchnorm(model, "outputs_from", x[:1], 0, domain)
            views = [x, x.flip(-1)] if model.test_time_flip else [x]
            # The fold above is checked in float32; only the passes themselves run in `dtype`.
            with torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None):
                logits = [fast.outputs_from(view, 0, domain).logits for view in views]
            for name in names:
                probs = logits[0][name].float().softmax(dim=1)
                if model.test_time_flip:
                    probs = (probs + logits[1][name].float().softmax(dim=1)) / 2
                chunks[name].append(probs.cpu())
    return {
        name: torch.cat(parts) if parts else torch.empty(0, model.num_classes_of(name))
        for name, parts in chunks.items()
    }


def score(
    probs: torch.Tensor,
    labels: torch.Tensor,
    classes: list[str],
    names: list[str] | None = None,
    top: int = 10,
) -> dict[str, Any]:
    """Metrics from probabilities [N, C] and true labels [N]; `names` identify images in `top_losses`."""
    y_true = labels.numpy()
    y_pred = probs.argmax(dim=1).numpy()
    every = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=every, zero_division=0)
    confidence = probs.max(dim=1).values.numpy()
    wrong = np.flatnonzero(y_pred != y_true)
    worst = wrong[np.argsort(-confidence[wrong], kind="stable")][:top]
    return {
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else 0.0,
        "macro_f1": float(f1_score(y_true, y_pred, labels=every, average="macro", zero_division=0)),
        "count": len(y_true),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(classes)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=every).tolist(),
        "top_losses": [
            {
                "index": int(i),
                "image": names[i] if names else int(i),
                "label": classes[y_true[i]],
                "predicted": classes[y_pred[i]],
                "confidence": float(probs[i, y_pred[i]]),
            }
            for i in worst
        ],
    }


def format_scores(scores: dict[str, Any]) -> str:
    """A short human-readable report of `score`'s output."""
    lines = [
        f"accuracy {scores['accuracy']:.4f}   macro-F1 {scores['macro_f1']:.4f}   ({scores['count']} images)",
        f"{'class':<20} {'precision':>9} {'recall':>7} {'support':>8}",
    ]
    for name, row in scores["per_class"].items():
        lines.append(f"{name[:20]:<20} {row['precision']:>9.3f} {row['recall']:>7.3f} {row['support']:>8}")
    if scores["top_losses"]:
        lines.append("most confidently wrong:")
        for row in scores["top_losses"][:5]:
            lines.append(f"  {row['image']}: {row['label']} predicted as {row['predicted']} ({row['confidence']:.2f})")
    return "\n".join(lines)
