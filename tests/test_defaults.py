"""Automatic settings chosen from the data size and the strategy."""

from __future__ import annotations

import pytest

from transferlab.config import FitConfig
from transferlab.defaults import resolve
from transferlab.strategies import parse_strategy


@pytest.mark.parametrize(
    ("strategy", "per_class", "augment", "views", "ratio", "epochs", "batch", "patience"),
    [
        # one lightly augmented view is enough for a linear head; a head trains for 30 epochs
        ("head", 100, "light", 1, 0.1, 30, 32, 6),
        # a small set: strong augmentation, more views (cheap: few images); batches of a quarter of the 100
        # images, and enough epochs for the minimum number of steps (4 per epoch)
        ("head", 10, "strong", 4, 0.1, 75, 25, 15),
        ("partial:3", 100, "light", 4, 0.1, 20, 32, 5),  # trained stages after the cache want variety
        ("scratch", 100, "light", 4, 1.0, 20, 32, 5),  # nothing pretrained to protect: one learning rate
    ],
)
def test_resolve_fills_every_automatic_setting(strategy, per_class, augment, views, ratio, epochs, batch, patience):
    config = resolve(FitConfig(image_size=32), parse_strategy(strategy), per_class, per_class * 10)
    assert (config.augment, config.cached_views, config.backbone_lr_ratio) == (augment, views, ratio)
    assert (config.epochs, config.batch_size, config.patience, config.lr) == (epochs, batch, patience, 1e-3)
    assert (config.test_time_flip, config.ema_epochs) == (True, 2.0)  # no time limit


def test_a_time_limit_turns_the_test_time_flip_and_the_weight_average_off_unless_they_were_asked_for() -> None:
    full = parse_strategy("full")
    limited = resolve(FitConfig(image_size=32, time_limit=30), full, 100, 1000)
    assert (limited.test_time_flip, limited.ema_epochs) == (False, 0.0)
    asked = resolve(FitConfig(image_size=32, time_limit=30, test_time_flip=True, ema_epochs=1.0), full, 100, 1000)
    assert (asked.test_time_flip, asked.ema_epochs) == (True, 1.0)
    unlimited = resolve(FitConfig(image_size=32, test_time_flip=False, ema_epochs=0.0), full, 100, 1000)
    assert (unlimited.test_time_flip, unlimited.ema_epochs) == (False, 0.0)


def test_what_the_user_set_is_kept() -> None:
    given = FitConfig(image_size=32, cached_views=0, backbone_lr_ratio=0.5, augment="none", epochs=3)
    config = resolve(given, parse_strategy("full"), 100, 1000)
    assert (config.cached_views, config.backbone_lr_ratio, config.augment, config.epochs) == (0, 0.5, "none", 3)
