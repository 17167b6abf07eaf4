"""The webhook endpoints API on each database: create, list, delete, attempts, SSRF."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.events import EventType
from mailsched.store import webhooks as endpoints
from mailsched.store.db import Database
from mailsched.store.tables import webhook_endpoints
from tests.integration.webhooks.conftest import webhook_app
from tests.support.api import client_for, new_key

URL = "/api/v1/webhooks"
PUBLIC = "http://93.184.215.14/hook"  # a literal: no DNS needed


def fields(response: httpx.Response) -> list[str]:
    return [problem["field"] for problem in response.json()["detail"]]


async def stored_count(db: Database) -> int:
    async def work(conn: AsyncConnection) -> int:
        query = select(func.count()).select_from(webhook_endpoints)
        return int((await conn.execute(query)).scalar_one())

    return await db.run(work)


async def test_create_answers_the_secret_once(api: httpx.AsyncClient) -> None:
    response = await api.post(
        URL, json={"url": PUBLIC, "events": ["delivery.sent"], "description": "crm"}
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["url"] == PUBLIC
    assert created["events"] == ["delivery.sent"]
    assert created["description"] == "crm"
    assert created["batch"] is False
    assert created["disabledAt"] is None
    assert created["secret"].startswith("whsec_")
    assert len(base64.b64decode(created["secret"].removeprefix("whsec_"))) == 32

    listed = (await api.get(URL)).json()
    assert [item["webhookId"] for item in listed["items"]] == [created["webhookId"]]
    assert "secret" not in listed["items"][0]
    assert listed["nextCursor"] is None


async def test_events_default_to_all_and_accept_every_type(api: httpx.AsyncClient) -> None:
    default = await api.post(URL, json={"url": PUBLIC})
    assert default.status_code == 201
    assert default.json()["events"] == ["*"]
    every = [t.value for t in EventType]
    response = await api.post(URL, json={"url": PUBLIC, "events": every, "batch": True})
    assert response.status_code == 201, response.text
    assert response.json()["events"] == every
    assert response.json()["batch"] is True


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": PUBLIC, "events": ["delivery.sent", "delivery.exploded"]}, "events.1"),
        ({"url": PUBLIC, "events": []}, "events"),
        ({"url": PUBLIC, "events": "delivery.sent"}, "events"),
        ({"url": PUBLIC, "batch": "yes"}, "batch"),
        ({"url": PUBLIC, "description": "x" * 501}, "description"),
        ({"url": PUBLIC, "secret": "mine"}, "secret"),
        ({}, "url"),
        ({"url": "ftp://example.com/hook"}, "url"),
        ({"url": "http://user:pw@example.com/hook"}, "url"),
        ({"url": "/relative"}, "url"),
        ({"url": "http://example.com:99999/"}, "url"),
        ({"url": "http://exa mple.com/"}, "url"),
        ({"url": "https://" + "a" * 2048 + ".com/"}, "url"),
    ],
)
async def test_bad_input_names_the_field_and_stores_nothing(
    api: httpx.AsyncClient, db: Database, body: dict[str, object], field: str
) -> None:
    response = await api.post(URL, json=body)
    assert response.status_code == 422, response.text
    assert field in fields(response)
    assert await stored_count(db) == 0


PRIVATE = [
    "http://127.0.0.1/",
    "http://10.0.0.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://100.64.0.1/",
    "http://0.0.0.0/",
    "http://localhost:8080/hook",
]


@pytest.mark.parametrize("url", PRIVATE)
async def test_private_addresses_are_refused(
    api: httpx.AsyncClient, db: Database, url: str
) -> None:
    response = await api.post(URL, json={"url": url})
    assert response.status_code == 422, response.text
    assert fields(response) == ["url"]
    assert await stored_count(db) == 0


async def test_a_host_that_does_not_resolve_is_refused(api: httpx.AsyncClient) -> None:
    response = await api.post(URL, json={"url": "https://no-such-host.invalid/hook"})
    assert response.status_code == 422
    assert fields(response) == ["url"]
    assert "does not resolve" in response.json()["detail"][0]["message"]


@pytest.mark.parametrize("url", PRIVATE)
async def test_private_addresses_are_accepted_when_allowed(db: Database, url: str) -> None:
    async with client_for(webhook_app(db, allow_private_urls=True), await new_key(db, 1)) as c:
        response = await c.post(URL, json={"url": url})
    assert response.status_code == 201, response.text


async def test_schemes_and_userinfo_are_refused_even_when_private_is_allowed(
    db: Database,
) -> None:
    async with client_for(webhook_app(db, allow_private_urls=True), await new_key(db, 1)) as c:
        for url in ("ftp://127.0.0.1/", "http://u:p@127.0.0.1/", "file:///etc/passwd"):
            response = await c.post(URL, json={"url": url})
            assert response.status_code == 422, url


async def test_another_users_endpoint_is_not_found(db: Database, api: httpx.AsyncClient) -> None:
    mine = (await api.post(URL, json={"url": PUBLIC})).json()["webhookId"]
    app = webhook_app(db, allow_private_urls=False)
    async with client_for(app, await new_key(db, 2)) as other:
        assert (await other.get(URL)).json()["items"] == []
        assert (await other.get(f"{URL}/{mine}/attempts")).status_code == 404
        assert (await other.delete(f"{URL}/{mine}")).status_code == 404
    assert (await api.get(f"{URL}/{mine}/attempts")).status_code == 200


async def test_delete_then_gone(api: httpx.AsyncClient) -> None:
    webhook_id = (await api.post(URL, json={"url": PUBLIC})).json()["webhookId"]
    assert (await api.delete(f"{URL}/{webhook_id}")).status_code == 204
    assert (await api.delete(f"{URL}/{webhook_id}")).status_code == 404
    assert (await api.get(f"{URL}/{webhook_id}/attempts")).status_code == 404
    assert (await api.get(URL)).json()["items"] == []


@pytest.mark.parametrize("path", ["1.0", "+1", "-1", "0", "x", "99999999999999999999"])
async def test_path_ids_are_digits(api: httpx.AsyncClient, path: str) -> None:
    assert (await api.delete(f"{URL}/{path}")).status_code == 422
    response = await api.get(f"{URL}/{path}/attempts")
    assert response.status_code == 422
    assert fields(response) == ["webhook_id"]


async def test_endpoints_are_paged(api: httpx.AsyncClient) -> None:
    ids = [(await api.post(URL, json={"url": PUBLIC})).json()["webhookId"] for _ in range(3)]
    first = (await api.get(URL, params={"limit": 2})).json()
    assert [i["webhookId"] for i in first["items"]] == ids[:2]
    rest = (await api.get(URL, params={"limit": 2, "cursor": first["nextCursor"]})).json()
    assert [i["webhookId"] for i in rest["items"]] == ids[2:]
    assert rest["nextCursor"] is None
    assert (await api.get(URL, params={"limit": 0})).status_code == 422
    assert (await api.get(URL, params={"limit": 1001})).status_code == 422


async def test_attempts_newest_first_and_paged(db: Database, api: httpx.AsyncClient) -> None:
    webhook_id = (await api.post(URL, json={"url": PUBLIC})).json()["webhookId"]
    at = datetime(2026, 12, 1, tzinfo=UTC)
    attempts = [
        endpoints.Attempt(webhook_id, str(i), i, 1, at, 503 if i < 3 else None, 12, None)
        for i in range(1, 5)
    ]

    async def work(conn: AsyncConnection) -> None:
        await endpoints.record_attempts(conn, attempts)

    await db.run(work)
    first = (await api.get(f"{URL}/{webhook_id}/attempts", params={"limit": 3})).json()
    assert [a["eventId"] for a in first["items"]] == [4, 3, 2]
    assert first["items"][1] | {"attemptId": 0} == {
        "attemptId": 0,
        "messageId": "3",
        "eventId": 3,
        "eventCount": 1,
        "attemptedAt": "2026-12-01T00:00:00Z",
        "statusCode": None,
        "durationMs": 12,
        "error": None,
    }
    rest = (
        await api.get(f"{URL}/{webhook_id}/attempts", params={"cursor": first["nextCursor"]})
    ).json()
    assert [a["eventId"] for a in rest["items"]] == [1]
    assert rest["nextCursor"] is None
