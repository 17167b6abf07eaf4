"""Webhook delivery on each database, to real HTTP receivers on loopback."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection
from standardwebhooks import Webhook

from mailsched.domain.events import EventType
from mailsched.metrics import Metrics
from mailsched.store import webhooks as endpoints
from mailsched.store.db import Database
from mailsched.store.tables import webhook_endpoints, webhook_messages
from mailsched.webhooks.deliver import WebhookDeliverer
from mailsched.webhooks.upkeep import Upkeep
from tests.integration.webhooks.conftest import (
    add_endpoint,
    add_events,
    deliver_until,
    fan_out,
    now,
)
from tests.support.receiver import Answer, Receiver, Request

Make = Callable[..., WebhookDeliverer]


def verified(secret: str, request: Request) -> dict[str, object]:
    """The body, verified by the reference implementation (not by our code)."""
    body: dict[str, object] = Webhook(secret).verify(request.body, request.headers)
    return body


async def pending(db: Database) -> int:
    async def work(conn: AsyncConnection) -> int:
        query = select(func.count()).where(webhook_messages.c.due_at.is_not(None))
        return int((await conn.execute(query)).scalar_one())

    return await db.run(work)


async def attempts_of(db: Database, endpoint_id: int) -> list[endpoints.Attempt]:
    async def work(conn: AsyncConnection) -> list[endpoints.Attempt]:
        return await endpoints.attempts_page(conn, endpoint_id, None, 1000)

    return await db.run(work)


async def test_a_receiver_gets_every_event_signed(db: Database, deliverer_for: Make) -> None:
    async with Receiver() as receiver:
        endpoint_id, secret = await add_endpoint(db, 1, receiver.url)
        events = await add_events(db, 1, 10)
        await fan_out(db, events)
        deliverer = deliverer_for()
        made = await deliver_until(deliverer, lambda: len(receiver.requests) >= 10)
    assert made == 10
    by_id = {r.headers["webhook-id"]: r for r in receiver.requests}
    assert sorted(by_id) == sorted(str(e.id) for e in events)
    for event in events:
        request = by_id[str(event.id)]
        assert request.method == "POST"
        assert request.headers["content-type"] == "application/json"
        assert verified(secret, request) == json.loads(json.dumps(event.body()))
    assert await pending(db) == 0
    attempts = await attempts_of(db, endpoint_id)
    assert sorted(a.status_code or 0 for a in attempts) == [200] * 10


async def test_503_then_200_delivers_everything_under_the_same_ids(
    db: Database, deliverer_for: Make
) -> None:
    failures = 7

    async def flaky(_: Request) -> Answer:
        seen = len(receiver.requests)
        return Answer(503 if seen <= failures else 200)

    async with Receiver(flaky) as receiver:
        endpoint_id, secret = await add_endpoint(db, 1, receiver.url)
        events = await add_events(db, 1, 5)
        await fan_out(db, events)
        deliverer = deliverer_for()
        await deliver_until(deliverer, lambda: len(receiver.requests) >= failures + 5)
        await asyncio.sleep(0.2)  # a spurious extra retry would arrive by now
        assert await deliverer.deliver_once() == 0
    ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert len(ids) == failures + 5
    assert set(ids) == {str(e.id) for e in events}
    for request in receiver.requests:
        verified(secret, request)
    assert await pending(db) == 0
    statuses = Counter(a.status_code for a in await attempts_of(db, endpoint_id))
    assert statuses == {503: failures, 200: 5}


async def test_given_up_after_the_schedule(db: Database, deliverer_for: Make) -> None:
    async def broken(_: Request) -> Answer:
        return Answer(500)

    async with Receiver(broken) as receiver:
        endpoint_id, _ = await add_endpoint(db, 1, receiver.url)
        await fan_out(db, await add_events(db, 1, 1))
        deliverer = deliverer_for(retry_schedule=(0.01, 0.01))

        async def finished() -> bool:
            return await pending(db) == 0

        async with asyncio.timeout(20):
            while not await finished():
                await deliverer.deliver_once()
                await asyncio.sleep(0.02)
    assert len(receiver.requests) == 3
    attempts = await attempts_of(db, endpoint_id)
    assert [a.status_code for a in attempts] == [500, 500, 500]
    assert attempts[0].error is not None and "given up after 3 attempts" in attempts[0].error
    assert attempts[1].error is None
    registry = deliverer._metrics.registry
    assert registry.get_sample_value("mailsched_webhook_given_up_total") == 1


async def test_410_disables_the_endpoint_and_drops_its_messages(
    db: Database, deliverer_for: Make
) -> None:
    async def gone(_: Request) -> Answer:
        return Answer(410)

    async with Receiver(gone) as receiver:
        endpoint_id, _ = await add_endpoint(db, 1, receiver.url)
        await fan_out(db, await add_events(db, 1, 9))
        deliverer = deliverer_for()
        first = await deliverer.deliver_once()
        assert first >= 1
        assert await deliverer.deliver_once() == 0
        assert await pending(db) == 0
        await fan_out(db, await add_events(db, 1, 3))
        assert await deliverer.deliver_once() == 0
    assert len(receiver.requests) == first

    async def work(conn: AsyncConnection) -> tuple[object, object]:
        query = select(webhook_endpoints.c.disabled_at, webhook_endpoints.c.disabled_reason)
        row = (await conn.execute(query.where(webhook_endpoints.c.id == endpoint_id))).one()
        return row.disabled_at, row.disabled_reason

    disabled_at, reason = await db.run(work)
    assert disabled_at is not None
    assert reason == "the endpoint answered 410 Gone"


async def test_redirects_are_not_followed(db: Database, deliverer_for: Make) -> None:
    async def redirect(request: Request) -> Answer:
        return Answer(307, {"Location": "/elsewhere"})

    async with Receiver(redirect) as receiver:
        endpoint_id, _ = await add_endpoint(db, 1, receiver.url)
        await fan_out(db, await add_events(db, 1, 1))
        deliverer = deliverer_for(retry_schedule=(3600.0,))
        assert await deliverer.deliver_once() == 1
    assert [r.path for r in receiver.requests] == ["/hook"]
    assert [a.status_code for a in await attempts_of(db, endpoint_id)] == [307]
    assert await pending(db) == 1  # a failure: it waits for its retry


async def test_a_hanging_receiver_does_not_hold_up_another(
    db: Database, deliverer_for: Make
) -> None:
    release = asyncio.Event()

    async def hang(_: Request) -> Answer:
        await release.wait()
        return Answer(200)

    async with Receiver(hang) as hanging, Receiver() as healthy:
        await add_endpoint(db, 1, hanging.url)
        await add_endpoint(db, 1, healthy.url)
        # The hanging endpoint's events come first, and outnumber every slot.
        await fan_out(db, await add_events(db, 1, 20))
        deliverer = deliverer_for(timeout=60.0, concurrency=8)
        stop = asyncio.Event()
        running = asyncio.create_task(deliverer.run(stop))
        try:
            # Far less than the 60 s the hanging requests may take.
            await healthy.wait_for(lambda got: len(got) >= 20, seconds=15)
            assert not release.is_set()
            assert 1 <= len(hanging.requests) <= 4  # its own slots, no more
        finally:
            stop.set()
            release.set()
            await asyncio.wait_for(running, 30)
    assert len({r.headers["webhook-id"] for r in healthy.requests}) == 20


async def test_a_batch_endpoint_gets_at_most_max_batch_per_request(
    db: Database, deliverer_for: Make
) -> None:
    async with Receiver() as receiver:
        endpoint_id, secret = await add_endpoint(db, 1, receiver.url, batch=True)
        events = await add_events(db, 1, 1200)
        await fan_out(db, events)
        deliverer = deliverer_for()
        made = await deliver_until(deliverer, lambda: _event_ids(receiver) >= len(events))
    assert made == len(receiver.requests) == 3
    seen: list[int] = []
    for request in receiver.requests:
        body = verified(secret, request)
        assert body["type"] == "batch"
        items = body["data"]["events"]  # type: ignore[index]
        assert 1 <= len(items) <= 500
        assert request.headers["webhook-id"].startswith("batch_")
        seen.extend(item["eventId"] for item in items)
    assert sorted(seen) == [e.id for e in events]
    stored = {e.id: json.loads(json.dumps(e.item())) for e in events}
    for request in receiver.requests:
        for item in json.loads(request.body)["data"]["events"]:
            assert item == stored[item["eventId"]]
    assert {a.event_count for a in await attempts_of(db, endpoint_id)} <= {200, 500}


def _event_ids(receiver: Receiver) -> int:
    return sum(len(json.loads(r.body)["data"]["events"]) for r in receiver.requests if r.body)


async def test_a_retried_batch_keeps_its_id_and_members(db: Database, deliverer_for: Make) -> None:
    async def fail_first(_: Request) -> Answer:
        return Answer(503 if len(receiver.requests) == 1 else 200)

    async with Receiver(fail_first) as receiver:
        _, secret = await add_endpoint(db, 1, receiver.url, batch=True)
        await fan_out(db, await add_events(db, 1, 30))
        deliverer = deliverer_for()
        assert await deliverer.deliver_once() == 1
        # Events fanned out after the first attempt do not join its batch.
        await fan_out(db, await add_events(db, 1, 5))
        await deliver_until(deliverer, lambda: len(receiver.requests) >= 3)
    first, *rest = receiver.requests
    [retry] = [r for r in rest if r.headers["webhook-id"] == first.headers["webhook-id"]]
    [later] = [r for r in rest if r is not retry]
    assert retry.body == first.body
    assert len(json.loads(first.body)["data"]["events"]) == 30
    assert len(json.loads(later.body)["data"]["events"]) == 5
    for request in receiver.requests:
        verified(secret, request)


async def test_fan_out_is_idempotent(db: Database, deliverer_for: Make) -> None:
    async with Receiver() as receiver:
        await add_endpoint(db, 1, receiver.url)
        events = await add_events(db, 1, 4)
        await fan_out(db, events)
        await fan_out(db, events + events[:2])
        assert await pending(db) == 4
        await deliver_until(deliverer_for(), lambda: len(receiver.requests) >= 4)
        # Redelivered (from Kafka, say) after delivery: still nothing more.
        await fan_out(db, events)
        assert await pending(db) == 0
        await asyncio.sleep(0.1)
        assert await deliverer_for().deliver_once() == 0
    assert sorted(r.headers["webhook-id"] for r in receiver.requests) == sorted(
        str(e.id) for e in events
    )


async def test_fan_out_follows_users_and_types(db: Database, deliverer_for: Make) -> None:
    async with Receiver() as receiver:
        await add_endpoint(db, 1, receiver.url, types=[EventType.CAMPAIGN_STARTED.value])
        await fan_out(db, await add_events(db, 1, 3, EventType.DELIVERY_SENT))
        await fan_out(db, await add_events(db, 2, 3, EventType.CAMPAIGN_STARTED))
        started = await add_events(db, 1, 1, EventType.CAMPAIGN_STARTED)
        await fan_out(db, started)
        assert await pending(db) == 1
        await deliver_until(deliverer_for(), lambda: len(receiver.requests) >= 1)
    assert [r.headers["webhook-id"] for r in receiver.requests] == [str(started[0].id)]


async def test_a_private_address_is_refused_at_send_time(db: Database, deliverer_for: Make) -> None:
    async with Receiver() as receiver:
        endpoint_id, _ = await add_endpoint(db, 1, receiver.url)
        await fan_out(db, await add_events(db, 1, 1))
        deliverer = deliverer_for(allow_private_urls=False, retry_schedule=(3600.0,))
        assert await deliverer.deliver_once() == 1
    assert receiver.requests == []
    [attempt] = await attempts_of(db, endpoint_id)
    assert attempt.status_code is None
    assert attempt.error is not None and "refused" in attempt.error
    assert "loopback" in attempt.error


async def test_deleted_endpoints_get_nothing(db: Database, deliverer_for: Make) -> None:
    async with Receiver() as receiver:
        endpoint_id, _ = await add_endpoint(db, 1, receiver.url)
        await fan_out(db, await add_events(db, 1, 3))

        async def delete(conn: AsyncConnection) -> bool:
            return await endpoints.delete_endpoint(conn, 1, endpoint_id, now())

        assert await db.run(delete)
        assert await deliverer_for().deliver_once() == 0
        assert await pending(db) == 0
    assert receiver.requests == []


async def test_the_backlog_is_measured(db: Database) -> None:
    endpoint_id, _ = await add_endpoint(db, 1, "http://127.0.0.1:9/")
    await fan_out(db, await add_events(db, 1, 3))
    metrics = Metrics()
    await Upkeep(db, now, metrics).sample(now())
    assert metrics.webhook_backlog.labels(str(endpoint_id))._value.get() == 3
    assert metrics.webhook_oldest_seconds._value.get() >= 0


async def test_a_receiver_that_is_down_is_a_failed_attempt(
    db: Database, deliverer_for: Make
) -> None:
    async with Receiver() as receiver:
        url = receiver.url  # a port nothing listens on once the receiver is gone
    endpoint_id, _ = await add_endpoint(db, 1, url)
    await fan_out(db, await add_events(db, 1, 1))
    deliverer = deliverer_for(retry_schedule=(3600.0,))
    assert await deliverer.deliver_once() == 1
    [attempt] = await attempts_of(db, endpoint_id)
    assert attempt.status_code is None
    assert attempt.error is not None and "Connect" in attempt.error
    assert await pending(db) == 1


async def test_a_receiver_that_does_not_answer_times_out(db: Database, deliverer_for: Make) -> None:
    release = asyncio.Event()

    async def hang(_: Request) -> Answer:
        await release.wait()
        return Answer(200)

    async with Receiver(hang) as receiver:
        endpoint_id, _ = await add_endpoint(db, 1, receiver.url)
        await fan_out(db, await add_events(db, 1, 1))
        deliverer = deliverer_for(timeout=0.3, retry_schedule=(3600.0,))
        assert await deliverer.deliver_once() == 1
        release.set()
    [attempt] = await attempts_of(db, endpoint_id)
    assert (attempt.status_code, attempt.error) == (None, "timed out")
    assert await pending(db) == 1
