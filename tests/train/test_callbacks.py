"""The best checkpoint: lowest validation loss, the latest of the models within tolerance of it."""

from __future__ import annotations

from types import SimpleNamespace

from transferlab.train.callbacks import BestCheckpoint, EarlyStopping
from transferlab.train.state import TrainState


def test_the_latest_model_within_tolerance_of_the_lowest_loss_is_kept() -> None:
    trainer = SimpleNamespace(state=TrainState(), stop_reason=None)
    saved: list[int] = []
    best = BestCheckpoint(lambda t: saved.append(t.state.best_epoch), tolerance=0.01)
    stop = EarlyStopping(patience=2)
    for epoch, loss in enumerate([0.60, 0.50, 0.503, 0.52, 0.49, 0.60, 0.70], start=1):
        for callback in (best, stop):
            callback.on_epoch_end(trainer, {"epoch": epoch, "val_loss": loss, "val_accuracy": 0.5})
        if trainer.stop_reason:
            break
    # 0.503 is within 1% of 0.50: kept (it trained longer); 0.52 is not; 0.49 is a new lowest
    assert saved == [1, 2, 3, 5]
    assert trainer.state.best_metric == 0.49 and trainer.state.best_epoch == 5
    assert epoch == 7 and "2 epochs" in trainer.stop_reason  # two epochs above tolerance in a row
