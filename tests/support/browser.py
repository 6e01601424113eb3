"""Test support: one way to get a headless browser, Debian's `chromium` driven through Playwright (as a clinician's
browser runs OHIF and the answers page). Without Playwright or Chromium the test is skipped with what to install."""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# SwiftShader gives headless Chromium the WebGL that OHIF's viewports need; --no-sandbox because CI runs as root.
CHROMIUM_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
CHROMIUM_HINT = f"{CHROMIUM} is missing: run bash scripts/install_system.sh"


def chromium_installed() -> bool:
    return Path(CHROMIUM).exists()


def sync_api():
    """Playwright's sync API (`playwright.sync_api`), or the test (or module, at import) skipped."""
    return pytest.importorskip("playwright.sync_api", reason="pip install playwright (requirements.txt)")


def require_chromium() -> None:
    """Skips the test unless both Playwright and Chromium are here: call it before any costly set-up."""
    sync_api()
    if not chromium_installed():
        pytest.skip(CHROMIUM_HINT)


@contextmanager
def headless_chromium() -> Iterator:
    """A headless Chromium (a Playwright `Browser`), closed after."""
    require_chromium()
    with sync_api().sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
