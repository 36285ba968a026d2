from pathlib import Path

import pytest

from transferlab.config import FitConfig
from transferlab.errors import ConfigError


def test_yaml_round_trip_keeps_every_setting(tmp_path: Path) -> None:
    config = FitConfig(strategy="partial:3", epochs=4, lr=3e-4, schedule="step", time_limit=60.0)
    config.save(tmp_path / "config.yaml")
    assert FitConfig.load(tmp_path / "config.yaml") == config


def test_flags_override_yaml_and_none_means_not_given(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("epochs: 3\nbatch_size: 16\n")
    config = FitConfig.load(tmp_path / "c.yaml").updated(epochs=9, batch_size=None)
    assert (config.epochs, config.batch_size) == (9, 16)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"optimizer": "adam"}, "optimizer must be one of"),
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"lr": -1.0}, "lr must be positive"),
        ({"val_fraction": 1.5}, "val_fraction"),
        ({"colour": 1}, "unknown setting"),
        ({"strategy": "partial"}, "unknown strategy 'partial': use one of auto, head, partial:K"),
        ({"seed": "1"}, "seed must be a whole number, got '1'"),
        ({"epochs": 2.5}, "epochs must be a whole number"),
        ({"lr": "1e-3"}, "lr must be a number, got '1e-3'"),
        ({"test_time_flip": 1}, "test_time_flip must be true or false"),
        ({"domains": ["a=x", 3]}, "domains must be a list of text"),
        ({"keep_by": "accuracy"}, "keep_by must be one of loss, tempered_loss"),
    ],
)
def test_bad_settings_get_one_clear_line(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        FitConfig().updated(**changes)
    assert "\n" not in str(error.value)


def test_a_yaml_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        FitConfig.load(tmp_path / "c.yaml")


def test_a_bad_setting_in_a_yaml_file_fails_before_any_data_is_read(tmp_path: Path, capsys) -> None:
    from transferlab.cli import main

    (tmp_path / "c.yaml").write_text("seed: '1'\n")
    assert main(["fit", "no-such-folder", "--config", str(tmp_path / "c.yaml")]) == 2
    assert capsys.readouterr().err.strip() == "transferlab fit: error: seed must be a whole number, got '1'"
    assert main(["fit", "no-such-folder", "--strategy", "partial"]) == 2
    assert "unknown strategy 'partial'" in capsys.readouterr().err
