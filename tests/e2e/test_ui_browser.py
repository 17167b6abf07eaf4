"""The dashboard in a real browser, on each stack: sign in through the form, watch a
sending campaign's bar move without a reload, a wrong key refused, a ``<script>``
subject shown as text; no console error and no request to another host.

With ``MAILSCHED_UI_SCREENSHOTS=1`` it also saves the pages at 1280x800 under
``docs/ui/`` (ordinary runs leave those files alone).
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stack
from tests.support.browser import Watched, watch
from tests.support.deployment import Api, deployed
from tests.support.smtp_sink import SmtpSink

pytestmark = pytest.mark.e2e

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "ui"
SCRIPT_SUBJECT = "<script>alert(1)</script>"


async def _shot(page: Any, name: str) -> None:
    if os.environ.get("MAILSCHED_UI_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / name))


async def _create(api: Api, subject: str, start: datetime, count: int) -> int:
    created = await api.campaign(
        {
            "userId": 1,
            "subject": subject,
            "body": "Hello from the dashboard test.",
            "startTime": start.isoformat().replace("+00:00", "Z"),
            "delaySeconds": 1,
            "hourlyLimit": 1000,
            "recipients": [f"ui{i}@example.com" for i in range(count)],
        }
    )
    return int(created["campaignId"])


async def test_the_dashboard_shows_progress_live(
    stack: Stack, smtp_sink: SmtpSink, tmp_path: Path, browser: Any
) -> None:
    async with deployed(stack, {"MAILSCHED_SMTP_URL": smtp_sink.url}, tmp_path) as (app, api):
        await asyncio.to_thread(app.wait_joined)
        # A wrong key: the form again, with the error, and no cookie. The refusal is
        # a 401, which Chromium logs as the one console error of this page.
        refused = Watched(app.base_url)
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        watch(page, refused)
        await page.goto(f"{app.base_url}/ui/")
        await _shot(page, "sign-in.png")
        await page.get_by_label("API key").fill("ms_wrong_key")
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_role("alert").wait_for()
        assert await page.context.cookies() == []
        await page.close()
        assert refused.errors == [
            "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
        ]
        assert refused.foreign() == []

        watched = Watched(app.base_url)
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        watch(page, watched)
        await page.goto(f"{app.base_url}/ui/")

        await _create(api, SCRIPT_SUBJECT, datetime.now(UTC) + timedelta(days=30), 2)
        now = datetime.now(UTC)
        sending = await _create(api, "Live progress", now + timedelta(seconds=2), 15)

        await page.get_by_label("API key").fill(app.key)
        await page.get_by_role("button", name="Sign in").click()
        await page.get_by_role("heading", name="Campaigns").wait_for()
        cookie = (await page.context.cookies())[0]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert app.key not in str(await page.evaluate("() => JSON.stringify(localStorage)"))

        # The subject is text: a link named by it, and no alert ran.
        await page.get_by_role("link", name=SCRIPT_SUBJECT).wait_for()

        bar = page.locator(f'tr[data-campaign="{sending}"] [role="progressbar"]')
        await page.evaluate("() => { window.notReloaded = true; }")
        seen = [int(await bar.get_attribute("aria-valuenow"))]
        deadline = time.monotonic() + 90
        while seen[-1] < 100:
            assert time.monotonic() < deadline, f"the bar stopped at {seen}"
            await asyncio.sleep(0.5)
            value = int(await bar.get_attribute("aria-valuenow"))
            if value != seen[-1]:
                seen.append(value)
                if len(seen) == 3:
                    await _shot(page, "campaigns.png")
        assert seen == sorted(seen) and len(seen) >= 3, seen
        assert await page.evaluate("() => window.notReloaded") is True
        width = await bar.locator(".fill").evaluate("e => e.style.width")
        assert width == "100%"
        row = page.locator(f'tr[data-campaign="{sending}"]')
        await row.get_by_text("15/15").wait_for()
        # At a phone's width the list reflows: nothing wider than the screen.
        await page.set_viewport_size({"width": 390, "height": 844})
        assert await page.evaluate("() => document.documentElement.scrollWidth") <= 390
        await page.close()
    assert watched.errors == [], watched.errors
    assert watched.foreign() == []
    assert f"{app.base_url}/ui/static/ui.js" in watched.requests
