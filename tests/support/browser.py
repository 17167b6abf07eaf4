"""A real browser for end-to-end tests: Playwright driving Debian's ``chromium``.

Playwright's own browser download cannot work on an offline machine, so it is
pointed at the system's Chromium (``apt-get install chromium``; ``scripts/test``
installs it). Without it a test is skipped on a laptop and fails in CI.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest

CHROMIUM = os.environ.get("MAILSCHED_TEST_CHROMIUM", "/usr/bin/chromium")


def _missing(what: str) -> None:
    message = f"{what}: run scripts/test, which installs it (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(f"a real browser is required in CI: {message}")
    pytest.skip(message)


@dataclass
class Watched:
    """What a page did that a test checks afterwards: console errors, and requests."""

    origin: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def console(self, kind: str, text: str) -> None:
        """A console message: errors are kept."""
        if kind == "error":
            self.errors.append(text)

    def foreign(self) -> list[str]:
        """Requests that left for another host (``data:`` and ``blob:`` stay here)."""
        return [
            url
            for url in self.requests
            if urlsplit(url).scheme in ("http", "https", "ws", "wss")
            and f"{urlsplit(url).scheme}://{urlsplit(url).netloc}" != self.origin
        ]


def watch(page: Any, watched: Watched) -> None:
    """Record the page's console errors, uncaught errors and requests in ``watched``."""
    page.on("console", lambda m: watched.console(m.type, m.text))
    page.on("pageerror", lambda e: watched.errors.append(str(e)))
    page.on("request", lambda r: watched.requests.append(r.url))


async def signed_in(browser: Any, base_url: str, key: str) -> tuple[Any, Watched]:
    """A new 1280x800 page, watched, signed in to the dashboard with ``key`` through
    its form, on the campaign list."""
    watched = Watched(base_url)
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    watch(page, watched)
    await page.goto(f"{base_url}/ui/")
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("heading", name="Campaigns").wait_for()
    return page, watched


def _exists(path: str) -> bool:
    return os.path.exists(path)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """A headless Chromium (Playwright's async API: the tests run in pytest-asyncio's
    loop, where the sync API cannot start its own)."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _missing("playwright is not installed")
    if not _exists(CHROMIUM):
        _missing(f"no Chromium at {CHROMIUM}")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            # As root (CI, containers) Chromium refuses to start with its sandbox.
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        try:
            yield chromium
        finally:
            await chromium.close()
