"""Headless Debian Chromium driven by Python Playwright, as the browser tests use it: the system browser at
/usr/bin/chromium (never a downloaded one), the machine's offline flags, and a fresh profile. The tests skip where
Chromium or Playwright is missing, unless RECAST_REQUIRE_BROWSER=1 (set by `.ci/run`, which installs both), where
they fail."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# The flags this machine's closed network needs, plus two that let WebRTC use the loopback address in the clear
# (Chromium leaves loopback out of its candidates and hides host addresses behind mDNS names by default).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns"]


def browser_or_skip() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    missing = "Python playwright" if sync_playwright is None else (
        "" if CHROMIUM.exists() else f"{CHROMIUM} (apt-get install chromium)")
    if missing:
        if os.environ.get("RECAST_REQUIRE_BROWSER") == "1":
            pytest.fail(f"the browser test needs {missing}")
        pytest.skip(f"the browser test needs {missing}")
    return sync_playwright


@contextlib.contextmanager
def chromium_page(*flags: str) -> Iterator[tuple[Any, list[str]]]:
    """A page in a fresh headless Chromium (with more `flags`: a fake camera's), and the list its uncaught errors
    go to."""
    sync_playwright = browser_or_skip()
    with sync_playwright() as playwright, tempfile.TemporaryDirectory(prefix="recast-chromium-") as profile:
        browser = playwright.chromium.launch_persistent_context(profile, executable_path=str(CHROMIUM),
                                                                 args=[*CHROMIUM_FLAGS, *flags], headless=True)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            yield page, errors
        finally:
            browser.close()
