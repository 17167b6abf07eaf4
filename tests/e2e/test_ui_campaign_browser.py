"""A campaign's dashboard page in a real browser, on each stack: Pause stops the
sends (none reach the sink while it stays paused), Resume finishes them, and
the page follows the campaign to its end by itself (controls, next sends, chart),
and Cancel asks first (Keep changes nothing, Cancel campaign cancels); a draft's
Schedule button plans its uploaded recipients, which are then sent; no console
error and no request to another host.

With ``MAILSCHED_UI_SCREENSHOTS=1`` it also saves the finished campaign's page at
1280x800 as ``docs/ui/campaign.png``, and scrolled to its chart as
``docs/ui/campaign-chart.png``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stack
from tests.e2e.test_ui_browser import _create, _shot
from tests.support.browser import signed_in
from tests.support.deployment import Api, deployed
from tests.support.smtp_sink import SmtpSink

pytestmark = pytest.mark.e2e


async def _status(api: Api, campaign_id: int) -> str:
    view = (await api.client.get(f"/api/v1/email/campaign/{campaign_id}")).json()
    return str(view["status"])


def _arrived(sink: SmtpSink, campaign_id: int) -> int:
    return sum(1 for a in sink.arrivals if a.campaign_id == campaign_id)


async def test_pause_resume_and_cancel_from_the_campaign_page(
    stack: Stack, smtp_sink: SmtpSink, tmp_path: Path, browser: Any
) -> None:
    async with deployed(stack, {"MAILSCHED_SMTP_URL": smtp_sink.url}, tmp_path) as (app, api):
        await asyncio.to_thread(app.wait_joined)
        page, watched = await signed_in(browser, app.base_url, app.key)

        now = datetime.now(UTC)
        running = await _create(api, "Pause and resume", now + timedelta(seconds=1), 20)
        later = await _create(api, "To be cancelled", now + timedelta(days=30), 3)
        await page.goto(f"{app.base_url}/ui/campaigns/{running}")
        # The counts move by themselves: SENT leaves 0 without a reload.
        await page.evaluate("() => { window.notReloaded = true; }")
        sent_cell = page.locator('[data-count="SENT"]')
        for _ in range(60):
            if int(await sent_cell.inner_text()) >= 2:
                break
            await asyncio.sleep(0.5)
        assert int(await sent_cell.inner_text()) >= 2
        assert await page.evaluate("() => window.notReloaded") is True

        await page.get_by_role("button", name="Pause").click()
        await page.get_by_role("button", name="Resume").wait_for()
        assert await _status(api, running) == "PAUSED"
        await asyncio.sleep(1)  # a send already in flight may still finish
        paused_at = _arrived(smtp_sink, running)
        assert paused_at < 20
        await asyncio.sleep(3)
        assert _arrived(smtp_sink, running) == paused_at

        await page.get_by_role("button", name="Resume").click()
        await page.get_by_role("button", name="Pause").wait_for()
        assert await _status(api, running) in ("SCHEDULED", "RUNNING")
        await page.evaluate("() => { window.notReloaded = true; }")
        await api.completed(running, within=90)
        assert _arrived(smtp_sink, running) == 20
        # The page follows by itself: the controls, the next sends and the chart.
        await page.get_by_role("button", name="Pause").wait_for(state="detached", timeout=15_000)
        await page.locator("#campaign").get_by_text("COMPLETED").wait_for()
        await page.locator("#due").get_by_text("Nothing waiting.").wait_for()
        await page.locator("#events").get_by_text("campaign.completed").wait_for()
        chart = page.locator("#chart")
        assert "20 of 20 sent" in await chart.inner_text(), await chart.inner_text()
        assert await page.evaluate("() => window.notReloaded") is True
        await _shot(page, "campaign.png")
        await chart.scroll_into_view_if_needed()
        await _shot(page, "campaign-chart.png")

        await page.goto(f"{app.base_url}/ui/campaigns/{later}")
        dialog = page.get_by_role("dialog")
        await page.get_by_role("button", name="Cancel", exact=True).click()
        await dialog.wait_for()
        await dialog.get_by_role("button", name="Keep").click()
        await dialog.wait_for(state="hidden")
        assert await _status(api, later) == "SCHEDULED"
        await page.get_by_role("button", name="Cancel", exact=True).click()
        await dialog.get_by_role("button", name="Cancel campaign").click()
        await page.get_by_text("Cancelled.").wait_for()
        assert await _status(api, later) == "CANCELLED"
        await page.close()
    assert watched.errors == [], watched.errors
    assert watched.foreign() == []


async def test_a_draft_is_scheduled_from_its_page_and_sent(
    stack: Stack, smtp_sink: SmtpSink, tmp_path: Path, browser: Any
) -> None:
    async with deployed(stack, {"MAILSCHED_SMTP_URL": smtp_sink.url}, tmp_path) as (app, api):
        await asyncio.to_thread(app.wait_joined)
        page, watched = await signed_in(browser, app.base_url, app.key)
        created = await api.campaign(
            {
                "userId": 1,
                "subject": "From a draft",
                "body": "Hello.",
                "startTime": datetime.now(UTC).isoformat(),
                "delaySeconds": 0,
                "hourlyLimit": 1000,
                "draft": True,
            }
        )
        draft = created["campaignId"]
        uploaded = await api.client.post(
            f"/api/v1/email/campaign/{draft}/recipients",
            content=b"email\na@example.com\nb@example.com\nc@example.com\n",
            headers={"Content-Type": "text/csv"},
        )
        assert uploaded.status_code == 200, uploaded.text
        await page.goto(f"{app.base_url}/ui/campaigns/{draft}")
        assert await page.locator('[data-count="DRAFT"]').inner_text() == "3"
        assert await page.get_by_role("button", name="Pause").count() == 0
        await page.get_by_role("button", name="Schedule").click()
        await page.get_by_text("Scheduled: its recipients are planned").wait_for()
        await api.completed(draft, within=60)
        assert _arrived(smtp_sink, draft) == 3
        await page.locator("#campaign").get_by_text("COMPLETED").wait_for()
        await page.close()
    assert watched.errors == [], watched.errors
    assert watched.foreign() == []
