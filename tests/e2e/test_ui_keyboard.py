"""The dashboard with the keyboard alone, in a real browser, on each stack: sign in,
reach a campaign, open the Cancel dialog (its safe button has the focus), leave
it with Escape, then cancel. Another user's campaign is a 404; every page's
fields have a label, and at a phone's width no page is wider than the screen.

With ``MAILSCHED_UI_SCREENSHOTS=1`` it also saves a campaign's page at a phone's
width as ``docs/ui/campaign-phone.png``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Stack
from tests.e2e.test_ui_browser import _create, _shot
from tests.support.browser import Watched, watch
from tests.support.deployment import Api, deployed
from tests.support.processes import auth, create_key
from tests.support.smtp_sink import SmtpSink

pytestmark = pytest.mark.e2e

_BODY = {
    "subject": "Not yours",
    "body": "Hello.",
    "startTime": "2030-01-01T00:00:00Z",
    "delaySeconds": 0,
    "hourlyLimit": 10,
    "recipients": ["someone@example.com"],
}

#: Every visible field without a label, and every button without a name.
UNLABELLED = """() => Array.from(document.querySelectorAll(
    'input:not([type=hidden]), select, textarea, button'))
  .filter(e => e.offsetParent !== null || e.closest('dialog'))
  .filter(e => e.tagName === 'BUTTON'
    ? !(e.textContent.trim() || e.getAttribute('aria-label'))
    : !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
  .map(e => e.outerHTML)"""


async def _tab_to(page: Any, text: str, most: int = 60) -> None:
    """Press Tab until the focused element's text (or label) is ``text``."""
    for _ in range(most):
        await page.keyboard.press("Tab")
        focused = await page.evaluate(
            "() => (document.activeElement.textContent || '').trim()"
            " || document.activeElement.getAttribute('aria-label') || ''"
        )
        if focused == text:
            return
    raise AssertionError(f"{text!r} cannot be reached with Tab")


async def _focused(page: Any) -> str:
    return str(await page.evaluate("() => document.activeElement.textContent.trim()"))


async def test_the_dashboard_works_with_the_keyboard_alone(
    stack: Stack, smtp_sink: SmtpSink, tmp_path: Path, browser: Any
) -> None:
    async with deployed(stack, {"MAILSCHED_SMTP_URL": smtp_sink.url}, tmp_path) as (app, api):
        later = await _create(api, "Keyboard campaign", datetime.now(UTC) + timedelta(days=3), 2)
        watched = Watched(app.base_url)
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        watch(page, watched)
        await page.goto(f"{app.base_url}/ui/")
        # The key field has the focus from the start.
        await page.keyboard.type(app.key)
        await page.keyboard.press("Enter")
        await page.get_by_role("heading", name="Campaigns").wait_for()

        await _tab_to(page, "Keyboard campaign")
        await page.keyboard.press("Enter")
        await page.get_by_role("heading", name="Keyboard campaign").wait_for()
        assert page.url.endswith(f"/ui/campaigns/{later}")

        await _tab_to(page, "Cancel")
        await page.keyboard.press("Enter")
        dialog = page.get_by_role("dialog")
        await dialog.wait_for()
        assert await _focused(page) == "Keep"
        await page.keyboard.press("Escape")
        await dialog.wait_for(state="hidden")
        await page.keyboard.press("Enter")  # the focus is back on Cancel
        await dialog.wait_for()
        await page.keyboard.press("Shift+Tab")
        assert await _focused(page) == "Cancel campaign"
        await page.keyboard.press("Enter")
        await page.get_by_text("Cancelled.").wait_for()
        view = (await api.client.get(f"/api/v1/email/campaign/{later}")).json()
        assert view["status"] == "CANCELLED"

        # Another user's campaign is as absent as a missing one.
        other_key = await asyncio.to_thread(create_key, app.env, app.cwd, 2)
        other = Api(httpx.AsyncClient(base_url=app.base_url, headers=auth(other_key), timeout=10))
        async with other.client:
            theirs = (await other.campaign({**_BODY, "userId": 2}))["campaignId"]
        answer = await page.goto(f"{app.base_url}/ui/campaigns/{theirs}")
        assert answer is not None and answer.status == 404
        await page.get_by_role("heading", name="Not found").wait_for()

        for path in (
            "/ui/",
            f"/ui/campaigns/{later}",
            "/ui/campaigns/new",
            "/ui/suppressions",
            "/ui/webhooks",
        ):
            await page.set_viewport_size({"width": 1280, "height": 800})
            await page.goto(f"{app.base_url}{path}")
            assert await page.evaluate(UNLABELLED) == [], path
            await page.set_viewport_size({"width": 390, "height": 844})
            width = await page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= 390, f"{path} is {width} px wide at a phone's width"
            if path == f"/ui/campaigns/{later}":
                await _shot(page, "campaign-phone.png")
        await page.close()
    # The other user's campaign is a 404, which Chromium logs; nothing else.
    assert watched.errors == [
        "Failed to load resource: the server responded with a status of 404 (Not Found)"
    ], watched.errors
    assert watched.foreign() == []
