"""Suppressions and unsubscribes on each database: the store, the routes, and the claim."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Header
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.consumer.claim import ClaimRequest, claim
from mailsched.domain.model import CampaignStatus, DeliveryStatus
from mailsched.producer.auth import Caller
from mailsched.producer.suppressions import suppression_routes, unsubscribe_routes
from mailsched.store import secrets, sending, suppressions
from mailsched.store.db import Database
from mailsched.store.tables import campaigns, deliveries
from mailsched.unsubscribe import UnsubscribeSigner

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
URL = "/api/v1/email/suppressions"
SIGNER = UnsubscribeSigner(b"t" * 32)

S = DeliveryStatus

#: For races between two writing transactions: SQLite runs one at a time (every
#: transaction begins IMMEDIATE), so they cannot happen there.
on_mariadb_only = pytest.mark.parametrize("database_url", ["mariadb"], indirect=True)


async def seed(
    db: Database,
    user_id: int,
    rows: list[tuple[str, DeliveryStatus]],
    status: CampaignStatus = CampaignStatus.RUNNING,
    **delivery: Any,
) -> tuple[int, list[int]]:
    """A campaign of ``user_id`` with one delivery per ``(recipient, status)``."""

    async def work(conn: AsyncConnection) -> tuple[int, list[int]]:
        result = await conn.execute(
            insert(campaigns).values(
                user_id=user_id,
                subject="s",
                body="b",
                start_time=NOW,
                delay_seconds=0,
                hourly_limit=1000,
                status=status,
                recipient_count=len(rows),
                slot_seq=0,
                created_at=NOW,
                templated=False,
            )
        )
        key = result.inserted_primary_key
        assert key is not None
        campaign_id = int(key[0])
        ids = []
        for i, (recipient, state) in enumerate(rows):
            inserted = await conn.execute(
                insert(deliveries).values(
                    campaign_id=campaign_id,
                    recipient=recipient,
                    scheduled_at=NOW + timedelta(seconds=i),
                    status=state,
                    attempts=0,
                    **delivery,
                )
            )
            assert inserted.inserted_primary_key is not None
            ids.append(int(inserted.inserted_primary_key[0]))
        return campaign_id, ids

    return await db.run(work)


async def statuses(db: Database, ids: list[int]) -> list[DeliveryStatus]:
    async def work(conn: AsyncConnection) -> dict[int, str]:
        rows = await conn.execute(
            select(deliveries.c.id, deliveries.c.status).where(deliveries.c.id.in_(ids))
        )
        return {r.id: r.status for r in rows}

    found = await db.run(work)
    return [DeliveryStatus(found[i]) for i in ids]


async def campaign_status(db: Database, campaign_id: int) -> CampaignStatus:
    async def work(conn: AsyncConnection) -> str:
        query = select(campaigns.c.status).where(campaigns.c.id == campaign_id)
        return str((await conn.execute(query)).scalar_one())

    return CampaignStatus(await db.run(work))


async def add(db: Database, user_id: int, address: str, reason: str = "manual") -> bool:
    async def work(conn: AsyncConnection) -> bool:
        return await suppressions.add(conn, user_id, address, reason, NOW)

    return await db.run(work)


async def suppressed(db: Database, user_id: int, addresses: list[str]) -> set[str]:
    async def work(conn: AsyncConnection) -> set[str]:
        return await suppressions.suppressed(conn, user_id, addresses, NOW)

    return await db.run(work)


# --- secrets --------------------------------------------------------------------------


async def test_secret_is_made_once_and_kept(db: Database) -> None:
    async def get(name: str) -> str:
        return await db.run(lambda conn: secrets.get_or_create(conn, name))

    first = await get("unsubscribe")

    assert len(first) == 64 and int(first, 16) >= 0
    assert await get("unsubscribe") == first
    assert await get("other") != first


@on_mariadb_only
async def test_concurrent_creators_agree_on_one_secret(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    read = secrets._read
    misses: list[str] = []
    both_missed = asyncio.Event()

    async def read_then_wait_for_the_other(conn: AsyncConnection, name: str) -> str | None:
        found = await read(conn, name)
        if found is None and not both_missed.is_set():
            # Neither inserts before both have found no secret.
            misses.append(name)
            if len(misses) == 2:
                both_missed.set()
            await both_missed.wait()
        return found

    monkeypatch.setattr(secrets, "_read", read_then_wait_for_the_other)

    values = await asyncio.gather(*(db.run(lambda c: secrets.get_or_create(c, "s")) for _ in "ab"))

    assert misses == ["s", "s"]
    assert values[0] == values[1]
    assert await db.run(lambda conn: secrets.get_or_create(conn, "s")) == values[0]


# --- the store ------------------------------------------------------------------------


async def test_add_is_idempotent_and_case_insensitive(db: Database) -> None:
    assert await add(db, 1, "Bob@Example.ORG", "unsubscribe")
    assert not await add(db, 1, "bob@example.org", "manual")

    found = await suppressed(db, 1, ["BOB@example.org", "bob@example.org", "ann@example.org"])
    page = await db.run(lambda conn: suppressions.page(conn, 1, None, 10, NOW))

    assert found == {"BOB@example.org", "bob@example.org"}
    assert [(p.address, p.reason) for p in page] == [("bob@example.org", "unsubscribe")]
    assert await suppressed(db, 2, ["bob@example.org"]) == set()


async def test_remove(db: Database) -> None:
    await add(db, 1, "bob@example.org")

    async def remove(address: str) -> bool:
        return await db.run(lambda conn: suppressions.remove(conn, 1, address))

    assert await remove("BOB@example.org")
    assert not await remove("bob@example.org")
    assert await suppressed(db, 1, ["bob@example.org"]) == set()


async def test_accented_address_is_not_another_address(db: Database) -> None:
    # MariaDB's utf8mb4_unicode_ci says jörg = jorg; a suppression must not.
    await add(db, 1, "jörg@example.de")

    async def remove(address: str) -> bool:
        return await db.run(lambda conn: suppressions.remove(conn, 1, address))

    assert await suppressed(db, 1, ["jorg@example.de", "JÖRG@example.de"]) == {"JÖRG@example.de"}
    assert not await remove("jorg@example.de")
    assert await suppressed(db, 1, ["jörg@example.de"]) == {"jörg@example.de"}


async def test_page_walks_in_address_order(db: Database) -> None:
    for address in ["d@x.org", "a@x.org", "c@x.org", "b@x.org", "e@x.org"]:
        await add(db, 1, address)
    await add(db, 2, "aa@x.org")

    async def page(after: str | None) -> list[str]:
        rows = await db.run(lambda conn: suppressions.page(conn, 1, after, 2, NOW))
        return [r.address for r in rows]

    assert await page(None) == ["a@x.org", "b@x.org"]
    assert await page("b@x.org") == ["c@x.org", "d@x.org"]
    assert await page("d@x.org") == ["e@x.org"]
    assert await page("e@x.org") == []


async def test_suppressed_checks_many_addresses_in_chunks(db: Database) -> None:
    for i in range(0, 2500, 500):
        await add(db, 1, f"user{i}@example.org")
    addresses = [f"User{i}@example.org" for i in range(2500)]

    found = await suppressed(db, 1, addresses)

    assert found == {f"User{i}@example.org" for i in range(0, 2500, 500)}


async def test_suppress_pending_moves_only_the_users_unclaimed_deliveries(db: Database) -> None:
    bob = "Bob@example.org"
    mine, ids = await seed(
        db,
        1,
        [
            (bob, S.SCHEDULED),
            (bob, S.QUEUED),
            (bob, S.PAUSED),
            (bob, S.SENDING),
            (bob, S.SENT),
            ("ann@example.org", S.SCHEDULED),
        ],
    )
    _other_campaign, others = await seed(db, 2, [(bob, S.SCHEDULED)])
    _accented, accented = await seed(db, 1, [("böb@example.org", S.SCHEDULED)])

    moved = await db.run(
        lambda conn: suppressions.suppress_pending(conn, 1, "bob@EXAMPLE.org", NOW)
    )

    assert moved == 3
    assert await statuses(db, ids) == [
        S.SUPPRESSED,
        S.SUPPRESSED,
        S.SUPPRESSED,
        S.SENDING,
        S.SENT,
        S.SCHEDULED,
    ]
    assert await statuses(db, others) == [S.SCHEDULED]
    assert await statuses(db, accented) == [S.SCHEDULED]
    assert await campaign_status(db, mine) == CampaignStatus.RUNNING


async def test_a_campaign_left_with_nothing_to_send_completes(db: Database) -> None:
    campaign_id, ids = await seed(
        db, 1, [("ann@example.org", S.SENT), ("bob@example.org", S.SCHEDULED)]
    )

    await db.run(lambda conn: suppressions.suppress_pending(conn, 1, "bob@example.org", NOW))

    assert await statuses(db, ids) == [S.SENT, S.SUPPRESSED]
    assert await campaign_status(db, campaign_id) == CampaignStatus.COMPLETED


# --- the worker's claim ---------------------------------------------------------------


def claim_request(campaign_id: int, ids: list[int]) -> ClaimRequest:
    return ClaimRequest(
        deliveries={campaign_id: ids},
        now=NOW + timedelta(minutes=1),
        owner="worker-1",
        lease=timedelta(minutes=2),
        hold=timedelta(seconds=2),
        window=timedelta(hours=1),
    )


async def test_claim_sets_aside_suppressed_addresses(db: Database) -> None:
    campaign_id, ids = await seed(
        db,
        1,
        [("a@example.org", S.QUEUED), ("Bob@example.org", S.QUEUED), ("c@example.org", S.QUEUED)],
    )
    await add(db, 1, "bob@example.org")

    result = (await db.run(lambda conn: claim(conn, claim_request(campaign_id, ids))))[campaign_id]

    assert [r.recipient for r in result.admitted] == ["a@example.org", "c@example.org"]
    assert result.first_seq == 1
    assert result.suppressed == 1
    assert await statuses(db, ids) == [S.SENDING, S.SUPPRESSED, S.SENDING]


async def test_claim_of_only_suppressed_deliveries_completes_the_campaign(db: Database) -> None:
    campaign_id, ids = await seed(db, 1, [("bob@example.org", S.QUEUED)])
    await add(db, 1, "bob@example.org")

    result = (await db.run(lambda conn: claim(conn, claim_request(campaign_id, ids))))[campaign_id]

    assert result.admitted == []
    assert await statuses(db, ids) == [S.SUPPRESSED]
    assert await campaign_status(db, campaign_id) == CampaignStatus.COMPLETED


async def test_another_users_suppression_does_not_apply(db: Database) -> None:
    campaign_id, ids = await seed(db, 1, [("bob@example.org", S.QUEUED)])
    await add(db, 2, "bob@example.org")

    result = (await db.run(lambda conn: claim(conn, claim_request(campaign_id, ids))))[campaign_id]

    assert [r.id for r in result.admitted] == ids


async def test_one_claim_serves_a_batch_of_several_campaigns(db: Database) -> None:
    first, first_ids = await seed(db, 1, [("a@example.org", S.QUEUED), ("b@example.org", S.QUEUED)])
    other, other_ids = await seed(db, 2, [("b@example.org", S.QUEUED)], CampaignStatus.SCHEDULED)
    paused, paused_ids = await seed(db, 1, [("c@example.org", S.QUEUED)], CampaignStatus.PAUSED)
    await add(db, 1, "b@example.org")  # user 1's only
    request = ClaimRequest(
        deliveries={paused: paused_ids, other: other_ids, first: first_ids, 10**9: [10**9]},
        now=NOW + timedelta(minutes=1),
        owner="worker-1",
        lease=timedelta(minutes=2),
        hold=timedelta(seconds=2),
        window=timedelta(hours=1),
    )

    results = await db.run(lambda conn: claim(conn, request))

    assert [r.id for r in results[first].admitted] == first_ids[:1]
    assert results[first].suppressed == 1
    assert [r.id for r in results[other].admitted] == other_ids
    assert (results[first].first_seq, results[other].first_seq) == (1, 1)
    assert results[paused].admitted == []
    assert results[10**9].campaign is None
    assert await statuses(db, first_ids + other_ids + paused_ids) == [
        S.SENDING,
        S.SUPPRESSED,
        S.SENDING,
        S.PAUSED,
    ]
    assert await campaign_status(db, other) == CampaignStatus.RUNNING


async def test_queued_carries_name_and_vars(db: Database) -> None:
    campaign_id, ids = await seed(
        db,
        1,
        [("a@example.org", S.QUEUED)],
        name="Ann",
        vars=json.dumps({"code": "A1", "n": 3, "vip": True}),
    )
    _plain, plain_ids = await seed(db, 1, [("b@example.org", S.QUEUED)])
    _broken, broken_ids = await seed(db, 1, [("c@example.org", S.QUEUED)], vars="[1, 2]")

    found = await db.run(lambda conn: sending.queued(conn, ids + plain_ids + broken_ids))
    rows, plain, broken = found[campaign_id], found[_plain], found[_broken]

    assert (rows[0].name, rows[0].vars) == ("Ann", {"code": "A1", "n": 3, "vip": True})
    assert (plain[0].name, plain[0].vars) == (None, None)
    assert broken[0].vars is None


# --- the routes -----------------------------------------------------------------------


async def fake_caller(x_test_user: Annotated[int, Header()] = 1) -> Caller:
    """Stands in for the API-key dependency: the user is whoever the header says."""
    return Caller(x_test_user, "p")


@pytest.fixture
async def client(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(suppression_routes(db, fake_caller, lambda: NOW))
    app.include_router(unsubscribe_routes(db, SIGNER, lambda: NOW))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_post_suppression_suppresses_pending_deliveries(
    client: httpx.AsyncClient, db: Database
) -> None:
    _campaign, ids = await seed(db, 1, [("bob@example.org", S.SCHEDULED)])

    first = await client.post(URL, json={"address": "Bob@Example.org"})
    again = await client.post(URL, json={"address": "bob@example.org"})

    assert first.status_code == 201, first.text
    assert first.json() == {
        "address": "bob@example.org",
        "reason": "manual",
        "createdAt": "2026-11-28T12:00:00Z",
        "detail": None,
        "expiresAt": None,
        "suppressedDeliveries": 1,
    }
    assert again.status_code == 200
    assert again.json()["suppressedDeliveries"] == 0
    assert await statuses(db, ids) == [S.SUPPRESSED]


@pytest.mark.parametrize(
    "body",
    [
        {"address": "not-an-address"},
        {"address": ""},
        {"address": "bob@example.org", "extra": 1},
        {},
        {"address": "bob@example.org\r\nBcc: eve@evil.example"},
    ],
)
async def test_post_refuses_bad_bodies(
    client: httpx.AsyncClient, db: Database, body: dict[str, Any]
) -> None:
    response = await client.post(URL, json=body)

    assert response.status_code == 422
    assert (await client.get(URL)).json()["items"] == []


async def test_list_pages_with_a_cursor_and_only_the_callers(client: httpx.AsyncClient) -> None:
    for address in ["c@x.org", "a@x.org", "b@x.org"]:
        assert (await client.post(URL, json={"address": address})).status_code == 201
    await client.post(URL, json={"address": "z@x.org"}, headers={"X-Test-User": "2"})

    first = (await client.get(URL, params={"limit": 2})).json()
    second = (await client.get(URL, params={"limit": 2, "cursor": first["nextCursor"]})).json()
    theirs = (await client.get(URL, headers={"X-Test-User": "2"})).json()

    assert [i["address"] for i in first["items"]] == ["a@x.org", "b@x.org"]
    assert first["nextCursor"] == "b@x.org"
    assert [i["address"] for i in second["items"]] == ["c@x.org"]
    assert second["nextCursor"] is None
    assert [i["address"] for i in theirs["items"]] == ["z@x.org"]
    assert (await client.get(URL, params={"limit": 0})).status_code == 422


async def test_delete(client: httpx.AsyncClient) -> None:
    await client.post(URL, json={"address": "bob@example.org"})

    other_user = await client.delete(f"{URL}/bob@example.org", headers={"X-Test-User": "2"})
    deleted = await client.delete(f"{URL}/Bob@Example.org")
    again = await client.delete(f"{URL}/bob@example.org")

    assert other_user.status_code == 404
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert again.status_code == 404
    assert again.json()["error"] == "not_found"
    assert (await client.get(URL)).json()["items"] == []


async def test_delete_an_address_with_a_slash(client: httpx.AsyncClient) -> None:
    assert (await client.post(URL, json={"address": "a/b@example.org"})).status_code == 201

    assert (await client.delete(f"{URL}/a/b@example.org")).status_code == 204


async def test_unsubscribe_page_changes_nothing(client: httpx.AsyncClient, db: Database) -> None:
    _campaign, ids = await seed(db, 1, [("bob@example.org", S.SCHEDULED)])
    token = SIGNER.token(1, "bob@example.org")

    page = await client.get(f"/unsubscribe/{token}")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<form method="post">' in page.text
    assert "bob@example.org" in page.text
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert await statuses(db, ids) == [S.SCHEDULED]
    assert await suppressed(db, 1, ["bob@example.org"]) == set()


async def test_one_click_post_unsubscribes(client: httpx.AsyncClient, db: Database) -> None:
    _campaign, ids = await seed(db, 1, [("bob@example.org", S.SCHEDULED)])
    _other, others = await seed(db, 2, [("bob@example.org", S.SCHEDULED)])
    token = SIGNER.token(1, "bob@example.org")

    response = await client.post(
        f"/unsubscribe/{token}",
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    again = await client.post(f"/unsubscribe/{token}")

    assert response.status_code == 200, response.text
    assert response.json() == {"status": "unsubscribed"}
    assert again.status_code == 200
    assert await statuses(db, ids) == [S.SUPPRESSED]
    assert await statuses(db, others) == [S.SCHEDULED]
    listed = (await client.get(URL)).json()["items"]
    assert [(i["address"], i["reason"]) for i in listed] == [("bob@example.org", "unsubscribe")]


async def test_browser_post_gets_a_page(client: httpx.AsyncClient) -> None:
    token = SIGNER.token(1, "bob@example.org")

    response = await client.post(
        f"/unsubscribe/{token}",
        data={"List-Unsubscribe": "One-Click"},
        headers={"Accept": "text/html"},
    )

    assert response.status_code == 200
    assert "unsubscribed" in response.text
    assert response.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        SIGNER.token(1, "bob@example.org") + "x",
        UnsubscribeSigner(b"o" * 32).token(1, "b@x.org"),
    ],
)
async def test_bad_token_is_404_and_changes_nothing(client: httpx.AsyncClient, token: str) -> None:
    posted = await client.post(f"/unsubscribe/{token}")
    page = await client.get(f"/unsubscribe/{token}")

    assert posted.status_code == 404
    assert posted.json()["error"] == "not_found"
    assert page.status_code == 404
    assert (await client.get(URL)).json()["items"] == []
