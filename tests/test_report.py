"""`transferlab report`: one self-contained page, opened in a real headless Chromium, every section there and
every image decoded."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import TINY, image_folder
from transferlab.cli import main
from transferlab.config import FitConfig
from transferlab.fitting import fit
from transferlab.report.browser import SIZE, find_chromium, rendered_dom, screenshot
from transferlab.report.html import write_report

SECTIONS = ["summary", "data", "advice", "training", "confusion", "per-class", "mistakes", "config"]


@pytest.fixture(scope="module")
def run_dir(digits, tiny_weights, tmp_path_factory) -> Path:
    """`fit --strategy auto` on a folder of real digit PNGs with one corrupt file: every section has content."""
    root = image_folder(tmp_path_factory.mktemp("digits"), digits[0][:150], digits[1][:150])
    (root / "train" / "0" / "corrupt.png").write_bytes(b"not a png")
    config = FitConfig(backbone=TINY, weights=str(tiny_weights), image_size=32, epochs=2)
    return fit(str(root), config, tmp_path_factory.mktemp("run") / "run", quiet=True).run_dir


def test_fit_writes_a_self_contained_report_with_every_section(run_dir) -> None:
    page = (run_dir / "report.html").read_text()
    for section in SECTIONS:
        assert f"id='{section}'" in page, section
    assert "corrupt.png" in page  # the skipped file is named
    assert "src='http" not in page and "href='http" not in page  # nothing fetched: it opens offline
    thumbnails = re.findall(r"<img src='data:image/png;base64,", page)
    assert len(thumbnails) >= 1  # the most confidently wrong images, embedded
    assert "<title>validation loss, epoch 1:" in page  # a hover value on the training curve


def test_report_command_rewrites_it_and_refuses_an_unfinished_run(run_dir, tmp_path, capsys) -> None:
    assert main(["report", str(run_dir), "--out", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").read_text() == (run_dir / "report.html").read_text()
    assert main(["report", str(tmp_path)]) == 2
    assert "is not a finished run dir" in capsys.readouterr().err


def test_names_from_the_user_s_files_are_escaped_not_run_as_markup(run_dir, tmp_path) -> None:
    """A class folder or run dir may be named anything: on the page it is text, never a tag."""
    named = tmp_path / "runs & <b>tests"
    shutil.copytree(run_dir, named)
    scores = json.loads((named / "eval.json").read_text())
    scores["per_class"] = {"<script>alert(1)</script>" if k == "0" else k: v for k, v in scores["per_class"].items()}
    (named / "eval.json").write_text(json.dumps(scores))
    page = write_report(named).read_text()
    assert "runs &amp; &lt;b&gt;tests" in page and "<b>tests" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page


def test_no_report_skips_it(digits, tiny_weights, tmp_path) -> None:
    config = FitConfig(backbone=TINY, weights=str(tiny_weights), strategy="head", image_size=32, epochs=1)
    fit(digits, config.updated(report=False), tmp_path / "run", quiet=True)
    assert not (tmp_path / "run" / "report.html").exists()


@pytest.mark.slow
def test_the_report_renders_in_headless_chromium(run_dir, tmp_path) -> None:
    browser = find_chromium()
    if browser is None:
        pytest.skip("NO BROWSER: Chromium is not installed (make test installs Debian's chromium as root with apt)")
    dom = rendered_dom(browser, run_dir / "report.html")
    assert 'data-images="ok"' in dom  # the page's own check: every <img> decoded, none broken
    for section in SECTIONS:
        assert f'id="{section}"' in dom, section
    with Image.open(screenshot(browser, run_dir / "report.html", tmp_path / "report.png")) as image:
        assert image.size == SIZE
        pixels = np.asarray(image.convert("L").resize((110, 140)))
        assert len(np.unique(pixels)) > 20  # text, tables and charts drawn, not a blank page
