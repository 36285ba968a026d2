"""`transferlab export`: ONNX and TorchScript files that reproduce the model's probabilities on real images, carry
what a consumer needs in their metadata, and predict without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import transferlab
from tests.conftest import TINY, image_folder
from transferlab.cli import main
from transferlab.config import FitConfig
from transferlab.export import TOLERANCE, ExportError, export_model
from transferlab.fitting import fit

onnx = pytest.importorskip("onnx", reason="needs the export extra: pip install 'transferlab[export]'")
onnxruntime = pytest.importorskip("onnxruntime", reason="needs the export extra: pip install 'transferlab[export]'")
pytestmark = pytest.mark.slow  # each ONNX export traces the model with torch.export: seconds


@pytest.fixture(scope="module")
def run_dir(digits, tiny_weights, tmp_path_factory) -> Path:
    """A fitted run on a folder of real digit PNGs, with the test-time flip on (light augmentation)."""
    source = image_folder(tmp_path_factory.mktemp("digits"), *(a[:120] for a in digits), size=20)
    settings = {"backbone": TINY, "weights": str(tiny_weights), "strategy": "partial:2", "image_size": 32}
    config = FitConfig(**settings, epochs=2, augment="light", lr=0.01)
    return fit(str(source), config, tmp_path_factory.mktemp("run") / "run", quiet=True).run_dir


@pytest.fixture(scope="module")
def onnx_file(run_dir) -> Path:
    export_model(run_dir, "onnx")
    return run_dir / "model.onnx"


def _test_images(run_dir: Path) -> list[Path]:
    source = Path(FitConfig.load(run_dir / "config.yaml").source or "")
    return sorted((source / "test").rglob("*.png"))


def test_onnx_export_matches_pytorch_and_carries_its_preprocessing_and_classes(run_dir, onnx_file) -> None:
    graph = onnx.load(str(onnx_file))
    info = json.loads({p.key: p.value for p in graph.metadata_props}["transferlab"])
    assert info["outputs"] == {"label": ["0", "1", "2"]} and info["opset"] == 18
    assert (info["input"]["size"], info["input"]["dtype"], info["input"]["layout"]) == (32, "uint8", "NCHW")
    assert info["test_time_flip"] == {"used": True, "in_graph": True}
    clf = transferlab.load(run_dir, inference_precision="32")  # the .onnx file runs in float32
    assert info["normalisation"]["mean"] == list(clf.model_.backbone.preprocessing.mean)
    assert {opset.version for opset in graph.opset_import if opset.domain in ("", "ai.onnx")} == {18}
    # any batch size, and the probabilities of the fitted model on real images it never trained on
    paths = _test_images(run_dir)
    session = onnxruntime.InferenceSession(str(onnx_file))
    for count in (1, 7):
        images = np.stack([np.asarray(Image.open(p).convert("RGB").resize((32, 32))) for p in paths[:count]])
        ours = session.run(["label"], {"images": images.transpose(0, 3, 1, 2).copy()})[0]
        assert ours.shape == (count, 3)
        assert np.abs(ours - clf.predict_proba(images)).max() <= TOLERANCE


def test_predict_runs_an_onnx_file_without_torch_and_agrees_with_the_run_dir(run_dir, onnx_file) -> None:
    test = run_dir.parent / "test-images"
    test.mkdir(exist_ok=True)
    for path in _test_images(run_dir)[:10]:
        (test / path.name).write_bytes(path.read_bytes())
    (test / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    script = (
        "import sys; from transferlab.cli import main; code = main(sys.argv[1:]); "
        "print('torch imported' if 'torch' in sys.modules else 'no torch', file=sys.stderr); sys.exit(code)"
    )
    argv = ["predict", str(onnx_file), str(test), "--top-k", "2"]
    done = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True)
    assert done.returncode == 1  # the broken file
    assert done.stderr.strip().splitlines()[-1] == "no torch"
    exported = [json.loads(line) for line in done.stdout.splitlines()]
    direct = list(transferlab.load(run_dir, inference_precision="32").predict_paths([test], top_k=2))
    assert [row["path"] for row in exported] == [row["path"] for row in direct]
    assert exported[-1] == {"path": str(test / "broken.png"), "error": "truncated image"}
    for ours, theirs in zip(exported[:-1], direct[:-1], strict=True):
        assert [t["label"] for t in ours["top"]] == [t["label"] for t in theirs["top"]]
        assert max(abs(a["prob"] - b["prob"]) for a, b in zip(ours["top"], theirs["top"], strict=True)) <= TOLERANCE


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_export_matches_pytorch(run_dir, capsys) -> None:
    assert main(["export", str(run_dir), "--format", "torchscript", "--out", str(run_dir / "m.pt")]) == 0
    out = capsys.readouterr().out
    assert "exported torchscript" in out and "parity on 24 images" in out  # the run's own test split
    import torch

    extra = {"transferlab.json": ""}
    scripted = torch.jit.load(str(run_dir / "m.pt"), _extra_files=extra)
    assert json.loads(extra["transferlab.json"])["outputs"] == {"label": ["0", "1", "2"]}
    images = np.stack([np.asarray(Image.open(p).convert("RGB").resize((32, 32))) for p in _test_images(run_dir)])
    with torch.inference_mode():
        (probs,) = scripted(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
    expected = transferlab.load(run_dir, inference_precision="32").predict_proba(images)
    assert np.abs(probs.numpy() - expected).max() <= TOLERANCE


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_an_export_that_disagrees_with_pytorch_is_refused_and_removed(run_dir, monkeypatch) -> None:
    """The parity check stands between a wrong graph and its users: here the written file answers 0.001 off
    PyTorch's probabilities, ten times the tolerance."""
    import transferlab.export as export

    written = export._write_torchscript

    def off(*args):  # type: ignore[no-untyped-def]
        run = written(*args)
        return lambda images: {head: probs + 1e-3 for head, probs in run(images).items()}

    monkeypatch.setattr(export, "_write_torchscript", off)
    out = run_dir / "off.pt"
    with pytest.raises(ExportError, match=r"differs from PyTorch by up to 1\.00e-03"):
        export_model(run_dir, "torchscript", out=out)
    assert not out.exists()


def test_a_multi_domain_model_exports_every_head_and_predicting_needs_the_domain(
    digits, tiny_weights, tmp_path, capsys
) -> None:
    images, labels = digits
    sources = {
        "digits": str(image_folder(tmp_path / "a", images[:90], labels[:90], size=20)),
        "inverted": str(image_folder(tmp_path / "b", 255 - images[90:180], labels[90:180] % 2, size=20)),
    }
    config = FitConfig(backbone=TINY, weights=str(tiny_weights), strategy="partial:3", image_size=32, epochs=1)
    run = fit(sources, config.updated(domain_batchnorm=True), tmp_path / "run", quiet=True).run_dir
    with pytest.raises(ExportError, match="records no source"):  # several domains: no one source to check on
        export_model(run, "onnx")
    check = [Path(sources["digits"]) / "test"]
    assert main(["export", str(run), "--check-images", *map(str, check)]) == 0
    assert "max |probability difference|" in capsys.readouterr().out
    session = onnxruntime.InferenceSession(str(run / "model.onnx"))
    assert [o.name for o in session.get_outputs()] == ["digits", "inverted"]
    assert main(["predict", str(run / "model.onnx"), str(check[0])]) == 2
    assert "name the images' domain (digits, inverted)" in capsys.readouterr().err
    assert main(["predict", str(run / "model.onnx"), str(check[0]), "--domain", "inverted"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows and all(row["top"][0]["label"] in ("0", "1") for row in rows)
