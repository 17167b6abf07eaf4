"""A campaign's dashboard page in-process on each database: counts, the chart, next
sends, frequent errors, the deliveries table (filter, search, paging) and the
controls with their CSRF token, only for the caller's own campaign."""

from __future__ import annotations

import re

import httpx
from fastapi import FastAPI
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.store import feedback
from mailsched.store.db import Database
from mailsched.store.tables import deliveries
from tests.integration.test_ui import _campaign, _csrf, _sign_in, app, browser
from tests.support.api import NOW, URL, client_for, new_key

__all__ = ["app", "browser"]  # the fixtures, shared with test_ui


def _buttons(page: str) -> set[str]:
    """The page's buttons, but the deliveries table's Filter."""
    return {"Filter"} ^ set(
        re.findall(r"<button type=\"(?:submit|button)\"[^>]*>([^<]+)</button>", page)
    )


def _listed(page: str) -> list[str]:
    """The recipients in the deliveries table, in order."""
    return re.findall(r"<tr><td>([^<]+)</td><td>[A-Z]+</td>", page)


async def _mark(db: Database, campaign_id: int, count: int, **values: object) -> None:
    """Give the campaign's first ``count`` deliveries (by id) these values."""
    d = deliveries.c

    async def work(conn: AsyncConnection) -> None:
        ids = (
            await conn.scalars(select(d.id).where(d.campaign_id == campaign_id).order_by(d.id))
        ).all()
        await conn.execute(update(deliveries).where(d.id.in_(ids[:count])).values(**values))

    await db.run(work)


async def _status(app: FastAPI, key: str, campaign_id: int) -> str:
    async with client_for(app, key) as api:
        return str((await api.get(f"{URL}/{campaign_id}")).json()["status"])


async def test_the_page_shows_counts_chart_next_sends_and_errors(
    app: FastAPI, browser: httpx.AsyncClient, db: Database
) -> None:
    key = await new_key(db, 1)
    recipients = [f"user{i}@example.com" for i in range(6)]
    ident = await _campaign(app, key, subject="<b>Sale</b>", recipients=recipients)
    await _mark(db, ident, 2, status="SENT", sent_at=NOW)
    await _mark(db, ident, 1, status="FAILED", sent_at=None, last_error="550 5.1.1 <no> such user")
    await _sign_in(browser, key)
    answer = await browser.get(f"/ui/campaigns/{ident}")
    page = answer.text
    assert answer.status_code == 200
    assert "&lt;b&gt;Sale&lt;/b&gt;" in page and "<b>Sale</b>" not in page
    assert '<td data-count="SENT">1</td>' in page and '<td data-count="FAILED">1</td>' in page
    assert '<td data-count="SCHEDULED">4</td>' in page
    assert '<svg xmlns="http://www.w3.org/2000/svg" role="img"' in page
    assert "1 of 6 sent; the busiest hour had 1 send (limit 10)" in page
    assert "Next sends due" in page and "user2@example.com" in page
    assert "550 5.1.1 &lt;no&gt; such user" in page
    assert "style=" not in page and "<script>" not in page
    assert _buttons(page) == {
        "Sign out",
        "Pause",
        "Cancel",
        "Retry failed",
        "Cancel campaign",
        "Keep",
    }
    assert '<dialog id="cancel-dialog"' in page


async def test_controls_need_the_csrf_token_and_follow_the_status(
    app: FastAPI, browser: httpx.AsyncClient, db: Database
) -> None:
    key = await new_key(db, 1)
    ident = await _campaign(app, key)
    await _sign_in(browser, key)
    token = await _csrf(browser)
    assert (await browser.post(f"/ui/campaigns/{ident}/pause")).status_code == 403
    refused = await browser.post(f"/ui/campaigns/{ident}/pause", data={"csrf": token + "x"})
    assert refused.status_code == 403
    assert await _status(app, key, ident) == "SCHEDULED"

    paused = await browser.post(f"/ui/campaigns/{ident}/pause", data={"csrf": token})
    assert paused.status_code == 303
    assert paused.headers["location"] == f"/ui/campaigns/{ident}?notice=pause"
    assert await _status(app, key, ident) == "PAUSED"
    page = (await browser.get(paused.headers["location"])).text
    assert "Paused." in page and _buttons(page) == {
        "Sign out",
        "Resume",
        "Cancel",
        "Cancel campaign",
        "Keep",
    }

    # Pausing twice is allowed by the service; resuming a running one is a conflict.
    resumed = await browser.post(f"/ui/campaigns/{ident}/resume", data={"csrf": token})
    assert resumed.status_code == 303 and await _status(app, key, ident) == "SCHEDULED"
    again = await browser.post(f"/ui/campaigns/{ident}/resume", data={"csrf": token})
    assert again.headers["location"].endswith("notice=conflict")
    assert "not possible" in (await browser.get(again.headers["location"])).text

    cancelled = await browser.post(f"/ui/campaigns/{ident}/cancel", data={"csrf": token})
    assert cancelled.status_code == 303 and await _status(app, key, ident) == "CANCELLED"
    page = (await browser.get(f"/ui/campaigns/{ident}")).text
    assert _buttons(page) == {"Sign out"}
    unknown = await browser.post(f"/ui/campaigns/{ident}/explode", data={"csrf": token})
    assert unknown.status_code == 404


async def test_retry_failed_sends_the_failed_again(
    app: FastAPI, browser: httpx.AsyncClient, db: Database
) -> None:
    key = await new_key(db, 1)
    ident = await _campaign(app, key, recipients=["a@example.com", "b@example.com"])
    await _mark(db, ident, 1, status="FAILED", last_error="421 try later", attempts=3)
    await _sign_in(browser, key)
    token = await _csrf(browser)
    answer = await browser.post(f"/ui/campaigns/{ident}/retry-failed", data={"csrf": token})
    assert answer.status_code == 303
    async with client_for(app, key) as api:
        counts = (await api.get(f"{URL}/{ident}")).json()["counts"]
    assert counts.get("FAILED", 0) == 0, counts
    page = (await browser.get(f"/ui/campaigns/{ident}")).text
    assert "Retry failed" not in _buttons(page)


async def test_another_users_campaign_and_its_controls_are_404(
    app: FastAPI, browser: httpx.AsyncClient, db: Database
) -> None:
    theirs = await _campaign(app, await new_key(db, 2), userId=2, subject="Theirs")
    await _sign_in(browser, await new_key(db, 1))
    token = await _csrf(browser)
    page = await browser.get(f"/ui/campaigns/{theirs}")
    assert page.status_code == 404 and "Theirs" not in page.text
    for action in ("pause", "resume", "cancel", "retry-failed"):
        answer = await browser.post(f"/ui/campaigns/{theirs}/{action}", data={"csrf": token})
        assert answer.status_code == 404, action
    async with client_for(app, await new_key(db, 2)) as api:
        assert (await api.get(f"{URL}/{theirs}")).json()["status"] == "SCHEDULED"


async def test_the_deliveries_table_filters_searches_and_pages(
    app: FastAPI, browser: httpx.AsyncClient, db: Database
) -> None:
    key = await new_key(db, 1)
    recipients = [f"r{i:03d}@example.com" for i in range(60)] + ["zed_100%@other.org"]
    ident = await _campaign(app, key, recipients=recipients, hourlyLimit=1000, delaySeconds=0)
    await _mark(db, ident, 3, status="SENT", sent_at=NOW)
    await _sign_in(browser, key)
    base = f"/ui/campaigns/{ident}"
    first = (await browser.get(base)).text
    assert '<label for="d-status">Status</label>' in first
    assert '<label for="d-recipient">Recipient</label>' in first
    assert _listed(first) == recipients[:50]
    nxt = re.search(r'href="([^"]+)" rel="next"', first)
    assert nxt is not None
    second = (await browser.get(nxt.group(1).replace("&amp;", "&"))).text
    assert _listed(second) == recipients[50:] and 'rel="next"' not in second

    sent = (await browser.get(base, params={"status": "SENT"})).text
    assert _listed(sent) == recipients[:3]
    assert '<option value="SENT" selected>' in sent
    found = (await browser.get(base, params={"recipient": "r01"})).text
    assert _listed(found) == recipients[10:20]
    # LIKE's wildcards are matched literally.
    literal = (await browser.get(base, params={"recipient": "_100%"})).text
    assert _listed(literal) == ["zed_100%@other.org"]
    assert "No deliveries match" in (await browser.get(base, params={"recipient": "%%"})).text
    both = (await browser.get(base, params={"status": "SENT", "recipient": "r00"})).text
    assert _listed(both) == recipients[:3]


async def test_the_progress_feed_carries_the_counts(
    app: FastAPI, browser: httpx.AsyncClient, db: Database
) -> None:
    key = await new_key(db, 1)
    ident = await _campaign(app, key)
    await _mark(db, ident, 1, status="SENT", sent_at=NOW)
    await _sign_in(browser, key)
    (row,) = (await browser.get(f"/ui/data/progress?ids={ident}")).json()["campaigns"]
    assert row["counts"]["SENT"] == 1 and row["counts"]["SCHEDULED"] == 1


async def test_a_campaign_paused_by_the_breaker_says_why(
    app: FastAPI, browser: httpx.AsyncClient, db: Database
) -> None:
    key = await new_key(db, 1)
    ident = await _campaign(app, key)
    async with client_for(app, key) as api:
        assert (await api.post(f"{URL}/{ident}/pause")).status_code == 200

    async def work(conn: AsyncConnection) -> None:
        await feedback.set_pause_reason(conn, ident, "hard bounces at 10.0% of 20 sends <b>")

    await db.run(work)
    await _sign_in(browser, key)
    page = (await browser.get(f"/ui/campaigns/{ident}")).text
    assert (
        '<dd class="warning" data-field="pause-reason">'
        "hard bounces at 10.0% of 20 sends &lt;b&gt;</dd>" in page
    )


async def test_a_draft_is_scheduled_from_its_page(
    app: FastAPI, browser: httpx.AsyncClient, db: Database
) -> None:
    key = await new_key(db, 1)
    async with client_for(app, key) as api:
        body = {
            "userId": 1,
            "subject": "Draft",
            "body": "Hello.",
            "startTime": "2026-11-28T12:00:00Z",
            "delaySeconds": 60,
            "hourlyLimit": 10,
            "draft": True,
        }
        ident = (await api.post(URL, json=body)).json()["campaignId"]
        uploaded = await api.post(
            f"{URL}/{ident}/recipients",
            content=b'"a@example.com"\n"b@example.com"\n',
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert uploaded.status_code == 200, uploaded.text
    await _sign_in(browser, key)
    token = await _csrf(browser)
    page = (await browser.get(f"/ui/campaigns/{ident}")).text
    assert '<td data-count="DRAFT">2</td>' in page
    assert _buttons(page) == {"Sign out", "Schedule", "Cancel", "Cancel campaign", "Keep"}
    answer = await browser.post(f"/ui/campaigns/{ident}/schedule", data={"csrf": token})
    assert answer.headers["location"] == f"/ui/campaigns/{ident}?notice=schedule"
    assert await _status(app, key, ident) == "SCHEDULED"
    page = (await browser.get(answer.headers["location"])).text
    assert "Scheduled: its recipients are planned" in page
    assert '<td data-count="SCHEDULED">2</td>' in page
    assert "Schedule" not in _buttons(page) and "Pause" in _buttons(page)
    again = await browser.post(f"/ui/campaigns/{ident}/schedule", data={"csrf": token})
    assert again.headers["location"].endswith("notice=conflict")
