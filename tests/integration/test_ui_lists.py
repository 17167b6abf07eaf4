"""The suppressions and webhooks pages in-process on each database: only the caller's
data, the API's rules and words (the same services and request models), CSRF on
every form, a webhook secret shown once, and user text escaped."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from markupsafe import escape
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.producer.auth import Authenticator, caller_dependency
from mailsched.producer.campaigns import Campaigns
from mailsched.producer.suppressions import suppression_routes
from mailsched.store import webhooks as endpoints
from mailsched.store.db import Database
from mailsched.store.tables import deliveries, webhook_endpoints
from mailsched.ui.routes import POLICY, ui_routes
from mailsched.webhooks.api import MAX_ENDPOINTS, webhook_routes
from tests.integration.test_ui import _campaign, _csrf, _link, _sign_in
from tests.integration.webhooks.conftest import add_endpoint, config
from tests.support.api import NOW, client_for, make_app, new_key

CLOCK = lambda: NOW  # noqa: E731
SUPPRESSIONS = "/api/v1/email/suppressions"
WEBHOOKS = "/api/v1/webhooks"
PUBLIC = "http://93.184.215.14/hook"  # a literal: no DNS needed
SECRET = re.compile(r'value="(whsec_[^"]+)"')
#: A suppressed address in the table.
ROW = re.compile(r'<td data-label="Address">([^<]+)</td>')


@pytest.fixture
async def app(db: Database) -> FastAPI:
    """The dashboard beside the suppression and webhook APIs, all refusing private URLs."""
    caller = caller_dependency(Authenticator(db, 6000))
    ui = ui_routes(
        Campaigns(db, timedelta(hours=1), CLOCK), Authenticator(db, 6000), db, "http://test", CLOCK
    )
    suppressions = suppression_routes(db, caller, CLOCK)
    webhooks = webhook_routes(db, caller, CLOCK, config(allow_private_urls=False))
    return make_app(db, routers=(ui, suppressions, webhooks))


@pytest.fixture
async def browser(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app, None) as client:
        yield client


@pytest.fixture
async def user(db: Database) -> str:
    return await new_key(db, 1)


async def _api(app: FastAPI, key: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
    async with client_for(app, key) as api:
        return await api.request(method, url, **kwargs)


async def _signed_in(browser: httpx.AsyncClient, key: str) -> str:
    """Sign in; the session's CSRF token."""
    await _sign_in(browser, key)
    return await _csrf(browser)


async def _statuses(db: Database, campaign_id: int) -> dict[str, str]:
    d = deliveries.c

    async def work(conn: AsyncConnection) -> dict[str, str]:
        rows = await conn.execute(select(d.recipient, d.status).where(d.campaign_id == campaign_id))
        return {r.recipient: str(r.status) for r in rows}

    return await db.run(work)


async def _suppressed(app: FastAPI, key: str) -> list[str]:
    answer = await _api(app, key, "GET", SUPPRESSIONS)
    return [item["address"] for item in answer.json()["items"]]


async def _endpoints(app: FastAPI, key: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await _api(app, key, "GET", WEBHOOKS)).json()["items"]
    return items


async def test_signed_out_pages_send_to_the_sign_in_form(browser: httpx.AsyncClient) -> None:
    for path in ("/ui/suppressions", "/ui/webhooks"):
        answer = await browser.get(path)
        assert answer.status_code == 303 and answer.headers["location"] == "/ui/"
    for path in ("/ui/suppressions", "/ui/suppressions/remove", "/ui/webhooks"):
        assert (await browser.post(path, data={"csrf": "x"})).status_code == 403


async def test_each_list_shows_only_the_callers_own(
    app: FastAPI, browser: httpx.AsyncClient, db: Database, user: str
) -> None:
    theirs = await new_key(db, 2)
    await _api(app, user, "POST", SUPPRESSIONS, json={"address": "mine@example.org"})
    await _api(app, theirs, "POST", SUPPRESSIONS, json={"address": "theirs@example.org"})
    await _api(app, user, "POST", WEBHOOKS, json={"url": PUBLIC + "/mine"})
    await _api(app, theirs, "POST", WEBHOOKS, json={"url": PUBLIC + "/theirs"})
    await _signed_in(browser, user)

    suppressions = await browser.get("/ui/suppressions")
    webhooks = await browser.get("/ui/webhooks")

    assert suppressions.status_code == 200 and webhooks.status_code == 200
    assert "mine@example.org" in suppressions.text and "theirs@" not in suppressions.text
    assert PUBLIC + "/mine" in webhooks.text and "/theirs" not in webhooks.text
    assert '<a href="/ui/suppressions" aria-current="page">' in suppressions.text
    assert '<a href="/ui/webhooks" aria-current="page">' in webhooks.text
    for answer in (suppressions, webhooks):
        assert answer.headers["content-security-policy"] == POLICY
        assert answer.headers["cache-control"] == "no-store"
        assert "style=" not in answer.text and "<script>" not in answer.text


async def test_adding_an_address_suppresses_its_pending_deliveries_as_the_api_does(
    app: FastAPI, browser: httpx.AsyncClient, db: Database, user: str
) -> None:
    recipients = ["bob@example.org", "carol@example.org"]
    campaign_id = await _campaign(app, user, recipients=recipients)
    token = await _signed_in(browser, user)

    answer = await browser.post(
        "/ui/suppressions", data={"csrf": token, "address": " Bob@Example.ORG "}
    )

    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/suppressions?notice=added&count=1"
    page = (await browser.get(answer.headers["location"])).text
    assert "Address suppressed; 1 pending delivery suppressed." in page
    # The API's normal form of the same input, for another user.
    theirs = await new_key(db, 2)
    api = await _api(app, theirs, "POST", SUPPRESSIONS, json={"address": "Bob@Example.ORG"})
    assert await _suppressed(app, user) == [api.json()["address"]] == ["bob@example.org"]
    assert (
        '<td data-label="Address">bob@example.org</td><td data-label="Reason">manual</td>' in page
    )
    assert await _statuses(db, campaign_id) == {
        "bob@example.org": "SUPPRESSED",
        "carol@example.org": "SCHEDULED",
    }
    again = await browser.post(
        "/ui/suppressions", data={"csrf": token, "address": "bob@example.org"}
    )
    assert again.headers["location"] == "/ui/suppressions?notice=again&count=0"
    notice = (await browser.get(again.headers["location"])).text
    assert "That address was already suppressed; 0 pending deliveries suppressed." in notice
    for count in ("\u00b2", "9" * 30, "x"):
        odd = await browser.get("/ui/suppressions", params={"notice": "added", "count": count})
        assert odd.status_code == 200 and 'class="notice"' not in odd.text


@pytest.mark.parametrize("address", ["not-an-address", "", "bob@example.org\r\nBcc: e@x.org"])
async def test_a_refused_address_is_shown_by_its_field_and_nothing_is_stored(
    app: FastAPI, browser: httpx.AsyncClient, user: str, address: str
) -> None:
    token = await _signed_in(browser, user)

    answer = await browser.post("/ui/suppressions", data={"csrf": token, "address": address})

    assert answer.status_code == 422
    api = await _api(app, user, "POST", SUPPRESSIONS, json={"address": address.strip()})
    assert api.status_code == 422
    message = api.json()["detail"][0]["message"]
    assert (
        f'<p class="error" id="address-error" role="alert">Address: {escape(message)}</p>'
        in answer.text
    )
    assert 'aria-invalid="true" aria-describedby="address-error"' in answer.text
    assert '<label for="address">Address</label>' in answer.text
    assert await _suppressed(app, user) == []


async def test_remove_only_the_callers_own_address(
    app: FastAPI, browser: httpx.AsyncClient, db: Database, user: str
) -> None:
    theirs = await new_key(db, 2)
    await _api(app, user, "POST", SUPPRESSIONS, json={"address": "a/b@example.org"})
    await _api(app, theirs, "POST", SUPPRESSIONS, json={"address": "c@example.org"})
    token = await _signed_in(browser, user)
    page = (await browser.get("/ui/suppressions")).text
    assert '<input type="hidden" name="address" value="a/b@example.org">' in page

    removed = await browser.post(
        "/ui/suppressions/remove", data={"csrf": token, "address": "a/b@example.org"}
    )
    other = await browser.post(
        "/ui/suppressions/remove", data={"csrf": token, "address": "c@example.org"}
    )

    assert removed.status_code == 303
    assert removed.headers["location"] == "/ui/suppressions?notice=removed"
    assert "no longer suppressed" in (await browser.get(removed.headers["location"])).text
    assert other.headers["location"] == "/ui/suppressions?notice=not-suppressed"
    assert await _suppressed(app, user) == []
    assert await _suppressed(app, theirs) == ["c@example.org"]


async def test_suppressions_are_paged_in_address_order(
    app: FastAPI, browser: httpx.AsyncClient, user: str
) -> None:
    for i in range(25):
        await _api(app, user, "POST", SUPPRESSIONS, json={"address": f"u{i:02}@example.org"})
    await _signed_in(browser, user)

    first = (await browser.get("/ui/suppressions")).text
    second = (await browser.get(_link(first, "next"))).text

    assert re.findall(r'<td data-label="Address">(u\d\d)@', first) == [
        f"u{i:02}" for i in range(20)
    ]
    assert re.findall(r'<td data-label="Address">(u\d\d)@', second) == [
        f"u{i:02}" for i in range(20, 25)
    ]
    assert 'rel="first"' not in first and _link(second, "first").startswith("/ui/suppressions")
    assert 'rel="next"' not in second


async def test_forms_without_the_sessions_csrf_token_change_nothing(
    app: FastAPI, browser: httpx.AsyncClient, db: Database, user: str
) -> None:
    await _api(app, user, "POST", SUPPRESSIONS, json={"address": "kept@example.org"})
    webhook_id = (await _api(app, user, "POST", WEBHOOKS, json={"url": PUBLIC})).json()["webhookId"]
    token = await _signed_in(browser, user)
    forms = [
        ("/ui/suppressions", {"address": "new@example.org"}),
        ("/ui/suppressions/remove", {"address": "kept@example.org"}),
        ("/ui/webhooks", {"url": PUBLIC + "/new", "events": "*"}),
        (f"/ui/webhooks/{webhook_id}/delete", {}),
    ]
    for path, fields in forms:
        for csrf in ({}, {"csrf": token + "x"}, {"csrf": ""}):
            answer = await browser.post(path, data=fields | csrf)
            assert answer.status_code == 403, (path, csrf)
            assert answer.headers["content-security-policy"] == POLICY
    assert await _suppressed(app, user) == ["kept@example.org"]
    assert [e["webhookId"] for e in await _endpoints(app, user)] == [webhook_id]


async def test_a_new_endpoint_shows_its_secret_this_once(
    app: FastAPI, browser: httpx.AsyncClient, db: Database, user: str
) -> None:
    token = await _signed_in(browser, user)
    form = {
        "csrf": token,
        "url": PUBLIC,
        "description": "CRM <script>alert(1)</script>",
        "events": ["delivery.sent", "delivery.failed"],
        "batch": "on",
    }

    answer = await browser.post("/ui/webhooks", data=form)

    assert answer.status_code == 201, answer.text
    assert answer.headers["cache-control"] == "no-store"
    shown = SECRET.findall(answer.text)
    assert len(shown) == 1
    [endpoint] = await _endpoints(app, user)
    assert endpoint | {"createdAt": ""} == {
        "webhookId": endpoint["webhookId"],
        "url": PUBLIC,
        "events": ["delivery.sent", "delivery.failed"],
        "description": "CRM <script>alert(1)</script>",
        "batch": True,
        "createdAt": "",
        "disabledAt": None,
        "disabledReason": None,
    }

    async def stored(conn: AsyncConnection) -> str:
        query = select(webhook_endpoints.c.secret)
        found = await conn.execute(query.where(webhook_endpoints.c.id == endpoint["webhookId"]))
        return str(found.scalar_one())

    assert await db.run(stored) == shown[0]
    later = (await browser.get("/ui/webhooks")).text
    assert shown[0] not in later and "whsec_" not in later
    for page in (answer.text, later):
        assert "<script>alert(1)</script>" not in page
        assert "CRM &lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "delivery.sent, delivery.failed (batched)" in page


@pytest.mark.parametrize(
    ("url", "events", "field", "label"),
    [
        ("http://127.0.0.1/hook", ["*"], "url", "URL"),
        ("ftp://93.184.215.14/hook", ["*"], "url", "URL"),
        ("", ["*"], "url", "URL"),
        (PUBLIC, [], "events", "Event types"),
    ],
)
async def test_a_refused_endpoint_is_shown_by_its_field_and_nothing_is_stored(
    app: FastAPI,
    browser: httpx.AsyncClient,
    user: str,
    url: str,
    events: list[str],
    field: str,
    label: str,
) -> None:
    token = await _signed_in(browser, user)

    answer = await browser.post(
        "/ui/webhooks", data={"csrf": token, "url": url, "events": events, "description": "x"}
    )

    assert answer.status_code == 422
    api = await _api(app, user, "POST", WEBHOOKS, json={"url": url, "events": events})
    assert api.status_code == 422
    [problem] = api.json()["detail"]
    assert problem["field"] == field
    expected = f'<p class="error" id="{field}-error">{label}: {escape(problem["message"])}</p>'
    assert expected in answer.text
    assert f'aria-invalid="true" aria-describedby="{field}-error"' in answer.text
    assert f'value="{escape(url)}"' in answer.text  # the form keeps what was typed
    assert "whsec_" not in answer.text
    assert await _endpoints(app, user) == []


async def test_past_the_endpoint_limit_the_form_says_so(
    app: FastAPI, browser: httpx.AsyncClient, db: Database, user: str
) -> None:
    for _ in range(MAX_ENDPOINTS):
        await add_endpoint(db, 1, PUBLIC)
    token = await _signed_in(browser, user)

    answer = await browser.post("/ui/webhooks", data={"csrf": token, "url": PUBLIC, "events": "*"})

    assert answer.status_code == 409
    assert f"at most {MAX_ENDPOINTS} webhook endpoints per user" in answer.text
    assert "whsec_" not in answer.text


async def test_delete_only_the_callers_own_endpoint(
    app: FastAPI, browser: httpx.AsyncClient, db: Database, user: str
) -> None:
    theirs = await new_key(db, 2)
    mine = (await _api(app, user, "POST", WEBHOOKS, json={"url": PUBLIC})).json()["webhookId"]
    other = (await _api(app, theirs, "POST", WEBHOOKS, json={"url": PUBLIC})).json()["webhookId"]
    token = await _signed_in(browser, user)

    refused = await browser.post(f"/ui/webhooks/{other}/delete", data={"csrf": token})
    missing = [
        await browser.post(f"/ui/webhooks/{ident}/delete", data={"csrf": token})
        for ident in ("x1", "\u00b2", "9" * 30)
    ]
    deleted = await browser.post(f"/ui/webhooks/{mine}/delete", data={"csrf": token})
    again = await browser.post(f"/ui/webhooks/{mine}/delete", data={"csrf": token})

    assert [a.status_code for a in (refused, *missing, again)] == [404] * 5
    assert PUBLIC not in refused.text
    assert deleted.status_code == 303
    assert deleted.headers["location"] == "/ui/webhooks?notice=deleted"
    assert "The endpoint is deleted" in (await browser.get(deleted.headers["location"])).text
    assert await _endpoints(app, user) == []
    assert [e["webhookId"] for e in await _endpoints(app, theirs)] == [other]


async def test_an_endpoints_recent_attempts(
    app: FastAPI, browser: httpx.AsyncClient, db: Database, user: str
) -> None:
    theirs = await new_key(db, 2)
    mine = (await _api(app, user, "POST", WEBHOOKS, json={"url": PUBLIC})).json()["webhookId"]
    other = (await _api(app, theirs, "POST", WEBHOOKS, json={"url": PUBLIC})).json()["webhookId"]
    at = datetime(2026, 11, 28, 11, 0, tzinfo=UTC)
    made = [
        endpoints.Attempt(mine, "1", 1, 1, at, 503, 12, None),
        endpoints.Attempt(mine, "2", 2, 3, at, None, 5000, "timed out <after 5 s>"),
    ]

    async def work(conn: AsyncConnection) -> None:
        await endpoints.record_attempts(conn, made)

    await db.run(work)
    await _signed_in(browser, user)

    page = (await browser.get(f"/ui/webhooks?attempts={mine}")).text

    assert f"Recent attempts to endpoint {mine}" in page
    rows = re.findall(r'<td data-label="Status">([^<]*)</td><td data-label="Events">(\d+)<', page)
    assert rows == [("none", "3"), ("503", "1")]
    assert "timed out &lt;after 5 s&gt;" in page
    assert (await browser.get(f"/ui/webhooks?attempts={other}")).status_code == 404
    for wrong in ("x", "\u00b2", "9" * 30):
        assert (await browser.get("/ui/webhooks", params={"attempts": wrong})).status_code == 404
        assert (await browser.get("/ui/webhooks", params={"after": wrong})).status_code == 200
    assert "Recent attempts" not in (await browser.get("/ui/webhooks")).text
