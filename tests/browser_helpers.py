"""A real headless browser for the tests: Debian's Chromium driven by Playwright.

``./run test`` installs both (``apt-get install chromium``; the ``playwright`` wheel of the dev
extra). Playwright's own browser download needs the internet, so Chromium is the system's.
Screenshots go to :func:`artifacts_dir` (``CROPFLOW_TEST_ARTIFACTS``, else
``test-artifacts/`` in the project), which CI keeps as test artifacts.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
#: Flags of a headless Chromium as root on a machine with no internet: without the
#: background-networking ones it keeps trying Google's hosts.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    """The system Chromium; a clear failure when it is not installed."""
    found = os.environ.get("CROPFLOW_CHROMIUM") or shutil.which("chromium")
    if not found:
        raise RuntimeError(
            "no Chromium: the browser tests need Debian's package (`apt-get install chromium`, "
            "done by ./run test), or CROPFLOW_CHROMIUM=/path/to/chrome"
        )
    return found


def artifacts_dir(name: str) -> Path:
    """A folder for one test's screenshots, kept after the run."""
    root = Path(os.environ.get("CROPFLOW_TEST_ARTIFACTS", PROJECT / "test-artifacts"))
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def browser_page(console_errors: list[str]) -> Iterator[Any]:
    """A page of a fresh headless Chromium (1400 x 1000); console errors are collected."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)

            def on_console(msg: Any) -> None:
                if msg.type == "error":
                    where = (msg.location or {}).get("url", "")
                    console_errors.append(f"{msg.text} ({where})")

            page.on("console", on_console)
            yield page
        finally:
            browser.close()
