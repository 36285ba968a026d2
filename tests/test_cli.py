"""The `transferlab` command through its real entry point: one-line errors, JSON outputs, fit → evaluate →
predict on a real image folder, and Ctrl-C → resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import pytest

import transferlab
from tests.conftest import TINY, image_folder
from transferlab.cli import main
from transferlab.config import FitConfig
from transferlab.errors import Interrupted
from transferlab.fitting import build_run, train_run
from transferlab.train.loop import Callback


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "transferlab", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


def _tiny_fit(folder: Path, weights: Path, run: Path, strategy: str, epochs: int) -> list[str]:
    """`fit` arguments for the tiny backbone at 32 px, writing to `run`."""
    return ["fit", str(folder), "--backbone", TINY, "--weights", str(weights), "--strategy", strategy,
            "--epochs", str(epochs), "--image-size", "32", "--out", str(run)]  # fmt: skip


@pytest.fixture(scope="module")
def folder(digits, tmp_path_factory) -> Path:
    """An image folder with train/ and test/ class subfolders of real PNG files, plus one corrupt file."""
    root = image_folder(tmp_path_factory.mktemp("digits"), digits[0][:150], digits[1][:150])
    (root / "train" / "0" / "corrupt.png").write_bytes(b"not a png at all")
    return root


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fit", "/no/such/place"], "no such file or folder: /no/such/place"),
        (["fit", "digits", "--strategy", "sideways"], "unknown strategy"),
        (["fit", "digits", "--epochs", "0"], "epochs must be at least 1"),
        (["fit", "digits", "--epochs", "many"], "invalid int value"),
        (["advise", "digits", "--image-size", "0"], "image size must be at least 1, got 0"),
        (["predict", "/no/run", "x.png"], "not a transferlab model"),
    ],
)
def test_wrong_arguments_get_one_line_and_no_traceback(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) if "many" in argv else nullcontext():  # argparse exits by itself
        code = main(argv)
        assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_data_json_lists_classes_counts_and_skipped_files(folder, capsys) -> None:
    assert main(["data", str(folder), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["classes"] == ["0", "1", "2"]
    assert sum(summary["counts"]["test"].values()) == 30
    assert [Path(s["path"]).name for s in summary["skipped"]] == ["corrupt.png"]


@pytest.mark.slow
def test_fit_evaluate_predict_on_an_image_folder(folder, tiny_weights, tmp_path) -> None:
    run = tmp_path / "run"
    fitted = _run(*_tiny_fit(folder, tiny_weights, run, "partial:3", epochs=2))
    assert fitted.returncode == 0, fitted.stderr
    assert "corrupt.png" in fitted.stderr  # the skipped file is named, with its reason
    assert (run / "eval.json").is_file() and (run / "confusion.png").is_file()

    evaluated = _run("evaluate", str(run), str(folder), "--json")
    assert "corrupt.png" not in evaluated.stderr  # it decodes the test split alone, not the training files
    scores = json.loads(evaluated.stdout)
    assert set(scores) >= {"accuracy", "macro_f1", "per_class", "confusion"}
    saved = json.loads((run / "eval.json").read_text())  # what fit measured on the test split at its end
    assert saved["split"] == "test"
    assert (scores["accuracy"], scores["confusion"], scores["per_class"]) == (
        saved["accuracy"],
        saved["confusion"],
        saved["per_class"],
    )

    (tmp_path / "bad.jpg").write_text("<html>not an image</html>")
    predicted = _run("predict", str(run), str(folder / "test" / "1"), str(tmp_path / "bad.jpg"), "--top-k", "2")
    rows = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert predicted.returncode == 1  # not every image could be predicted
    assert sum("top" in r for r in rows) == len(list((folder / "test" / "1").iterdir()))
    assert [r["path"] for r in rows if "error" in r] == [str(tmp_path / "bad.jpg")]
    assert all(list(r) == ["path", "top"] for r in rows if "top" in r)
    exact = _run("predict", str(run), str(folder / "test" / "1"), "--top-k", "2", "--inference-precision", "32")
    assert exact.returncode == 0 and len(exact.stdout.splitlines()) == len(list((folder / "test" / "1").iterdir()))


class SignalAt(Callback):
    """Sends this very process a real SIGINT after optimizer step `step`: Ctrl-C at a known moment."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer) -> None:
        if trainer.state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_writes_a_resumable_checkpoint_and_resume_finishes(folder, tiny_weights, tmp_path, capsys) -> None:
    run_dir = tmp_path / "run"
    users_handler = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under nohup
    config = FitConfig(backbone=TINY, weights=str(tiny_weights), strategy="full", epochs=4, image_size=32, batch_size=8)
    run = build_run(str(folder), config, run_dir, echo=lambda _: None)
    with pytest.raises(Interrupted, match="transferlab fit --resume"):
        train_run(run, quiet=True, callbacks=[SignalAt(len(run.train) + 2)])  # in epoch 2, through the handler
    assert "stopping after this step" in capsys.readouterr().err
    assert (run_dir / "checkpoint.safetensors").is_file()
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1
    assert main(["fit", "--resume", str(run_dir)]) == 0
    assert "resuming at epoch 2" in capsys.readouterr().out
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 4
    assert signal.getsignal(signal.SIGINT) is users_handler  # the user's handler is back


def test_advise_json_has_the_promised_keys(tiny_weights, capsys) -> None:
    argv = ["advise", "digits", "--backbone", TINY, "--weights", str(tiny_weights), "--per-class", "30"]
    assert main([*argv, "--image-size", "32", "--json"]) == 0
    advice = json.loads(capsys.readouterr().out)
    assert set(advice) >= {"situation", "strategy", "freeze_stages", "evidence"}
    assert advice["evidence"]["images_per_class"] == 30 and advice["situation"].startswith("small")
    assert main([*argv, "--image-size", "32"]) == 0
    assert "decision: small and" in capsys.readouterr().out


def test_compare_fits_each_strategy_on_the_same_budget(tiny_weights, tmp_path, capsys) -> None:
    argv = ["compare", "digits", "--backbone", TINY, "--weights", str(tiny_weights), "--strategies", "head,full"]
    assert main([*argv, "--per-class", "30", "--image-size", "32", "--epochs", "2", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "compare.json").read_text())
    assert [r["strategy"] for r in rows] == ["head", "full"] and (tmp_path / "compare.png").is_file()
    assert rows[0]["trainable_parameters"] < rows[1]["trainable_parameters"]
    assert all(r["epochs"] == 2 and r["evaluated_on"] == "test" for r in rows)
    printed = capsys.readouterr().out.splitlines()
    for row in rows:  # the printed table holds compare.json's scores
        line = next(line.split() for line in printed if line.split()[:1] == [row["strategy"]])
        assert line[1:3] == [f"{row['accuracy']:.4f}", f"{row['macro_f1']:.4f}"]


def test_help_does_not_import_torch() -> None:
    """`transferlab --help` parses before anything heavy loads: torch alone takes seconds to import."""
    code = "import sys; from transferlab.cli import main\ntry:\n main(['--help'])\nexcept SystemExit:\n pass\n"
    code += "print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().endswith("False")


def test_fit_help_gives_each_on_off_flag_its_default(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    said = " ".join(capsys.readouterr().out.split())  # argparse wraps lines where it likes
    assert "--report, --no-report default: on" in said and "--refit, --no-refit default: off" in said
    assert "--test-time-flip, --no-test-time-flip default: automatic" in said  # on, off under --time-limit


def test_version_and_runs_list_the_finished_run_dirs(folder, tiny_weights, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"transferlab {transferlab.__version__}"
    assert main(["runs", str(tmp_path)]) == 2  # nothing finished there yet
    assert "no finished run dirs" in capsys.readouterr().err
    assert main(_tiny_fit(folder, tiny_weights, tmp_path / "a", "head", 1)) == 0
    (tmp_path / "unfinished").mkdir()
    capsys.readouterr()
    assert main(["runs", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].startswith(str(tmp_path / "a")) and " head " in lines[1]
    assert re.search(r"\d+\.\d\d% test", lines[1])
