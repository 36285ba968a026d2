"""`transferlab probe` and `transferlab rank` through the CLI, on digits with tiny backbones and a real run dir."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.conftest import TINY, image_folder
from transferlab.cli import main

DATA = ["digits", "--image-size", "32", "--per-class", "20"]


@pytest.fixture(scope="module")
def run_dir(tiny_weights, tmp_path_factory) -> Path:
    """A model fitted by `transferlab fit`: the source of a new transfer."""
    out = tmp_path_factory.mktemp("run")
    fit = ["fit", *DATA, "--backbone", TINY, "--weights", str(tiny_weights), "--strategy", "full", "--epochs", "1"]
    assert main([*fit, "--device", "cpu", "--out", str(out)]) == 0
    return out


def test_probe_prints_a_table_and_writes_its_plot_and_json(tmp_path, capsys) -> None:
    assert main(["probe", *DATA, "--backbone", TINY, "--no-pretrained", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    saved = json.loads((tmp_path / "probe.json").read_text())
    assert saved["weights_source"] == "random" and saved["image_size"] == 32
    assert [stage["name"] for stage in saved["stages"]][-1] == "head"
    assert all(f" {stage['name']} " in out for stage in saved["stages"])  # one table row per stage
    assert (tmp_path / "probe.png").read_bytes()[:4] == b"\x89PNG"


def test_probe_of_a_run_dir_uses_its_trained_weights(run_dir, tmp_path, capsys) -> None:
    assert main(["probe", *DATA, "--backbone", str(run_dir), "--out", str(tmp_path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "probe.json").read_text())
    assert printed["weights_source"] == f"run:{run_dir.resolve()}"


def test_rank_scores_every_backbone_and_sorts_by_logme(run_dir, capsys) -> None:
    names = [TINY, "test_resnet", str(run_dir)]
    assert main(["rank", *DATA, "--backbones", ",".join(names), "--no-pretrained", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(row["backbone"] for row in rows) == sorted(names)
    assert [row["logme"] for row in rows] == sorted((row["logme"] for row in rows), reverse=True)
    assert all(math.isfinite(row["logme"]) and math.isfinite(row["h_score"]) for row in rows)
    assert all(0 <= row["probe_accuracy"] <= 1 and row["seconds"] > 0 for row in rows)
    by_name = {row["backbone"]: row for row in rows}
    # --no-pretrained asks for the structure only, a run dir's included
    assert by_name[str(run_dir)]["weights_source"] == "random"


@pytest.mark.parametrize("command", [["probe", "--backbone", "nope"], ["rank", "--backbones", f"{TINY},nope"]])
def test_an_unknown_backbone_is_one_line(command, capsys) -> None:
    assert main([command[0], *DATA, *command[1:], "--no-pretrained"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown backbone 'nope'" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "command",
    [["probe", "--backbone", TINY, "--no-pretrained"], ["rank", "--backbones", TINY, "--no-pretrained"], ["advise"]],
)
def test_measuring_commands_leave_the_test_split_unread(command, digits, tiny_weights, tmp_path, caplog) -> None:
    folder = image_folder(tmp_path / "digits", digits[0][:150], digits[1][:150])
    (folder / "test" / "0" / "corrupt.png").write_bytes(b"not a png at all")
    weights = ["--backbone", TINY, "--weights", str(tiny_weights)] if command == ["advise"] else []
    assert main([*command, *weights, str(folder), "--image-size", "32", "--json"]) == 0
    assert not [r for r in caplog.records if "corrupt.png" in r.getMessage()]  # a test file was never decoded
