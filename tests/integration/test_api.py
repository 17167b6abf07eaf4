"""The REST API over each database: the contract, the validation matrix, nothing half-stored."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from mailsched.errors import DataRefused
from mailsched.producer.api import Limits, create_app
from mailsched.producer.auth import Authenticator, caller_dependency
from mailsched.producer.campaigns import Campaigns
from mailsched.store.db import Database
from mailsched.store.tables import campaigns, deliveries
from tests.support.api import NOW, URL, client_for, make_app, new_key, spec_body


async def count_rows(db: Database) -> tuple[int, int]:
    async def work(conn: Any) -> tuple[int, int]:
        c = (await conn.execute(select(func.count()).select_from(campaigns))).scalar_one()
        d = (await conn.execute(select(func.count()).select_from(deliveries))).scalar_one()
        return c, d

    return await db.run(work)


async def test_specification_example_is_created(client: httpx.AsyncClient) -> None:
    response = await client.post(URL, json=spec_body())
    assert response.status_code == 201, response.text
    body = response.json()
    assert body == {
        "campaignId": body["campaignId"],
        "status": "SCHEDULED",
        "recipientCount": 2,
        "duplicatesDropped": 0,
        # startTime is in the past: "start now".
        "firstSendAt": "2026-11-28T12:00:00Z",
        "lastSendAt": "2026-11-28T12:01:00Z",
    }


async def test_eleventh_email_waits_for_the_window(client: httpx.AsyncClient) -> None:
    recipients = [f"user{i}@example.com" for i in range(11)]
    response = await client.post(
        URL, json=spec_body(startTime="2026-11-28T13:00:00+01:00", recipients=recipients)
    )
    assert response.status_code == 201
    campaign_id = response.json()["campaignId"]
    page = (await client.get(f"{URL}/{campaign_id}/deliveries", params={"limit": 20})).json()
    times = [item["scheduledAt"] for item in page["items"]]
    assert times[:3] == ["2026-11-28T12:00:00Z", "2026-11-28T12:01:00Z", "2026-11-28T12:02:00Z"]
    assert times[9] == "2026-11-28T12:09:00Z"
    assert times[10] == "2026-11-28T13:00:00Z"
    assert page["nextCursor"] is None


async def test_future_start_time_is_kept(client: httpx.AsyncClient) -> None:
    response = await client.post(URL, json=spec_body(startTime="2026-12-01T08:30:00-05:00"))
    assert response.json()["firstSendAt"] == "2026-12-01T13:30:00Z"


async def test_duplicates_are_dropped_case_insensitively(client: httpx.AsyncClient) -> None:
    recipients = ["a@example.com", "A@Example.com", "b@example.com", "a@EXAMPLE.COM"]
    response = await client.post(URL, json=spec_body(recipients=recipients))
    assert response.status_code == 201
    assert response.json()["recipientCount"] == 2
    assert response.json()["duplicatesDropped"] == 2


async def test_idn_domain_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(URL, json=spec_body(recipients=["jörg@münchen.de"]))
    assert response.status_code == 201, response.text


async def test_longest_addresses_are_accepted(client: httpx.AsyncClient) -> None:
    longest = [
        "a" * 64 + "@example.com",
        "a" * 9 + "@" + ".".join(["d" * 63] * 3 + ["d" * 48]) + ".com",
    ]
    assert len(longest[1]) == 254
    response = await client.post(URL, json=spec_body(recipients=longest))
    assert response.status_code == 201, response.text


LONG_LOCAL = "a" * 65 + "@example.com"
# 255 characters: one more than an SMTP path allows.
LONG_ADDRESS = "a" * 10 + "@" + ".".join(["d" * 63] * 3 + ["d" * 48]) + ".com"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"subject": "Hello\r\nBcc: victim@example.com"}, "subject"),
        ({"subject": "line\nbreak"}, "subject"),
        ({"subject": ""}, "subject"),
        ({"subject": "x" * 999}, "subject"),
        ({"body": None}, "body"),
        ({"recipients": []}, "recipients"),
        ({"recipients": ["not-an-address"]}, "recipients.0"),
        ({"recipients": ["ok@example.com", "bad@@example.com"]}, "recipients.1"),
        ({"recipients": [LONG_LOCAL]}, "recipients.0"),
        ({"recipients": [LONG_ADDRESS]}, "recipients.0"),
        ({"recipients": ["x" * 250 + "@example.com"]}, "recipients.0"),
        ({"recipients": ["a@example.com\r\nBcc: b@example.com"]}, "recipients.0"),
        ({"startTime": "2026-01-25T12:00:00"}, "startTime"),
        ({"startTime": "yesterday"}, "startTime"),
        # No UTC datetime: before year 1, after year 9999.
        ({"startTime": "9999-12-31T23:00:00-12:00"}, "startTime"),
        ({"startTime": "0001-01-01T00:00+14:00"}, "startTime"),
        # The plan would run past year 9999.
        ({"startTime": "9999-12-31T23:59:00Z", "recipients": ["a@x.io", "b@x.io"]}, "startTime"),
        ({"startTime": "9999-12-31T23:00:00Z", "hourlyLimit": 1, "delaySeconds": 0}, "startTime"),
        # Unix times: the documented type is an RFC 3339 date-time.
        ({"startTime": 1764331200}, "startTime"),
        ({"startTime": 1764331200.5}, "startTime"),
        ({"startTime": "1764331200"}, "startTime"),
        ({"delaySeconds": -1}, "delaySeconds"),
        ({"delaySeconds": 86401}, "delaySeconds"),
        ({"delaySeconds": 1.5}, "delaySeconds"),
        ({"hourlyLimit": 0}, "hourlyLimit"),
        ({"hourlyLimit": "10"}, "hourlyLimit"),
        ({"userId": 0}, "userId"),
        ({"userId": True}, "userId"),
        ({"priority": "high"}, "priority"),
    ],
)
async def test_invalid_input_names_the_field_and_stores_nothing(
    client: httpx.AsyncClient, db: Database, changes: dict[str, Any], field: str
) -> None:
    response = await client.post(URL, json=spec_body(**changes))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_request"
    assert field in [d["field"] for d in body["detail"]]
    assert await count_rows(db) == (0, 0)


@pytest.mark.parametrize("missing", ["userId", "subject", "body", "startTime", "recipients"])
async def test_missing_fields_are_named(client: httpx.AsyncClient, missing: str) -> None:
    body = spec_body()
    del body[missing]
    response = await client.post(URL, json=body)
    assert response.status_code == 422
    assert missing in [d["field"] for d in response.json()["detail"]]


async def test_malformed_json_is_a_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        URL, content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"


async def test_get_campaign_reports_counts_and_times(
    client: httpx.AsyncClient, db: Database
) -> None:
    created = (await client.post(URL, json=spec_body())).json()
    response = await client.get(f"{URL}/{created['campaignId']}")
    assert response.status_code == 200
    view = response.json()
    assert view["status"] == "SCHEDULED"
    assert view["counts"] == {"SCHEDULED": 2} | dict.fromkeys(
        [
            "DRAFT",
            "QUEUED",
            "SENDING",
            "PAUSED",
            "SENT",
            "FAILED",
            "CANCELLED",
            "SUPPRESSED",
            "BOUNCED",
            "COMPLAINED",
        ],
        0,
    )
    assert view["plannedFirstSendAt"] == "2026-11-28T12:00:00Z"
    assert view["plannedLastSendAt"] == "2026-11-28T12:01:00Z"
    assert view["firstSentAt"] is None and view["lastSentAt"] is None
    assert await count_rows(db) == (1, 2)


async def test_unknown_campaign_is_404(client: httpx.AsyncClient) -> None:
    for path in (f"{URL}/999", f"{URL}/999/deliveries"):
        response = await client.get(path)
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"


async def test_deliveries_paginate_with_a_cursor(client: httpx.AsyncClient) -> None:
    recipients = [f"user{i:02d}@example.com" for i in range(25)]
    created = (await client.post(URL, json=spec_body(recipients=recipients))).json()
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 10}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get(f"{URL}/{created['campaignId']}/deliveries", params=params)).json()
        pages += 1
        seen += [item["recipient"] for item in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == recipients
    item = page["items"][0]
    assert set(item) == {
        "deliveryId",
        "recipient",
        "scheduledAt",
        "status",
        "attempts",
        "sentAt",
        "lastError",
        "timezone",
        "relay",
        "plannedAt",
    }


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 1001},
        {"limit": "1.0"},
        {"limit": "+1"},
        {"cursor": "abc"},
        {"status": "LOST"},
    ],
)
async def test_bad_page_parameters_are_422(
    client: httpx.AsyncClient, params: dict[str, Any]
) -> None:
    created = (await client.post(URL, json=spec_body())).json()
    response = await client.get(f"{URL}/{created['campaignId']}/deliveries", params=params)
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] in params


async def test_status_filter(client: httpx.AsyncClient) -> None:
    created = (await client.post(URL, json=spec_body())).json()
    path = f"{URL}/{created['campaignId']}/deliveries"
    assert len((await client.get(path, params={"status": "SCHEDULED"})).json()["items"]) == 2
    assert (await client.get(path, params={"status": "SENT"})).json()["items"] == []


async def test_openapi_and_health(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    schema = (await client.get("/openapi.json")).json()
    assert URL in schema["paths"]
    assert (await client.get("/docs")).status_code == 200


async def test_readyz_reports_each_dependency(db: Database) -> None:
    async def broken() -> None:
        raise ConnectionRefusedError("broker down")

    app = make_app(db, checks={"database": db.ping, "kafka": broken})
    async with client_for(app, None) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] == "ok"
    assert checks["kafka"].startswith("unavailable")


async def test_readyz_is_ok_when_everything_answers(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


async def test_metrics_are_exposed(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert "mailsched_sends_total" in response.text
    assert "mailsched_lateness_seconds_bucket" in response.text


async def test_unreachable_database_is_a_503_not_a_500() -> None:
    db = Database.from_url("mysql://mailsched:mailsched@127.0.0.1:1/mailsched")
    app = make_app(db)
    try:
        async with client_for(app, "ms_abcdef_secret") as client:
            response = await client.post(URL, json=spec_body())
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"]
            assert response.json()["error"] == "unavailable"
            assert (await client.get(f"{URL}/1")).status_code == 503
            assert (await client.get("/readyz")).status_code == 200  # no checks given
    finally:
        await db.dispose()


async def test_retry_failed_gives_failed_deliveries_new_attempts(
    client: httpx.AsyncClient, db: Database
) -> None:
    created = (await client.post(URL, json=spec_body())).json()
    campaign_id = created["campaignId"]

    async def fail_one(conn: Any) -> None:
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.recipient == "user2@example.com")
            .values(status="FAILED", attempts=5, last_error="550 no such user")
        )

    await db.run(fail_one)
    response = await client.post(f"{URL}/{campaign_id}/retry-failed")
    assert response.status_code == 200
    assert response.json() == {"campaignId": campaign_id, "retried": 1}
    page = (await client.get(f"{URL}/{campaign_id}/deliveries")).json()
    retried = next(i for i in page["items"] if i["recipient"] == "user2@example.com")
    assert (retried["status"], retried["attempts"]) == ("SCHEDULED", 0)
    # Planned again under the campaign's rules: a minute after the first.
    times = sorted(i["scheduledAt"] for i in page["items"])
    assert times == ["2026-11-28T12:00:00Z", "2026-11-28T12:01:00Z"]
    assert (await client.post(f"{URL}/999/retry-failed")).status_code == 404


async def test_campaign_view_counts_possible_duplicates(client: httpx.AsyncClient) -> None:
    created = (await client.post(URL, json=spec_body())).json()
    view = (await client.get(f"{URL}/{created['campaignId']}")).json()
    assert view["possibleDuplicates"] == 0


async def test_recipients_are_counted_before_they_are_validated(db: Database) -> None:
    app = make_app(db, limits=Limits(max_recipients=3))
    async with client_for(app, await new_key(db, 1)) as client:
        # Invalid recipients, and one too many: the count refuses them unvalidated.
        response = await client.post(URL, json=spec_body(recipients=["bad", 2, {}, None]))
        assert response.status_code == 413, response.text
        assert response.json()["detail"] == [
            {
                "field": "recipients",
                "message": "at most 3 recipients in a body; upload more to a draft",
            }
        ]
        # Duplicates count: they are in the body all the same.
        response = await client.post(URL, json=spec_body(recipients=["a@x.io"] * 4))
        assert response.status_code == 413
        assert (
            await client.post(URL, json=spec_body(recipients=["a@x.io"] * 3))
        ).status_code == 201
        assert (await client.post(URL, json=spec_body(recipients=["bad"] * 3))).status_code == 422
    assert await count_rows(db) == (1, 1)


@pytest.mark.parametrize(
    "body",
    [
        # The recipients are not an array, or not at the top level: the schema says what is wrong.
        spec_body(recipients="a@x.io"),
        spec_body(recipients={"recipients": ["a@x.io"] * 4}),
        spec_body(body={"recipients": ["a@x.io"] * 4}),
    ],
)
async def test_only_the_top_level_recipients_array_is_counted(
    db: Database, body: dict[str, Any]
) -> None:
    app = make_app(db, limits=Limits(max_recipients=3))
    async with client_for(app, await new_key(db, 1)) as client:
        response = await client.post(URL, json=body)
    assert response.status_code == 422, response.text


async def test_malformed_json_names_the_body_and_where(client: httpx.AsyncClient) -> None:
    response = await client.post(
        URL, content=b'{"userId": 1,\n  "subject": }', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"field": "body", "message": "not valid JSON: Expecting value (line 2, column 14)"}
    ]


async def test_deeply_nested_json_is_said_to_be_so(client: httpx.AsyncClient) -> None:
    for nested in (
        b"[" * 100_000 + b"]" * 100_000,
        b'{"body": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ):
        response = await client.post(
            URL, content=nested, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422
        assert response.json()["detail"] == [{"field": "body", "message": "nested too deeply"}]


async def test_a_429_says_what_its_header_says(db: Database) -> None:
    clock = [100.0]
    # 6 a minute: a burst of 1, then one every 10 s.
    caller = caller_dependency(Authenticator(db, 6, monotonic=lambda: clock[0]))
    app = create_app(Campaigns(db, timedelta(hours=1), lambda: NOW), caller)
    async with client_for(app, await new_key(db, 1)) as client:
        assert (await client.get(f"{URL}s")).status_code == 200
        for elapsed, expected in ((0.0, 10), (9.6, 1), (0.3, 1), (-5.5, 6)):
            clock[0] += elapsed
            response = await client.get(f"{URL}s")
            assert response.status_code == 429
            assert response.headers["retry-after"] == str(expected)
            assert response.json()["detail"] == f"too many requests; retry after {expected} s"


@pytest.mark.parametrize("campaign_id", ["1.0", "+1", "1e0", " 1", "\u0661"])
async def test_campaign_ids_are_integers_in_digits(
    client: httpx.AsyncClient, campaign_id: str
) -> None:
    assert (await client.post(URL, json=spec_body())).json()["campaignId"] == 1
    assert (await client.get(f"{URL}/1")).status_code == 200
    for path in (f"{URL}/{campaign_id}", f"{URL}/{campaign_id}/deliveries"):
        response = await client.get(path)
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["field"] == "campaign_id"


async def test_the_largest_variables_the_schema_allows_are_stored(
    client: httpx.AsyncClient, db: Database
) -> None:
    # Escaped as \uXXXX, these are ~300 KB of JSON: past a MySQL TEXT's 64 KiB.
    variables = {f"v{i}": "é€" * 500 for i in range(50)}
    recipient = {"email": "a@example.com", "vars": variables}
    response = await client.post(URL, json=spec_body(recipients=[recipient]))
    assert response.status_code == 201, response.text

    async def stored(conn: Any) -> str:
        return str((await conn.execute(select(deliveries.c.vars))).scalar_one())

    assert json.loads(await db.run(stored)) == variables


async def test_a_value_the_database_refuses_is_a_422_not_a_503(db: Database) -> None:
    class Refusing(Campaigns):
        async def create(self, *_: Any, **__: Any) -> Any:
            raise DataRefused("value refused: (1406, \"Data too long for column 'vars'\")")

    caller = caller_dependency(Authenticator(db, 6000))
    app = create_app(Refusing(db, timedelta(hours=1), lambda: NOW), caller)
    async with client_for(app, await new_key(db, 1)) as client:
        response = await client.post(URL, json=spec_body())
    assert response.status_code == 422, response.text
    assert "retry-after" not in response.headers
    assert response.json()["detail"][0]["field"] == "body"
