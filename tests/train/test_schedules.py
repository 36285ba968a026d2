import pytest

from transferlab.config import FitConfig
from transferlab.train.schedules import lr_factor


def test_step_schedule_drops_by_gamma_every_step_size_epochs() -> None:
    config = FitConfig(schedule="step", epochs=20, step_size=7, gamma=0.1)
    assert [lr_factor(config, e, 0, 10) for e in (0, 6, 7, 14)] == pytest.approx([1, 1, 0.1, 0.01])


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_annealing_schedules_warm_up_then_decay_to_near_zero(schedule: str) -> None:
    config = FitConfig(schedule=schedule, epochs=10)
    factors = [lr_factor(config, e, s, 10) for e in range(10) for s in range(10)]
    peak = factors.index(max(factors))
    assert factors[0] < max(factors) == pytest.approx(1.0, abs=0.02)
    assert all(a >= b for a, b in zip(factors[peak:], factors[peak + 1 :], strict=False))
    assert factors[-1] < 0.01


@pytest.mark.parametrize(
    ("schedule", "epochs", "peak_step"), [("cosine", 10, 5), ("cosine", 40, 10), ("onecycle", 10, 30)]
)
def test_the_warm_up_ends_where_each_schedule_puts_it(schedule: str, epochs: int, peak_step: int) -> None:
    """cosine warms up over the shorter of 5% of training and one epoch (10 steps here); onecycle over 30%."""
    config = FitConfig(schedule=schedule, epochs=epochs)
    factors = [lr_factor(config, e, s, 10) for e in range(epochs) for s in range(10)]
    assert factors.index(max(factors)) == peak_step
