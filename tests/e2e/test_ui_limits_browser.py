"""The campaign page's "Sending limits" in a real browser, on each stack: a deployment
with a shaping file shows each group's limits in force, its warm-up day and cap, and
marks the groups of the campaign's next sends; it fits a phone's width; no console
error and no request to another host.

With ``MAILSCHED_UI_SCREENSHOTS=1`` it also saves the section at 1280x800 as
``docs/ui/campaign-limits.png``.
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
from tests.support.deployment import deployed
from tests.support.smtp_sink import SmtpSink

pytestmark = pytest.mark.e2e

SHAPING = """
[[group]]
name = "example"
domains = ["example.com"]
max_per_minute = 600
max_connections = 4

[[group.rule]]
match = "^4\\\\d\\\\d .*(rate|too many)"
action = "slow"
factor = 0.5
for_seconds = 600

[[group]]
name = "google"
domains = ["gmail.com", "googlemail.com"]
max_per_second = 20
max_per_hour = 20000

[[group]]
name = "news-warmup"
senders = ["example.com"]
warmup = {{ start = 500, factor = 1.5, since = {since} }}
"""


async def test_the_campaign_page_shows_the_sending_limits(
    stack: Stack, smtp_sink: SmtpSink, tmp_path: Path, browser: Any
) -> None:
    since = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()
    shaping = tmp_path / "shaping.toml"
    shaping.write_text(SHAPING.format(since=since))
    env = {
        "MAILSCHED_SMTP_URL": smtp_sink.url,
        "MAILSCHED_FROM": "news@example.com",
        "MAILSCHED_SHAPING_FILE": str(shaping),
    }
    async with deployed(stack, env, tmp_path) as (app, api):
        await asyncio.to_thread(app.wait_joined)
        page, watched = await signed_in(browser, app.base_url, app.key)
        later = await _create(api, "Winter sale", datetime.now(UTC) + timedelta(days=30), 5)
        await page.goto(f"{app.base_url}/ui/campaigns/{later}")

        limits = page.locator("#limits")
        await limits.get_by_role("heading", name="Sending limits").wait_for()
        rows = limits.locator("tbody tr")
        assert await rows.count() == 3
        example = rows.nth(0)
        assert "600 a minute, 4 at once per worker" in await example.inner_text()
        assert "next sends" in await example.inner_text()
        assert "next sends" not in await rows.nth(1).inner_text()
        warmup = await rows.nth(2).inner_text()
        assert "day 3: at most 1,125 a day" in warmup and "from example.com" in warmup
        await limits.scroll_into_view_if_needed()
        await _shot(page, "campaign-limits.png")

        await page.set_viewport_size({"width": 390, "height": 844})
        width = await page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390
        assert watched.errors == []
        assert watched.foreign() == []
