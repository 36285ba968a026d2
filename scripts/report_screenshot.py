"""The README's picture of a report: RUN_DIR's report.html in headless Chromium, through the same code the
report's browser test uses.

    python scripts/report_screenshot.py RUN_DIR docs/report.png
"""

from __future__ import annotations

import sys
from pathlib import Path

from transferlab.report.browser import find_chromium, screenshot


def main() -> None:
    run_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
    browser = find_chromium()
    if browser is None:
        sys.exit("Chromium is not installed: apt-get install chromium")
    print(f"written: {screenshot(browser, run_dir / 'report.html', out)}")


if __name__ == "__main__":
    main()
