"""Playwright driving Debian's chromium (Playwright's own browser download is not used)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.support.chromium import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """A headless chromium for the module's tests (scripts/test installs it when missing)."""
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        pytest.fail("chromium not installed: scripts/test installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")),
            args=CHROMIUM_ARGS,
        )
        try:
            yield launched
        finally:
            launched.close()
