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
