"""`select` and `advise --target` on tiny coloured images: a source half red, half blue (two classes each), a
target of red images. The tiny backbone's 'pretrained' weights are a seeded random init (see conftest): colour
alone separates the domains, so no real pretraining is needed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import TINY
from transferlab.adaptation.selection import Selection, format_selection, select_source
from transferlab.adaptation.shift import DomainClassifier
from transferlab.cli import main
from transferlab.data import load_source

COLOURS = {"red": (200, 40, 40), "blue": (40, 40, 200), "green": (40, 200, 40)}
PER_COLOUR = 40  # images of each colour in the source, and in each target


def _images(colour: str, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` noisy 16x16 images of `colour`, labels alternating 0, 1: class 0 has a light horizontal bar,
    class 1 a vertical one (so the classes differ in shape, not in colour)."""
    rng = np.random.default_rng(seed)
    images = np.clip(np.array(COLOURS[colour]) + rng.normal(0, 25, (count, 16, 16, 3)), 0, 255)
    labels = np.arange(count) % 2
    images[labels == 0, 6:10, :] += 50
    images[labels == 1, :, 6:10] += 50
    return np.clip(images, 0, 255).astype(np.uint8), labels


def _mixed_source() -> tuple[np.ndarray, np.ndarray]:
    """Red images then blue ones, each of both classes."""
    red, blue = _images("red", PER_COLOUR, seed=1), _images("blue", PER_COLOUR, seed=2)
    return np.concatenate([red[0], blue[0]]), np.concatenate([red[1], blue[1]])


def _plain_folder(root: Path, colour: str) -> Path:
    """A folder of unlabelled PNG files (no class subfolders), as a target may be."""
    root.mkdir(parents=True)
    for i, image in enumerate(_images(colour, PER_COLOUR, seed=3)[0]):
        Image.fromarray(image).save(root / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def source_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mixed source as an image folder: class subfolders a and b."""
    root = tmp_path_factory.mktemp("source")
    images, labels = _mixed_source()
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        (root / "ab"[label]).mkdir(exist_ok=True)
        Image.fromarray(image).save(root / "ab"[label] / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def red_target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _plain_folder(tmp_path_factory.mktemp("target") / "red", "red")


def _red_fraction(manifest: Path) -> float:
    """The fraction of the manifest's images (train and val) that are red rather than blue."""
    splits = load_source(manifest).splits.values()
    means = np.array([np.asarray(Image.open(path)).mean((0, 1)) for split in splits for path in split.paths or []])
    return float(np.mean(means[:, 0] > means[:, 2]))


def test_select_keeps_the_target_like_half_of_in_memory_images(tiny_weights, red_target, tmp_path) -> None:
    images, labels = _mixed_source()
    out = tmp_path / "kept.csv"
    selection = select_source(
        (images, labels, ["a", "b"]), red_target, 0.5, out, backbone=TINY, weights=str(tiny_weights), image_size=32
    )
    assert sum(selection.kept) == PER_COLOUR and selection.available == [PER_COLOUR, PER_COLOUR]
    assert all(selection.kept) and selection.ratio_dropped is not None
    assert selection.ratio_kept > selection.ratio_dropped
    # in-memory images were written as PNG files beside the manifest, which names them relative to its folder
    assert len(list((tmp_path / "kept-images").rglob("*.png"))) == PER_COLOUR
    assert all(not Path(row["path"]).is_absolute() for row in _rows(out))
    assert sum(len(split) for split in load_source(out).splits.values()) == PER_COLOUR
    assert _red_fraction(out) >= 0.9


def _rows(manifest: Path) -> list[dict[str, str]]:
    with manifest.open(newline="") as file:
        return list(csv.DictReader(file))


def test_select_command_on_an_image_folder(tiny_weights, source_folder, red_target, tmp_path, capsys) -> None:
    out = tmp_path / "sub" / "kept.csv"
    argv = ["select", str(source_folder), "--target", str(red_target), "--keep", str(PER_COLOUR), "--out", str(out)]
    assert main([*argv, "--backbone", TINY, "--weights", str(tiny_weights), "--image-size", "32"]) == 0
    printed = capsys.readouterr().out
    assert f"kept {PER_COLOUR} of {2 * PER_COLOUR} source images" in printed
    assert "per class, kept / available:" in printed and f"/ {PER_COLOUR}" in printed
    assert "proxy A-distance" in printed and f"written: {out}" in printed
    rows = _rows(out)
    assert {row["split"] for row in rows} == {"train"}  # fit carves its own val
    assert all(Path(row["path"]).is_absolute() for row in rows)  # the source's own files, wherever it runs
    assert not (out.parent / "kept-images").exists()
    assert _red_fraction(out) >= 0.9


@pytest.mark.parametrize(
    ("keep", "out", "message"),
    [
        ("many", "kept.csv", "--keep takes a count (300) or a fraction (0.3), got 'many'"),
        ("0", "kept.csv", "keep must be positive"),
        ("1.5", "kept.csv", "keep as a fraction must be in (0, 1]"),
        ("500", "kept.csv", f"keep=500 is more than the {2 * PER_COLOUR} source images"),
        ("0.5", "kept.txt", "the manifest must be a .csv file"),
    ],
)
def test_select_refuses_bad_values_in_one_line(
    tiny_weights, source_folder, red_target, tmp_path, capsys, keep, out, message
) -> None:
    argv = ["select", str(source_folder), "--target", str(red_target), "--keep", keep, "--out", str(tmp_path / out)]
    assert main([*argv, "--backbone", TINY, "--weights", str(tiny_weights), "--image-size", "32"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_class_far_below_its_share_is_flagged() -> None:
    nothing = np.zeros(0)
    shift = DomainClassifier(nothing, nothing, accuracy=0.9, proxy_a_distance=1.6, regularization=1.0, seconds=0.0)
    # 50 of 100 kept: each class's share is 25; b kept 4, under a fifth of it
    selection = Selection(Path("kept.csv"), ["a", "b"], [50, 50], [46, 4], shift, ratio_kept=2.0, ratio_dropped=0.1)
    assert selection.thin_classes() == ["b"]
    lines = format_selection(selection).splitlines()
    assert [line.split()[0] for line in lines if "<- under 20% of its share" in line] == ["b"]


def test_advise_with_a_target_measures_the_shift_and_chooses_a_method(tiny_weights, source_folder, capsys) -> None:
    green = _plain_folder(source_folder.parent / "green", "green")
    argv = ["advise", str(source_folder), "--backbone", TINY, "--weights", str(tiny_weights), "--image-size", "32"]
    assert main([*argv, "--target", str(green)]) == 0
    printed = capsys.readouterr().out
    assert "decision:" in printed  # the usual advice stays
    assert "domain shift, on" in printed and "proxy A-distance" in printed
    assert "adaptation method: adabn" in printed

    # the source as its own target: nothing to adapt to
    assert main([*argv, "--target", str(source_folder), "--json"]) == 0
    adaptation = json.loads(capsys.readouterr().out)["adaptation"]
    assert set(adaptation) >= {"domain_accuracy", "proxy_a_distance", "method", "why"}
    assert adaptation["method"] == "none" and adaptation["proxy_a_distance"] < 0.5
