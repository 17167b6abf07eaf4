"""The dashboard's new-campaign form in-process on each database: the preview and
its plan store nothing, the create goes through the API's rules, a double submit
makes one campaign, and every refusal names its field (a recipient by its line)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from mailsched.producer.api import Limits
from mailsched.producer.auth import Authenticator
from mailsched.producer.campaigns import Campaigns
from mailsched.store.db import Database
from mailsched.ui.routes import ui_routes
from tests.support.api import NOW, client_for, make_app, new_key

CLOCK = lambda: NOW  # noqa: E731
NEW = "/ui/campaigns/new"


@pytest.fixture
async def app(db: Database) -> FastAPI:
    woken: list[int] = []
    ui = ui_routes(
        Campaigns(db, timedelta(hours=1), CLOCK),
        Authenticator(db, 6000),
        db,
        "http://test",
        CLOCK,
        on_resumed=lambda: woken.append(1),
        limits=Limits(max_recipients=5, max_body_bytes=2000),
    )
    app = make_app(db, routers=(ui,))
    app.state.woken = woken
    return app


@pytest.fixture
async def key(db: Database) -> str:
    return await new_key(db, 1)


@pytest.fixture
async def browser(app: FastAPI, key: str) -> AsyncIterator[httpx.AsyncClient]:
    """A signed-in client with no API key: it keeps cookies, as a browser does."""
    async with client_for(app, None) as client:
        assert (await client.post("/ui/sign-in", data={"key": key})).status_code == 303
        yield client


def _hidden(page: str, name: str) -> str:
    marker = f'name="{name}" value="'
    assert marker in page, f"no {name} field"
    return page.split(marker, 1)[1].split('"', 1)[0]


async def _form(browser: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    """The form's hidden fields from a fresh rendering, with ``fields`` filled in."""
    page = (await browser.get(NEW)).text
    filled: dict[str, Any] = {
        "csrf": _hidden(page, "csrf"),
        "idempotency": _hidden(page, "idempotency"),
        "subject": "Hello {{ name }}",
        "body": "Dear {{ name }}, your plan is {{ plan }}.",
        "start": "2026-11-28T14:00",
        "zone": "UTC",
        "delay": "60",
        "limit": "100",
        "recipients": "email,name,plan\nann@example.com,Ann,gold\nbob@example.com,Bob,silver\n",
    }
    filled.update(fields)
    return filled


async def _campaigns(app: FastAPI, key: str) -> list[dict[str, Any]]:
    async with client_for(app, key) as api:
        answer = await api.get("/api/v1/email/campaigns")
    assert answer.status_code == 200
    return list(answer.json()["items"])


async def test_the_form_needs_a_session_and_its_csrf_token(app: FastAPI, key: str) -> None:
    async with client_for(app, None) as anonymous:
        answer = await anonymous.get(NEW)
        assert answer.status_code == 303 and answer.headers["location"] == "/ui/"
    async with client_for(app, None) as browser:
        await browser.post("/ui/sign-in", data={"key": key})
        fields = await _form(browser, action="create")
        for wrong in ("", "x" * 43):
            answer = await browser.post(NEW, data={**fields, "csrf": wrong})
            assert answer.status_code == 403
    assert await _campaigns(app, key) == []


async def test_the_preview_renders_the_first_recipient_and_the_plan_and_stores_nothing(
    app: FastAPI, browser: httpx.AsyncClient, key: str
) -> None:
    answer = await browser.post(NEW, data={**await _form(browser), "action": "preview"})
    assert answer.status_code == 200, answer.text
    page = answer.text
    assert '<dd data-preview="subject">Hello Ann</dd>' in page
    assert "Dear Ann, your plan is gold." in page
    assert '<dd data-plan="count">2</dd>' in page
    # Two sends 60 s apart from the start.
    assert '<dd data-plan="first">2026-11-28 14:00:00 UTC</dd>' in page
    assert '<dd data-plan="last">2026-11-28 14:01:00 UTC</dd>' in page
    # The form keeps what was typed, and carries a new key for the create.
    assert "ann@example.com,Ann,gold" in page
    assert await _campaigns(app, key) == []


async def test_the_create_goes_through_the_api_rules_and_opens_the_campaign(
    app: FastAPI, browser: httpx.AsyncClient, key: str
) -> None:
    fields = await _form(
        browser,
        action="create",
        zone="Europe/Berlin",
        start="2026-11-30T08:30",
        window_from="09:00",
        window_until="17:00",
        days=["mon", "tue"],
    )
    answer = await browser.post(NEW, data=fields)
    assert answer.status_code == 303, answer.text
    (made,) = await _campaigns(app, key)
    assert answer.headers["location"] == f"/ui/campaigns/{made['campaignId']}?notice=created"
    assert app.state.woken == [1]
    async with client_for(app, key) as api:
        view = (await api.get(f"/api/v1/email/campaign/{made['campaignId']}")).json()
        deliveries = (
            await api.get(f"/api/v1/email/campaign/{made['campaignId']}/deliveries")
        ).json()
    assert view["subject"] == "Hello {{ name }}"
    assert view["startTime"] == "2026-11-30T07:30:00Z"  # 08:30 in Berlin
    assert (view["delaySeconds"], view["hourlyLimit"], view["recipientCount"]) == (60, 100, 2)
    assert view["schedule"]["timezone"] == "Europe/Berlin"
    assert view["schedule"]["windows"] == [{"start": "09:00", "end": "17:00"}]
    assert view["schedule"]["days"] == ["mon", "tue"]
    # Monday 30 November, 09:00 in Berlin is 08:00 UTC: the window's opening.
    assert [d["scheduledAt"] for d in deliveries["items"]] == [
        "2026-11-30T08:00:00Z",
        "2026-11-30T08:01:00Z",
    ]
    page = (await browser.get(answer.headers["location"])).text
    assert "Created." in page


async def test_a_double_submit_makes_one_campaign(
    app: FastAPI, browser: httpx.AsyncClient, key: str
) -> None:
    fields = await _form(browser, action="create")
    # At once, as two clicks' requests arrive, and once more afterwards.
    first, second = await asyncio.gather(
        browser.post(NEW, data=fields), browser.post(NEW, data=fields)
    )
    third = await browser.post(NEW, data=fields)
    locations = {a.headers.get("location") for a in (first, second, third)}
    (made,) = await _campaigns(app, key)
    assert locations == {f"/ui/campaigns/{made['campaignId']}?notice=created"}
    assert app.state.woken == [1]
    # A new rendering of the form is a new intent: a new campaign.
    again = await browser.post(NEW, data=await _form(browser, action="create"))
    assert again.status_code == 303
    assert len(await _campaigns(app, key)) == 2


async def test_each_rendering_carries_a_new_idempotency_key(browser: httpx.AsyncClient) -> None:
    keys = {_hidden((await browser.get(NEW)).text, "idempotency") for _ in range(3)}
    assert len(keys) == 3


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"subject": ""}, "subject", "at least 1 character"),
        ({"delay": "soon"}, "delay", "valid integer"),
        ({"limit": "0"}, "limit", "greater than or equal to 1"),
        ({"zone": "Mars/Olympus"}, "zone", "unknown time zone"),
        ({"start": "yesterday"}, "start", "not a date and time"),
        ({"recipients": "ann@example.com\n\nnot-an-address\n"}, "recipients", "line 3: "),
        (
            {"recipients": "email,name\nann@example.com,Ann,extra\n"},
            "recipients",
            "line 2: 3 cells",
        ),
        (
            {"recipients": "\n".join(f"r{i}@example.com" for i in range(6))},
            "recipients",
            "at most 5",
        ),
        ({"recipients": ""}, "recipients", "at least 1 item"),
        ({"window_from": "09:00"}, "window", "both times"),
        ({"days": ["mon"]}, "window", "give the window"),
        ({"window_from": "09:00", "window_until": "09:00"}, "window", ""),
        ({"body": "x" * 2001}, "body", "at most 2000 bytes"),
        ({"body": "{{ missing }}"}, "", ""),
    ],
)
async def test_a_refusal_names_its_field_and_stores_nothing(
    app: FastAPI,
    browser: httpx.AsyncClient,
    key: str,
    changes: dict[str, Any],
    field: str,
    message: str,
) -> None:
    for action in ("preview", "create"):
        answer = await browser.post(NEW, data=await _form(browser, action=action, **changes))
        assert answer.status_code == 422, answer.text
        page = answer.text
        assert 'role="alert"' in page
        if field:
            error = page.split(f'id="{field}-error"', 1)
            assert len(error) == 2, f"no error beside {field}"
            assert message in error[1].split("</ul>", 1)[0]
    assert await _campaigns(app, key) == []


async def test_a_recipient_refused_by_the_service_is_named_by_its_line(
    browser: httpx.AsyncClient,
) -> None:
    # A recipient's zone is checked by the service, after the model, against the schedule.
    fields = await _form(
        browser,
        action="preview",
        subject="Hi",
        body="Hello.",
        recipients="email,timezone\n\nann@example.com,Europe/Paris\n",
    )
    page = (await browser.post(NEW, data=fields)).text
    error = page.split('id="recipients-error"', 1)[1].split("</ul>", 1)[0]
    assert "line 3:" in error and "timezone" in error


async def test_user_text_is_escaped_in_the_preview(browser: httpx.AsyncClient) -> None:
    fields = await _form(
        browser,
        action="preview",
        subject="<script>alert(1)</script>",
        body="<b>bold</b>",
        recipients="ann@example.com\n",
    )
    page = (await browser.post(NEW, data=fields)).text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
