"""The security checklist and campaign control, through the HTTP API, on each database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from mailsched.producer.api import Limits
from mailsched.store import keys
from mailsched.store.db import Database
from mailsched.store.tables import campaigns
from tests.support.api import NOW, URL, client_for, make_app, new_key, spec_body


@pytest.fixture
async def alice(app: FastAPI, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app, await new_key(db, 1)) as client:
        yield client


@pytest.fixture
async def bob(app: FastAPI, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app, await new_key(db, 2)) as client:
        yield client


async def campaign_count(db: Database) -> int:
    async def work(conn: Any) -> int:
        return int((await conn.execute(select(func.count()).select_from(campaigns))).scalar_one())

    return await db.run(work)


# --- 401, 403, 404 -----------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": "Bearer ms_000000000000_wrongsecret"},
    ],
)
async def test_requests_without_a_valid_key_are_401(
    app: FastAPI, db: Database, headers: dict[str, str]
) -> None:
    async with client_for(app, None) as client:
        for method, path in (
            ("POST", URL),
            ("GET", f"{URL}/1"),
            ("GET", "/api/v1/email/campaigns"),
        ):
            response = await client.request(method, path, json=spec_body(), headers=headers)
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
    assert await campaign_count(db) == 0


async def test_a_wrong_secret_for_a_real_prefix_is_401(app: FastAPI, db: Database) -> None:
    key = await new_key(db, 1)
    async with client_for(app, key[:-2] + "xx") as client:
        assert (await client.get("/api/v1/email/campaigns")).status_code == 401


async def test_a_revoked_key_is_401(app: FastAPI, db: Database) -> None:
    key = await new_key(db, 1)

    async def revoke(conn: Any) -> bool:
        return await keys.revoke_key(conn, key, NOW)

    assert await db.run(revoke)
    # A fresh app: no cached lookup of the key from before its revocation.
    async with client_for(make_app(db), key) as client:
        assert (await client.get("/api/v1/email/campaigns")).status_code == 401


async def test_acting_for_another_user_is_403(alice: httpx.AsyncClient, db: Database) -> None:
    response = await alice.post(URL, json=spec_body(userId=2))
    assert response.status_code == 403
    assert response.json()["detail"][0]["field"] == "userId"
    assert await campaign_count(db) == 0


async def test_another_users_campaign_is_404(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    campaign_id = (await alice.post(URL, json=spec_body())).json()["campaignId"]
    for method, path in [
        ("GET", f"{URL}/{campaign_id}"),
        ("GET", f"{URL}/{campaign_id}/deliveries"),
        ("POST", f"{URL}/{campaign_id}/pause"),
        ("POST", f"{URL}/{campaign_id}/resume"),
        ("POST", f"{URL}/{campaign_id}/cancel"),
        ("POST", f"{URL}/{campaign_id}/retry-failed"),
    ]:
        response = await bob.request(method, path)
        assert response.status_code == 404, (method, path)
    assert (await bob.get("/api/v1/email/campaigns")).json()["items"] == []
    assert (await alice.get(f"{URL}/{campaign_id}")).json()["status"] == "SCHEDULED"


# --- 409: idempotency ----------------------------------------------------------------


async def test_the_same_idempotency_key_and_body_replays_the_first_answer(
    alice: httpx.AsyncClient, db: Database
) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = await alice.post(URL, json=spec_body(), headers=headers)
    second = await alice.post(URL, json=spec_body(), headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert await campaign_count(db) == 1


async def test_the_same_idempotency_key_with_another_body_is_409(
    alice: httpx.AsyncClient, db: Database
) -> None:
    headers = {"Idempotency-Key": "order-43"}
    assert (await alice.post(URL, json=spec_body(), headers=headers)).status_code == 201
    response = await alice.post(URL, json=spec_body(subject="Other"), headers=headers)
    assert response.status_code == 409
    assert response.json()["error"] == "conflict"
    assert await campaign_count(db) == 1


async def test_idempotency_keys_belong_to_their_user(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, db: Database
) -> None:
    headers = {"Idempotency-Key": "shared"}
    assert (await alice.post(URL, json=spec_body(), headers=headers)).status_code == 201
    response = await bob.post(URL, json=spec_body(userId=2), headers=headers)
    assert response.status_code == 201
    assert "idempotent-replayed" not in response.headers
    assert await campaign_count(db) == 2


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "tab\there"])
async def test_malformed_idempotency_keys_are_422(alice: httpx.AsyncClient, key: str) -> None:
    response = await alice.post(URL, json=spec_body(), headers={"Idempotency-Key": key})
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "idempotency-key"


# --- 413 and 429 -------------------------------------------------------------------


async def test_limits_are_413_naming_the_field(db: Database) -> None:
    app = make_app(db, limits=Limits(max_recipients=3, max_body_bytes=100, max_request_bytes=4000))
    async with client_for(app, await new_key(db, 1)) as client:
        many = [f"u{i}@example.com" for i in range(4)]
        response = await client.post(URL, json=spec_body(recipients=many))
        assert response.status_code == 413
        assert response.json()["detail"][0]["field"] == "recipients"

        response = await client.post(URL, json=spec_body(body="x" * 101))
        assert (response.status_code, response.json()["detail"][0]["field"]) == (413, "body")

        response = await client.post(URL, json=spec_body(htmlBody="<p>" + "x" * 100 + "</p>"))
        assert (response.status_code, response.json()["detail"][0]["field"]) == (413, "htmlBody")

        huge = spec_body(body="x" * 5000)
        response = await client.post(URL, json=huge)
        assert response.status_code == 413

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b" " * 1000

        response = await client.post(
            URL, content=chunks(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 413
    assert await campaign_count(db) == 0


async def test_too_many_requests_are_429_with_retry_after(db: Database) -> None:
    app = make_app(db, requests_per_minute=6)  # a burst of 1, then one every 10 s
    async with client_for(app, await new_key(db, 1)) as client:
        assert (await client.get("/api/v1/email/campaigns")).status_code == 200
        response = await client.get("/api/v1/email/campaigns")
        assert response.status_code == 429
        assert 1 <= int(response.headers["retry-after"]) <= 10
    async with client_for(app, await new_key(db, 1)) as other:
        assert (await other.get("/api/v1/email/campaigns")).status_code == 200  # per key


# --- 422: headers and addresses -------------------------------------------------------


@pytest.mark.parametrize(
    ("recipient", "field"),
    [
        ({"email": "a@example.com", "name": "Eve\r\nBcc: x@example.com"}, "recipients.0"),
        ({"email": "a@example.com", "vars": {"bad key": 1}}, "recipients.0"),
        ({"email": "a@example.com", "vars": {"k": {"nested": 1}}}, "recipients.0"),
        ({"email": "a@example.com", "extra": 1}, "recipients.0"),
        ({"name": "no address"}, "recipients.0"),
        (42, "recipients.0"),
    ],
)
async def test_recipient_objects_are_validated(
    alice: httpx.AsyncClient, recipient: object, field: str
) -> None:
    response = await alice.post(URL, json=spec_body(recipients=[recipient]))
    assert response.status_code == 422, response.text
    assert field in [d["field"] for d in response.json()["detail"]]


async def test_recipient_objects_are_accepted(alice: httpx.AsyncClient) -> None:
    recipients = [
        "plain@example.com",
        {"email": "named@example.com", "name": "Zoë Named", "vars": {"plan": "pro", "n": 3}},
        {"email": "PLAIN@example.com"},
    ]
    response = await alice.post(URL, json=spec_body(recipients=recipients))
    assert response.status_code == 201, response.text
    assert response.json()["recipientCount"] == 2
    assert response.json()["duplicatesDropped"] == 1


# --- control and listing ---------------------------------------------------------------


async def test_pause_resume_cancel(alice: httpx.AsyncClient) -> None:
    campaign_id = (await alice.post(URL, json=spec_body())).json()["campaignId"]
    path = f"{URL}/{campaign_id}"

    paused = (await alice.post(f"{path}/pause")).json()
    assert paused == {"campaignId": campaign_id, "status": "PAUSED", "inFlight": 0}
    counts = (await alice.get(path)).json()["counts"]
    assert counts["PAUSED"] == 2 and counts["SCHEDULED"] == 0
    assert (await alice.post(f"{path}/pause")).status_code == 200  # idempotent

    resumed = (await alice.post(f"{path}/resume")).json()
    assert resumed["status"] == "SCHEDULED"
    view = (await alice.get(path)).json()
    assert view["counts"]["SCHEDULED"] == 2
    assert view["plannedFirstSendAt"] == "2026-11-28T12:00:00Z"
    assert view["plannedLastSendAt"] == "2026-11-28T12:01:00Z"
    assert (await alice.post(f"{path}/resume")).status_code == 409

    cancelled = (await alice.post(f"{path}/cancel")).json()
    assert cancelled["status"] == "CANCELLED"
    assert (await alice.get(path)).json()["counts"]["CANCELLED"] == 2
    assert (await alice.post(f"{path}/pause")).status_code == 409
    assert (await alice.post(f"{path}/resume")).status_code == 409
    assert (await alice.post(f"{path}/cancel")).status_code == 200


async def test_campaigns_are_listed_newest_first_with_a_cursor(alice: httpx.AsyncClient) -> None:
    ids = [(await alice.post(URL, json=spec_body())).json()["campaignId"] for _ in range(5)]
    await alice.post(f"{URL}/{ids[0]}/pause")
    listed: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await alice.get("/api/v1/email/campaigns", params=params)).json()
        listed += [item["campaignId"] for item in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert listed == ids[::-1]
    paused = (await alice.get("/api/v1/email/campaigns", params={"status": "PAUSED"})).json()
    assert [item["campaignId"] for item in paused["items"]] == [ids[0]]
