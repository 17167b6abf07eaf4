"""``GET /api/v1/events`` on both databases: the caller's events only, oldest first,
paged by a cursor a client can poll from for ever; filters; and every bad parameter
a 422 that names it."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.events import EventType, NewEvent
from mailsched.store import events
from mailsched.store.db import Database
from tests.support.api import NOW, URL, client_for, make_app, new_key, spec_body

FEED = "/api/v1/events"


async def everything(client: httpx.AsyncClient, after: str | None = None) -> tuple[list[Any], str]:
    """Every event of the caller after ``after``, and the cursor at the end."""
    items: list[Any] = []
    params = {"after": after} if after else {}
    while True:
        page = (await client.get(FEED, params=params | {"limit": 1000})).json()
        items += page["items"]
        if not page["items"]:
            return items, page["nextCursor"]
        params = {"after": page["nextCursor"]}


async def seeded(db: Database) -> dict[str, Any]:
    """Two users with a campaign each; then five events of known ids after the
    events (if any) that creating the campaigns wrote."""
    keys = {user: await new_key(db, user) for user in (1, 2)}
    app = make_app(db)
    campaign: dict[int, int] = {}
    marks: dict[int, str] = {}
    for user in (1, 2):
        async with client_for(app, keys[user]) as client:
            created = await client.post(URL, json=spec_body(userId=user))
            assert created.status_code == 201, created.text
            campaign[user] = created.json()["campaignId"]
            marks[user] = (await everything(client))[1]
    c1, c2 = campaign[1], campaign[2]

    async def write(conn: AsyncConnection) -> int:
        return await events.append(
            conn,
            [
                NewEvent(1, EventType.DELIVERY_SENT, NOW, c1, 11, {"recipient": "a@example.com"}),
                NewEvent(2, EventType.DELIVERY_SENT, NOW, c2, 21, {"recipient": "b@example.com"}),
                NewEvent(1, EventType.DELIVERY_FAILED, NOW, c1, 12, {"attempt": 3}),
                NewEvent(1, EventType.RECIPIENT_UNSUBSCRIBED, NOW, None, None, {}),
                NewEvent(1, EventType.DELIVERY_SENT, NOW, c1, 13, {}),
            ],
        )

    last = await db.run(write)
    ids = list(range(last - 4, last + 1))
    return {"app": app, "keys": keys, "campaigns": campaign, "marks": marks, "ids": ids}


async def test_the_feed_pages_the_callers_events_in_order(db: Database) -> None:
    s = await seeded(db)
    one = [s["ids"][i] for i in (0, 2, 3, 4)]
    async with client_for(s["app"], s["keys"][1]) as client:
        page = (await client.get(FEED, params={"after": s["marks"][1]})).json()
        assert [i["eventId"] for i in page["items"]] == one
        assert page["nextCursor"] == str(one[-1])
        assert page["items"][0] == {
            "eventId": one[0],
            "type": "delivery.sent",
            "timestamp": "2026-11-28T12:00:00.000Z",
            "data": {
                "campaignId": s["campaigns"][1],
                "deliveryId": 11,
                "recipient": "a@example.com",
            },
        }

        seen: list[int] = []
        cursor = s["marks"][1]
        for expected in (one[:2], one[2:], []):
            page = (await client.get(FEED, params={"after": cursor, "limit": 2})).json()
            assert [i["eventId"] for i in page["items"]] == expected
            seen += expected
            # On an empty page the cursor stays where it was: poll from it again (no
            # later event has been written: the last one looked through is ours).
            cursor_was, cursor = cursor, page["nextCursor"]
            assert cursor == (str(expected[-1]) if expected else cursor_was)
        assert seen == one

    async with client_for(s["app"], s["keys"][2]) as client:
        items, end = await everything(client, s["marks"][2])
        assert [i["eventId"] for i in items] == [s["ids"][1]]
        # The cursor ends past user 1's later events, which this feed looked through.
        assert end == str(s["ids"][-1])


async def test_an_empty_feed_gives_a_cursor_to_poll_from(db: Database) -> None:
    key = await new_key(db, 5)
    async with client_for(make_app(db), key) as client:
        assert (await client.get(FEED)).json() == {"items": [], "nextCursor": "0"}
        assert (await client.get(FEED, params={"after": "77"})).json() == {
            "items": [],
            "nextCursor": "77",
        }


async def test_the_feed_filters_by_type_and_campaign(db: Database) -> None:
    s = await seeded(db)
    ids, mark = s["ids"], s["marks"][1]

    async with client_for(s["app"], s["keys"][1]) as client:

        async def got(**params: Any) -> list[int]:
            response = await client.get(FEED, params={"after": mark, **params})
            assert response.status_code == 200, response.text
            return [i["eventId"] for i in response.json()["items"]]

        assert await got(type="delivery.sent") == [ids[0], ids[4]]
        assert await got(type="delivery.sent,delivery.failed") == [ids[0], ids[2], ids[4]]
        assert await got(type=["delivery.failed", "recipient.unsubscribed"]) == [ids[2], ids[3]]
        assert await got(campaignId=s["campaigns"][1]) == [ids[0], ids[2], ids[4]]
        assert await got(campaignId=s["campaigns"][1], type="delivery.failed") == [ids[2]]
        for someone_elses in (s["campaigns"][2], 999_999):
            response = await client.get(FEED, params={"campaignId": someone_elses})
            assert response.status_code == 404, response.text


async def test_bad_parameters_are_refused_by_name(db: Database) -> None:
    key = await new_key(db, 1)
    async with client_for(make_app(db), key) as client:
        for params, field in [
            ({"type": "delivery.nope"}, "type"),
            ({"type": "delivery.sent,"}, "type"),
            ({"after": "abc"}, "after"),
            ({"after": "-1"}, "after"),
            ({"after": "1.0"}, "after"),
            ({"limit": "0"}, "limit"),
            ({"limit": "1001"}, "limit"),
            ({"limit": "1.0"}, "limit"),
            ({"campaignId": "0"}, "campaignId"),
            ({"campaignId": "1.0"}, "campaignId"),
        ]:
            response = await client.get(FEED, params=params)
            assert response.status_code == 422, (params, response.text)
            assert [d["field"] for d in response.json()["detail"]] == [field], response.text
    async with client_for(make_app(db), None) as anonymous:
        assert (await anonymous.get(FEED)).status_code == 401


async def test_the_feed_is_in_the_openapi_document(db: Database) -> None:
    async with client_for(make_app(db), None) as client:
        document = (await client.get("/openapi.json")).json()
    operation = document["paths"][FEED]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"after", "limit", "type", "campaignId"}
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    page = document["components"]["schemas"][ok["$ref"].rsplit("/", 1)[1]]
    assert set(page["required"]) == {"items", "nextCursor"}
    assert page["properties"]["nextCursor"]["type"] == "string"
