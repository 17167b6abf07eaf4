"""Drafts over each database: recipients uploaded as CSV or NDJSON, then scheduled."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.plan import Rules, plan, steady_offset
from mailsched.producer.api import Limits, create_app
from mailsched.producer.auth import Authenticator, caller_dependency
from mailsched.producer.campaigns import Campaigns
from mailsched.producer.uploads import BATCH_BYTES
from mailsched.store import suppressions
from mailsched.store.db import Database
from mailsched.store.tables import campaigns, deliveries, idempotency_keys
from tests.support.api import NOW, URL, client_for, new_key, spec_body

CSV = {"Content-Type": "text/csv"}
NDJSON = {"Content-Type": "application/x-ndjson"}


def draft_body(**changes: Any) -> dict[str, Any]:
    body = spec_body(draft=True, **changes)
    body.pop("recipients", None)
    return body


async def new_draft(client: httpx.AsyncClient, **changes: Any) -> int:
    response = await client.post(URL, json=draft_body(**changes))
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "DRAFT"
    return int(response.json()["campaignId"])


async def rows(db: Database, campaign_id: int) -> list[Any]:
    async def work(conn: AsyncConnection) -> list[Any]:
        d = deliveries.c
        query = (
            select(d.recipient, d.name, d.vars, d.status, d.scheduled_at, d.timezone)
            .where(d.campaign_id == campaign_id)
            .order_by(d.id)
        )
        return list((await conn.execute(query)).all())

    return await db.run(work)


async def stored_count(db: Database, campaign_id: int) -> int:
    async def work(conn: AsyncConnection) -> int:
        query = select(campaigns.c.recipient_count).where(campaigns.c.id == campaign_id)
        return int((await conn.execute(query)).scalar_one())

    return await db.run(work)


def ndjson(*items: object) -> bytes:
    return "".join(json.dumps(item) + "\n" for item in items).encode()


async def test_a_draft_takes_a_csv_then_is_scheduled_like_a_create(
    client: httpx.AsyncClient, db: Database
) -> None:
    campaign_id = await new_draft(client, subject="Hi {{ name }}", body="From {{ city }}")
    answer = await client.get(f"{URL}/{campaign_id}")
    assert answer.json()["status"] == "DRAFT"
    assert answer.json()["recipientCount"] == 0

    csv = (
        "email,name,vars.city\r\n"
        "a@example.com,Ann,Oslo\r\n"
        '"b@example.com","Bo, the second","New\nYork"\r\n'
        "\r\n"
        "c@Example.COM,,Rome\r\n"
    )
    response = await client.post(f"{URL}/{campaign_id}/recipients", content=csv, headers=CSV)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "campaignId": campaign_id,
        "received": 3,
        "added": 3,
        "duplicatesDropped": 0,
        "invalid": 0,
        "problems": [],
        "recipientCount": 3,
    }
    stored = await rows(db, campaign_id)
    assert [(r.recipient, r.name, r.status) for r in stored] == [
        ("a@example.com", "Ann", "DRAFT"),
        ("b@example.com", "Bo, the second", "DRAFT"),
        ("c@example.com", None, "DRAFT"),
    ]
    assert json.loads(stored[1].vars) == {"city": "New\nYork"}
    # A value that would break the subject is its row's problem.
    bad = 'email,name\r\nd@example.com,"Dee\nDee"\r\n'
    refused = await client.post(f"{URL}/{campaign_id}/recipients", content=bad, headers=CSV)
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["field"] == "name"

    response = await client.post(f"{URL}/{campaign_id}/schedule")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "SCHEDULED"
    assert response.json()["recipientCount"] == 3
    # As the specification's example plans them: a minute apart from its (past) start.
    assert response.json()["firstSendAt"] == "2026-11-28T12:00:00Z"
    assert response.json()["lastSendAt"] == "2026-11-28T12:02:00Z"
    assert [r.status for r in await rows(db, campaign_id)] == ["SCHEDULED"] * 3
    assert (await client.get(f"{URL}/{campaign_id}")).json()["status"] == "SCHEDULED"


@pytest.mark.parametrize(
    ("delay", "limit", "count"),
    [(60, 10, 25), (0, 7, 30), (1, 100_000, 40), (5, 3, 10), (0, 1_000_000_000, 12)],
)
async def test_the_plan_is_a_creates(
    client: httpx.AsyncClient, db: Database, delay: int, limit: int, count: int
) -> None:
    """The database's plan (in one statement on MySQL) is the one a create makes."""
    recipients = [f"user{i}@example.com" for i in range(count)]
    changes = {"delaySeconds": delay, "hourlyLimit": limit, "startTime": "2026-11-29T08:00:00Z"}
    created = await client.post(URL, json=spec_body(recipients=recipients, **changes))
    campaign_id = await new_draft(client, **changes)
    upload = ndjson(*recipients)
    response = await client.post(f"{URL}/{campaign_id}/recipients", content=upload, headers=NDJSON)
    assert response.status_code == 200, response.text
    assert (await client.post(f"{URL}/{campaign_id}/schedule")).status_code == 200

    expected = [r.scheduled_at for r in await rows(db, created.json()["campaignId"])]
    assert [r.scheduled_at for r in await rows(db, campaign_id)] == expected


def test_the_closed_form_is_the_plan() -> None:
    for delay, limit, window in [(60, 10, 3600), (0, 7, 3600), (1, 5, 4), (7, 3, 20), (3, 2, 5)]:
        rules = Rules(timedelta(seconds=delay), limit, timedelta(seconds=window))
        times = plan(50, NOW, rules)
        assert times == [NOW + steady_offset(i, rules) for i in range(50)]


async def test_duplicates_are_dropped_within_the_upload_and_against_the_draft(
    client: httpx.AsyncClient, db: Database
) -> None:
    campaign_id = await new_draft(client)
    url = f"{URL}/{campaign_id}/recipients"
    first = await client.post(url, content=ndjson("a@example.com", "A@example.com"), headers=NDJSON)
    assert first.json()["added"] == 1
    assert first.json()["duplicatesDropped"] == 1
    again = ndjson({"email": "a@EXAMPLE.com"}, "b@example.com", "b@example.com")
    second = await client.post(url, content=again, headers=NDJSON)
    assert second.status_code == 200, second.text
    assert second.json()["added"] == 1
    assert second.json()["duplicatesDropped"] == 2
    assert second.json()["recipientCount"] == 2
    assert [r.recipient for r in await rows(db, campaign_id)] == ["a@example.com", "b@example.com"]
    assert await stored_count(db, campaign_id) == 2


async def test_an_upload_into_an_empty_draft_drops_duplicates_across_its_batches(
    client: httpx.AsyncClient, db: Database
) -> None:
    # Into an empty draft the stored rows are asked only about what the upload's own
    # filter has (maybe) seen: here, addresses stored from an earlier batch.
    campaign_id = await new_draft(client)
    count = BATCH_BYTES // 20
    addresses = [f"user{i}@example.com" for i in range(count)]
    body = ndjson(*addresses, "USER0@example.com", {"email": f"User{count - 1}@example.com"})
    assert len(body) > BATCH_BYTES
    answer = await client.post(f"{URL}/{campaign_id}/recipients", content=body, headers=NDJSON)
    assert answer.status_code == 200, answer.text
    assert answer.json()["added"] == count
    assert answer.json()["duplicatesDropped"] == 2
    assert await stored_count(db, campaign_id) == count


async def test_bad_rows_refuse_the_whole_upload_naming_their_lines(
    client: httpx.AsyncClient, db: Database
) -> None:
    campaign_id = await new_draft(client)
    good = [f"user{i}@example.com" for i in range(300)]
    lines = [*good[:100], "not an address", *good[100:], '{"email": "x@example.com", "age": 3}']
    lines.insert(5, "{broken")
    body = "\n".join(json.dumps(x) if not x.startswith("{") else x for x in lines).encode()
    response = await client.post(f"{URL}/{campaign_id}/recipients", content=body, headers=NDJSON)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["invalid"] == 3
    assert [(p["line"], p["field"]) for p in answer["detail"]] == [
        (6, "line"),
        (102, "email"),
        (303, "age"),
    ]
    assert "not JSON" in answer["detail"][0]["message"]
    assert await rows(db, campaign_id) == []
    assert await stored_count(db, campaign_id) == 0


async def test_only_the_first_hundred_bad_rows_are_named(client: httpx.AsyncClient) -> None:
    campaign_id = await new_draft(client)
    body = "email\n" + "".join(f"bad{i}\n" for i in range(250))
    response = await client.post(f"{URL}/{campaign_id}/recipients", content=body, headers=CSV)
    assert response.status_code == 422
    assert response.json()["invalid"] == 250
    assert len(response.json()["detail"]) == 100
    assert response.json()["detail"][0] == {
        "line": 2,
        "field": "email",
        "message": response.json()["detail"][0]["message"],
    }


async def test_skip_invalid_stores_the_good_rows_and_reports_the_bad(
    client: httpx.AsyncClient, db: Database
) -> None:
    campaign_id = await new_draft(client)
    body = "email,name\na@example.com,Ann\nnope,Bad\nb@example.com,\nc@example.com,x,y\n"
    response = await client.post(
        f"{URL}/{campaign_id}/recipients",
        params={"skipInvalid": "true"},
        content=body,
        headers=CSV,
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["received"], answer["added"], answer["invalid"]) == (4, 2, 2)
    assert [(p["line"], p["field"]) for p in answer["problems"]] == [(3, "email"), (5, "line")]
    assert [r.recipient for r in await rows(db, campaign_id)] == ["a@example.com", "b@example.com"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("mail,name\na@example.com,x\n", "unknown column 'mail'"),
        ("name\nAnn\n", "no email column"),
        ("email,email\na@example.com,b@example.com\n", "named twice"),
        ("", "no header row"),
        ('email\n"a@example.com\n', "never closed"),
    ],
)
async def test_a_bad_header_refuses_the_upload(
    client: httpx.AsyncClient, db: Database, body: str, message: str
) -> None:
    campaign_id = await new_draft(client)
    response = await client.post(f"{URL}/{campaign_id}/recipients", content=body, headers=CSV)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"][0]["message"]
    assert await rows(db, campaign_id) == []


async def test_rows_are_checked_against_the_drafts_templates_and_calendar(
    client: httpx.AsyncClient,
) -> None:
    campaign_id = await new_draft(client, subject="Hello {{ first }}")
    body = ndjson(
        {"email": "a@example.com", "vars": {"first": "Ann"}},
        {"email": "b@example.com"},
        {"email": "c@example.com", "vars": {"first": "C"}, "timezone": "Europe/Oslo"},
    )
    response = await client.post(f"{URL}/{campaign_id}/recipients", content=body, headers=NDJSON)
    assert response.status_code == 422
    assert [(p["line"], p["field"]) for p in response.json()["detail"]] == [
        (2, "vars"),
        (3, "timezone"),
    ]
    assert "missing variables: first" in response.json()["detail"][0]["message"]


@pytest.mark.parametrize(
    "content_type", ["application/json", "text/plain", "text/csv; charset=latin-1", None]
)
async def test_other_formats_are_refused(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    campaign_id = await new_draft(client)
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.post(
        f"{URL}/{campaign_id}/recipients", content=b"email\na@example.com\n", headers=headers
    )
    assert response.status_code == 415, response.text
    assert response.json()["detail"][0]["field"] == "Content-Type"


async def test_a_retried_upload_with_its_key_adds_nothing_twice(
    client: httpx.AsyncClient, db: Database
) -> None:
    campaign_id = await new_draft(client)
    url = f"{URL}/{campaign_id}/recipients"
    body = ndjson(*[f"user{i}@example.com" for i in range(50)])
    headers = {**NDJSON, "Idempotency-Key": "upload-1"}
    first = await client.post(url, content=body, headers=headers)
    assert first.status_code == 200, first.text
    again = await client.post(url, content=body, headers=headers)
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert len(await rows(db, campaign_id)) == 50
    other = await client.post(url, content=ndjson("z@example.com"), headers=headers)
    assert other.status_code == 409
    assert len(await rows(db, campaign_id)) == 50


async def test_a_refused_upload_keeps_its_key_free(client: httpx.AsyncClient, db: Database) -> None:
    campaign_id = await new_draft(client)
    url = f"{URL}/{campaign_id}/recipients"
    headers = {**NDJSON, "Idempotency-Key": "upload-2"}
    bad = await client.post(url, content=ndjson("a@example.com", "bad"), headers=headers)
    assert bad.status_code == 422

    async def keys(conn: AsyncConnection) -> int:
        return int(
            (await conn.execute(select(func.count()).select_from(idempotency_keys))).scalar_one()
        )

    assert await db.run(keys) == 0
    good = await client.post(url, content=ndjson("a@example.com"), headers=headers)
    assert good.status_code == 200
    assert good.json()["added"] == 1


async def _disconnecting_upload(app: Any, campaign_id: int, key: str) -> list[dict[str, Any]]:
    """POST an upload straight to the ASGI app, whose client goes away mid-body."""
    # More than a batch (BATCH_BYTES) arrives before the client goes.
    head = ndjson(*[f"user{i}@example.com" for i in range(20_000)])
    assert len(head) > 1.5 * BATCH_BYTES
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": head[:30_000], "more_body": True},
        {"type": "http.request", "body": head[30_000:], "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"{URL}/{campaign_id}/recipients",
        "raw_path": f"{URL}/{campaign_id}/recipients".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"test"),
            (b"content-type", b"application/x-ndjson"),
            (b"authorization", f"Bearer {key}".encode()),
            (b"transfer-encoding", b"chunked"),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }
    await app(scope, receive, send)
    return sent


async def test_a_client_that_goes_away_mid_upload_stores_nothing(db: Database, app: Any) -> None:
    key = await new_key(db, 1)
    async with client_for(app, key) as client:
        campaign_id = await new_draft(client)
    sent = await _disconnecting_upload(app, campaign_id, key)
    assert sent[0]["status"] == 400
    assert await rows(db, campaign_id) == []
    assert await stored_count(db, campaign_id) == 0


async def test_the_state_rules(client: httpx.AsyncClient, db: Database) -> None:
    campaign_id = await new_draft(client)
    url = f"{URL}/{campaign_id}"
    nothing = await client.post(f"{url}/schedule")
    assert nothing.status_code == 409
    assert "no recipients" in nothing.json()["detail"]
    assert (await client.post(f"{url}/pause")).status_code == 409
    await client.post(f"{url}/recipients", content=ndjson("a@example.com"), headers=NDJSON)
    assert (await client.post(f"{url}/schedule")).status_code == 200
    assert (await client.post(f"{url}/schedule")).status_code == 409
    late = await client.post(f"{url}/recipients", content=ndjson("b@example.com"), headers=NDJSON)
    assert late.status_code == 409
    created = await client.post(URL, json=spec_body())
    assert (await client.post(f"{URL}/{created.json()['campaignId']}/schedule")).status_code == 409


async def test_a_draft_can_be_cancelled(client: httpx.AsyncClient, db: Database) -> None:
    campaign_id = await new_draft(client)
    url = f"{URL}/{campaign_id}"
    await client.post(f"{url}/recipients", content=ndjson("a@example.com"), headers=NDJSON)
    response = await client.post(f"{url}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "CANCELLED"
    assert [r.status for r in await rows(db, campaign_id)] == ["CANCELLED"]


async def test_suppressed_addresses_are_suppressed_when_scheduled(
    client: httpx.AsyncClient, db: Database
) -> None:
    async def suppress(conn: AsyncConnection) -> None:
        await suppressions.add(conn, 1, "B@example.com", "manual", NOW)

    await db.run(suppress)
    campaign_id = await new_draft(client)
    body = ndjson("a@example.com", "b@example.com", "c@example.com")
    await client.post(f"{URL}/{campaign_id}/recipients", content=body, headers=NDJSON)
    response = await client.post(f"{URL}/{campaign_id}/schedule")
    assert response.json()["suppressed"] == 1
    assert [r.status for r in await rows(db, campaign_id)] == [
        "SCHEDULED",
        "SUPPRESSED",
        "SCHEDULED",
    ]
    # The two left are planned as two: a minute apart.
    assert response.json()["lastSendAt"] == "2026-11-28T12:01:00Z"


async def test_a_draft_with_a_recipient_calendar_plans_each_zone(
    client: httpx.AsyncClient, db: Database
) -> None:
    schedule = {
        "timezone": "recipient",
        "fallbackTimezone": "UTC",
        "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "windows": [{"start": "09:00", "end": "17:00"}],
    }
    campaign_id = await new_draft(client, schedule=schedule)
    body = ndjson(
        {"email": "a@example.com", "timezone": "Asia/Tokyo"},
        {"email": "b@example.com"},
    )
    response = await client.post(f"{URL}/{campaign_id}/recipients", content=body, headers=NDJSON)
    assert response.status_code == 200, response.text
    scheduled = await client.post(f"{URL}/{campaign_id}/schedule")
    assert scheduled.status_code == 200, scheduled.text
    stored = await rows(db, campaign_id)
    assert [r.timezone for r in stored] == ["Asia/Tokyo", "UTC"]
    # 12:00 UTC is 21:00 in Tokyo: its window opens at 09:00 local (00:00 UTC) next day.
    assert stored[0].scheduled_at.hour == 0
    assert stored[1].scheduled_at == NOW


@pytest.fixture
async def small_app(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    caller = caller_dependency(Authenticator(db, 6000))
    campaigns_ = Campaigns(db, timedelta(hours=1), lambda: NOW, max_recipients=5)
    app = create_app(campaigns_, caller, limits=Limits(max_recipients=5))
    async with client_for(app, await new_key(db, 1)) as client:
        yield client


async def test_max_recipients_is_per_campaign(small_app: httpx.AsyncClient, db: Database) -> None:
    client = small_app
    campaign_id = await new_draft(client)
    url = f"{URL}/{campaign_id}/recipients"
    first = await client.post(
        url, content=ndjson(*[f"u{i}@example.com" for i in range(4)]), headers=NDJSON
    )
    assert first.status_code == 200
    over = await client.post(url, content=ndjson("v@example.com", "w@example.com"), headers=NDJSON)
    assert over.status_code == 413
    assert over.json()["detail"][0]["field"] == "recipients"
    assert len(await rows(db, campaign_id)) == 4
    body = await client.post(
        URL, json=spec_body(recipients=[f"x{i}@example.com" for i in range(6)])
    )
    assert body.status_code == 413


async def test_a_draft_without_recipients_only(client: httpx.AsyncClient) -> None:
    response = await client.post(URL, json=spec_body(draft=True))
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "recipients"
    empty = await client.post(URL, json=spec_body(recipients=[]))
    assert empty.status_code == 422
    assert "at least 1 item" in empty.json()["detail"][0]["message"]
