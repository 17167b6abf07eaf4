"""A campaign page's live feed in-process on each database: the page lists the
campaign's recent events and the cursor its script follows; the script's poll
tells of new events, only for the caller's own campaign."""

from __future__ import annotations

import re

import httpx
from fastapi import FastAPI

from mailsched.store.db import Database
from tests.integration.test_ui import _campaign, _sign_in, app, browser
from tests.support.api import URL, client_for, new_key

__all__ = ["app", "browser"]  # the fixtures, shared with test_ui


def _cursor(page: str) -> str:
    found = re.search(r'data-events="(\d+)"', page)
    assert found, "no events cursor"
    return found.group(1)


async def test_the_page_lists_recent_events_and_the_poll_tells_of_new_ones(
    app: FastAPI, browser: httpx.AsyncClient, db: Database
) -> None:
    key = await new_key(db, 1)
    ident = await _campaign(app, key, subject="Followed")
    await _sign_in(browser, key)
    page = (await browser.get(f"/ui/campaigns/{ident}")).text
    events = page.split('id="events"', 1)[1].split("</section>", 1)[0]
    assert "<code>campaign.scheduled</code>" in events
    cursor = _cursor(page)

    quiet = await browser.get(f"/ui/data/events?campaign={ident}&after={cursor}")
    assert quiet.status_code == 200
    assert quiet.json() == {"count": 0, "nextCursor": cursor}
    assert quiet.headers["x-frame-options"] == "DENY"

    async with client_for(app, key) as api:
        assert (await api.post(f"{URL}/{ident}/pause")).status_code == 200
    news = (await browser.get(f"/ui/data/events?campaign={ident}&after={cursor}")).json()
    assert news["count"] == 1 and int(news["nextCursor"]) > int(cursor)
    page = (await browser.get(f"/ui/campaigns/{ident}")).text
    events = page.split('id="events"', 1)[1].split("</section>", 1)[0]
    # Newest first.
    assert events.index("campaign.paused") < events.index("campaign.scheduled")
    assert _cursor(page) == news["nextCursor"]


async def test_the_poll_answers_only_for_the_callers_campaign(
    app: FastAPI, browser: httpx.AsyncClient, db: Database
) -> None:
    mine, theirs = await new_key(db, 1), await new_key(db, 2)
    other = await _campaign(app, theirs, userId=2)
    unsigned = await browser.get(f"/ui/data/events?campaign={other}&after=0")
    assert unsigned.status_code == 401
    await _sign_in(browser, mine)
    assert (await browser.get(f"/ui/data/events?campaign={other}&after=0")).status_code == 404
    for query in (
        "campaign=x&after=0",
        f"campaign={other}&after=-1",
        "after=0",
        "campaign=%C2%B2&after=0",
        "campaign=" + "9" * 30 + "&after=0",
        f"campaign={other}&after=" + "9" * 19,
    ):
        answer = await browser.get(f"/ui/data/events?{query}")
        assert answer.status_code == 422, query
