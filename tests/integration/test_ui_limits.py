"""The campaign page's "Sending limits" on each database: every shaping group with
its limits in force, its warm-up day and cap, and what replies did to it, the groups
of the campaign's next sends marked; nothing of it without a shaping file."""

from __future__ import annotations

from datetime import timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain import shaping
from mailsched.domain.shaping import GroupState
from mailsched.producer.auth import Authenticator
from mailsched.producer.campaigns import Campaigns
from mailsched.store import shaping as groups_store
from mailsched.store.db import Database
from mailsched.ui.routes import ui_routes
from tests.integration.test_ui import CLOCK, _campaign, _sign_in, app, browser
from tests.support.api import NOW, client_for, make_app, new_key

__all__ = ["app", "browser"]  # the fixtures, shared with test_ui

SHAPING = """
[[group]]
name = "google"
domains = ["gmail.com"]
max_per_second = 20
max_per_hour = 20000

[[group]]
name = "microsoft"
domains = ["outlook.com"]
max_per_minute = 600
max_connections = 5

[[group]]
name = "news-warmup"
senders = ["news.example.com"]
warmup = { start = 500, factor = 1.5, since = %s }
"""


def _shaping() -> shaping.Shaping:
    since = (NOW - timedelta(days=2)).date().isoformat()
    return shaping.parse(SHAPING % since, "news.example.com")


async def test_the_page_shows_each_group_its_state_and_warmup(db: Database) -> None:
    ui = ui_routes(
        Campaigns(db, timedelta(hours=1), CLOCK),
        Authenticator(db, 6000),
        db,
        "http://test",
        CLOCK,
        shaping=_shaping(),
    )
    app = make_app(db, routers=(ui,))
    key = await new_key(db, 1)
    ident = await _campaign(app, key, recipients=["ann@gmail.com", "bob@example.org"])

    async def slow(conn: AsyncConnection) -> None:
        await groups_store.lock(conn, ["google"])
        change = GroupState(0.5, NOW + timedelta(minutes=10), reason="421 4.7.0 rate limited")
        await groups_store.react(conn, {"google": change}, NOW)

    await db.run(slow)
    async with client_for(app, None) as browser:
        await _sign_in(browser, key)
        page = (await browser.get(f"/ui/campaigns/{ident}")).text

    assert "Sending limits" in page
    # Slowed: the rates halved, and why.
    assert "10 a second, 10,000 an hour" in page
    assert "slowed to 0.5 of its rates until" in page and "421 4.7.0 rate limited" in page
    assert "600 a minute, 5 at once per worker" in page
    # The third day of the ramp: 500 * 1.5 ** 2.
    assert "day 3: at most 1,125 a day" in page
    # Gmail's and the sender's groups concern the next sends; Microsoft's does not.
    assert page.count('<span class="tag">next sends</span>') == 2


async def test_without_a_shaping_file_there_is_no_such_section(
    browser: httpx.AsyncClient, db: Database, app: FastAPI
) -> None:
    key = await new_key(db, 1)
    ident = await _campaign(app, key)
    await _sign_in(browser, key)
    page = (await browser.get(f"/ui/campaigns/{ident}")).text
    assert "Sending limits" not in page
