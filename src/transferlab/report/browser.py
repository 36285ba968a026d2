"""Opening a report in headless Chromium: its DOM after the page's scripts ran, and a screenshot. The report's
test and `scripts/report_screenshot.py` (the README's picture) share this code."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SIZE = (1100, 1400)


def find_chromium() -> str | None:
    """The Chromium binary on PATH (Debian's `chromium`), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _flags(browser: str) -> list[str]:
    # --no-sandbox: root in a container has no user namespace to sandbox in; the page is our own file.
    return [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]


def rendered_dom(browser: str, page: Path) -> str:
    """The page's DOM once loaded, its scripts run (the report marks `data-images` on <body> then)."""
    command = [*_flags(browser), "--dump-dom", Path(page).resolve().as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


def screenshot(browser: str, page: Path, out: Path, size: tuple[int, int] = SIZE) -> Path:
    """A PNG of the top `size` of the page."""
    command = [*_flags(browser), f"--screenshot={out}", f"--window-size={size[0]},{size[1]}"]
    subprocess.run([*command, Path(page).resolve().as_uri()], capture_output=True, timeout=120, check=True)
    return out
