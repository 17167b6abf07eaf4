"""The dashboard in-process on each database: sign in and out, sessions and CSRF,
only the caller's campaigns, escaping, security headers and the progress feed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.producer.auth import Authenticator
from mailsched.producer.campaigns import Campaigns
from mailsched.store import keys
from mailsched.store.db import Database
from mailsched.store.tables import deliveries
from mailsched.ui.routes import COOKIE, POLICY, ui_routes
from tests.support.api import NOW, URL, client_for, make_app, new_key, spec_body

CLOCK = lambda: NOW  # noqa: E731


@pytest.fixture
async def app(db: Database) -> FastAPI:
    ui = ui_routes(
        Campaigns(db, timedelta(hours=1), CLOCK),
        Authenticator(db, 6000),
        db,
        "http://test",
        CLOCK,
    )
    return make_app(db, routers=(ui,))


@pytest.fixture
async def browser(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client with no API key: it keeps cookies, as a browser does."""
    async with client_for(app, None) as client:
        yield client


async def _campaign(app: FastAPI, key: str, **changes: Any) -> int:
    async with client_for(app, key) as api:
        answer = await api.post(URL, json=spec_body(**changes))
    assert answer.status_code == 201, answer.text
    return int(answer.json()["campaignId"])


async def _sign_in(browser: httpx.AsyncClient, key: str) -> httpx.Response:
    return await browser.post("/ui/sign-in", data={"key": key})


async def _csrf(browser: httpx.AsyncClient) -> str:
    page = (await browser.get("/ui/")).text
    marker = 'name="csrf" value="'
    assert marker in page, page
    return page.split(marker, 1)[1].split('"', 1)[0]


def _link(page: str, rel: str) -> str:
    """The href of the page's link with this ``rel``."""
    anchor = [a for a in page.split("<a ") if f'rel="{rel}"' in a.split(">", 1)[0]]
    assert anchor, f"no {rel} link"
    return anchor[0].split('href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")


async def test_a_wrong_key_is_refused_and_sets_no_cookie(
    browser: httpx.AsyncClient, db: Database
) -> None:
    key = await new_key(db, 1)
    for wrong in ("nonsense", key[:-2] + "xx", ""):
        answer = await _sign_in(browser, wrong)
        assert answer.status_code == 401
        assert "set-cookie" not in answer.headers
        assert "not valid" in answer.text and 'for="key"' in answer.text
    assert COOKIE not in browser.cookies
    assert 'value="' not in (await browser.get("/ui/")).text.split("<main>", 1)[1]


async def test_a_good_key_opens_a_session_in_a_strict_http_only_cookie(
    browser: httpx.AsyncClient, db: Database
) -> None:
    key = await new_key(db, 1)
    form = await browser.get("/ui/")
    assert '<label for="key">API key</label>' in form.text and "Sign in</button>" in form.text
    answer = await _sign_in(browser, key)
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    for part in ("HttpOnly", "SameSite=strict", "Path=/ui", "Max-Age=28800"):
        assert part.lower() in cookie.lower(), cookie
    assert "secure" not in cookie.lower()  # the public URL is http
    assert key not in cookie
    page = await browser.get("/ui/")
    assert "<h1>Campaigns</h1>" in page.text and "Sign out" in page.text


async def test_the_list_shows_only_the_callers_campaigns_and_anothers_page_is_404(
    app: FastAPI, browser: httpx.AsyncClient, db: Database
) -> None:
    mine = await _campaign(app, await new_key(db, 1), subject="Mine")
    theirs = await _campaign(app, await new_key(db, 2), userId=2, subject="Theirs")
    await _sign_in(browser, await new_key(db, 1))
    page = (await browser.get("/ui/")).text
    assert f'href="/ui/campaigns/{mine}"' in page and "Mine" in page
    assert "Theirs" not in page and f"/ui/campaigns/{theirs}" not in page
    assert (await browser.get(f"/ui/campaigns/{mine}")).status_code == 200
    other = await browser.get(f"/ui/campaigns/{theirs}")
    assert other.status_code == 404 and "Theirs" not in other.text
    feed = (await browser.get(f"/ui/data/progress?ids={mine},{theirs}")).json()
    assert [c["id"] for c in feed["campaigns"]] == [mine]


async def test_the_status_filter_and_paging(
    app: FastAPI, browser: httpx.AsyncClient, db: Database
) -> None:
    key = await new_key(db, 1)
    ids = [await _campaign(app, key, subject=f"Number {i}") for i in range(23)]
    async with client_for(app, key) as api:
        assert (await api.post(f"{URL}/{ids[0]}/pause")).status_code == 200
    await _sign_in(browser, key)
    first = (await browser.get("/ui/")).text
    assert "Number 22" in first and "Number 3<" in first and "Number 2<" not in first
    assert 'rel="prev"' not in first
    second = (await browser.get(_link(first, "next"))).text
    assert "Number 2<" in second and "Number 0<" in second and "Number 3<" not in second
    assert 'rel="next"' not in second
    assert (await browser.get(_link(second, "prev"))).text.count("Number ") == 20
    paused = (await browser.get("/ui/?status=PAUSED")).text
    assert "Number 0<" in paused and "Number 1<" not in paused
    assert '<option value="PAUSED" selected>' in paused
    assert '<label for="status">Status</label>' in paused


async def test_forms_that_change_something_need_the_sessions_csrf_token(
    browser: httpx.AsyncClient, db: Database
) -> None:
    await _sign_in(browser, await new_key(db, 1))
    token = await _csrf(browser)
    assert (await browser.post("/ui/sign-out")).status_code == 403
    assert (await browser.post("/ui/sign-out", data={"csrf": token + "x"})).status_code == 403
    assert "Sign out" in (await browser.get("/ui/")).text  # still signed in
    answer = await browser.post("/ui/sign-out", data={"csrf": token})
    assert answer.status_code == 303
    assert "max-age=0" in answer.headers["set-cookie"].lower()


async def test_signing_out_ends_the_session_server_side(
    browser: httpx.AsyncClient, db: Database
) -> None:
    await _sign_in(browser, await new_key(db, 1))
    stolen = browser.cookies[COOKIE]
    await browser.post("/ui/sign-out", data={"csrf": await _csrf(browser)})
    assert 'for="key"' in (await browser.get("/ui/")).text
    # The old token, replayed, is no longer a session.
    browser.cookies.set(COOKIE, stolen, domain="test", path="/ui")
    assert 'for="key"' in (await browser.get("/ui/")).text
    assert (await browser.get("/ui/data/progress?ids=1")).status_code == 401


async def test_revoking_the_key_ends_its_sessions(browser: httpx.AsyncClient, db: Database) -> None:
    key = await new_key(db, 1)
    await _sign_in(browser, key)
    assert "Sign out" in (await browser.get("/ui/")).text

    async def revoke(conn: AsyncConnection) -> bool:
        return await keys.revoke_key(conn, key, NOW)

    assert await db.run(revoke)
    assert 'for="key"' in (await browser.get("/ui/")).text


async def test_a_script_subject_is_shown_as_text(
    app: FastAPI, browser: httpx.AsyncClient, db: Database
) -> None:
    key = await new_key(db, 1)
    campaign_id = await _campaign(app, key, subject="<script>alert(1)</script>")
    await _sign_in(browser, key)
    for path in ("/ui/", f"/ui/campaigns/{campaign_id}"):
        page = (await browser.get(path)).text
        assert "<script>alert(1)</script>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


async def test_every_ui_answer_carries_the_security_headers(
    browser: httpx.AsyncClient, db: Database
) -> None:
    answers = [
        await browser.get("/ui/"),
        await _sign_in(browser, "wrong"),
        await _sign_in(browser, await new_key(db, 1)),
        await browser.get("/ui/"),
        await browser.get("/ui/campaigns/999"),
        await browser.get("/ui/data/progress?ids=1"),
        await browser.get("/ui/static/ui.js"),
        await browser.get("/ui/static/ui.css"),
        await browser.post("/ui/sign-out"),
    ]
    for answer in answers:
        assert answer.headers["content-security-policy"] == POLICY
        assert "unsafe-inline" not in POLICY
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "same-origin"
    assert answers[6].headers["content-type"].startswith("text/javascript")
    assert "style=" not in answers[3].text and "<script>" not in answers[3].text


async def test_the_progress_feed_counts_the_done_recipients(
    app: FastAPI, browser: httpx.AsyncClient, db: Database
) -> None:
    key = await new_key(db, 1)
    recipients = [f"user{i}@example.com" for i in range(8)]
    campaign_id = await _campaign(app, key, recipients=recipients)
    d = deliveries.c

    async def send_three(conn: AsyncConnection) -> None:
        ids = (
            await conn.scalars(select(d.id).where(d.campaign_id == campaign_id).order_by(d.id))
        ).all()
        await conn.execute(
            update(deliveries).where(d.id.in_(ids[:3])).values(status="SENT", sent_at=NOW)
        )

    await db.run(send_three)
    await _sign_in(browser, key)
    feed = (await browser.get(f"/ui/data/progress?ids={campaign_id}")).json()
    (row,) = feed["campaigns"]
    assert (row["percent"], row["sent"], row["total"]) == (37, 3, 8)  # 3/8 = 37.5%
    assert row["active"] is True and row["status"] == "SCHEDULED"
    page = (await browser.get("/ui/")).text
    assert 'aria-valuenow="37"' in page and "3/8" in page
    assert 'role="progressbar" aria-valuemin="0" aria-valuemax="100"' in page


async def test_the_cookie_is_secure_behind_an_https_public_url(db: Database) -> None:
    ui = ui_routes(
        Campaigns(db, timedelta(hours=1), CLOCK),
        Authenticator(db, 6000),
        db,
        "https://mail.example.com",
        CLOCK,
    )
    async with client_for(make_app(db, routers=(ui,)), None) as browser:
        answer = await _sign_in(browser, await new_key(db, 1))
    assert answer.status_code == 303
    assert "; secure" in answer.headers["set-cookie"].lower()
