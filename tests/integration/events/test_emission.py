"""Every change writes its event, in its own transaction: whole campaigns on each stack,
and the store's rarer paths (lease takeover, a taken-over outcome) on each database."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.bootstrap import Components
from mailsched.config import Settings
from mailsched.domain.events import Event
from mailsched.domain.model import CampaignStatus, DeliveryStatus, SendOutcome
from mailsched.errors import LeaseLost
from mailsched.producer.schemas import CampaignRequest
from mailsched.store import dead_letters, dispatch, events, sending, transitions
from mailsched.store.campaigns import (
    NewCampaign,
    NewDelivery,
    complete_stalled,
    insert_campaign,
)
from mailsched.store.db import Database
from mailsched.store.tables import deliveries
from tests.conftest import Stack
from tests.support.fault_sink import FaultSink
from tests.support.running import completed, create, running, wait_until

USER = 7
NOW = datetime(2026, 12, 1, 9, tzinfo=UTC)
d = deliveries.c


@pytest.fixture
def sink() -> Iterator[FaultSink]:
    server = FaultSink(seed=1).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def settings(stack: Stack, sink: FaultSink, monkeypatch: pytest.MonkeyPatch) -> Settings:
    env = stack.env() | {
        "MAILSCHED_SMTP_URL": sink.url,
        "MAILSCHED_DISPATCH_INTERVAL_SECONDS": "0.05",
        "MAILSCHED_DISPATCH_LOOKAHEAD_SECONDS": "0.2",
        "MAILSCHED_HOLD_SECONDS": "1.0",
        "MAILSCHED_RETRY_BASE_SECONDS": "0.2",
        "MAILSCHED_RETRY_CAP_SECONDS": "0.3",
        "MAILSCHED_MAX_ATTEMPTS": "3",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings.load()


def request(recipients: list[str], delay: int = 0) -> CampaignRequest:
    return CampaignRequest.model_validate(
        {
            "userId": USER,
            "subject": "Events",
            "body": "Hello.\n",
            "startTime": "2026-01-25T12:00:00Z",
            "delaySeconds": delay,
            "hourlyLimit": 1000,
            "recipients": recipients,
        }
    )


async def feed(app: Components, campaign_id: int | None = None) -> list[Event]:
    async def work(conn: AsyncConnection) -> list[Event]:
        return (await events.page(conn, USER, 0, 1000, campaign_id=campaign_id))[0]

    return await app.db.run(work)


async def statuses(app: Components, campaign_id: int) -> dict[int, str]:
    async def work(conn: AsyncConnection) -> dict[int, str]:
        rows = await conn.execute(select(d.id, d.status).where(d.campaign_id == campaign_id))
        return {r.id: r.status for r in rows}

    return await app.db.run(work)


async def test_a_campaign_tells_its_whole_story(settings: Settings, sink: FaultSink) -> None:
    sink.permfail = {"bad@example.com"}
    recipients = ["a@example.com", "bad@example.com", "c@example.com"]
    async with running(settings) as app:
        created = await create(app, request(recipients))
        await wait_until(lambda: completed(app, created.campaign_id), within=30)
        story = await feed(app, created.campaign_id)
        rows = await statuses(app, created.campaign_id)
        written = app.metrics.registry.get_sample_value(
            "mailsched_events_total", {"type": "delivery.sent"}
        )

    assert written == 2
    kinds = [e.type for e in story]
    assert kinds[0] == "campaign.scheduled"
    assert kinds[1] == "campaign.started"
    assert kinds[-1] == "campaign.completed"
    assert Counter(kinds[2:-1]) == Counter({"delivery.sent": 2, "delivery.failed": 1})
    assert [e.id for e in story] == sorted(e.id for e in story)
    by_delivery = {e.data["deliveryId"]: e for e in story if e.type.startswith("delivery.")}
    # No change without its event, no event without its change.
    assert {i: e.data["status"] for i, e in by_delivery.items()} == rows
    sent = next(e for e in story if e.type == "delivery.sent")
    assert sent.data["campaignId"] == created.campaign_id
    assert sent.data["recipient"] in {"a@example.com", "c@example.com"}
    assert sent.data["attempt"] == 1
    assert sent.data["smtpCode"] == 250
    assert sent.data["smtpReply"]
    failed = next(e for e in story if e.type == "delivery.failed")
    assert failed.data["recipient"] == "bad@example.com"
    assert failed.data["smtpCode"] == 550
    assert "550" in failed.data["reason"]
    assert story[-1].data == {
        "campaignId": created.campaign_id,
        "status": "COMPLETED",
        "previousStatus": "RUNNING",
    }


async def test_a_retry_is_deferred_with_when_and_why(settings: Settings, sink: FaultSink) -> None:
    sink.tempfail_rate = 1.0
    async with running(settings) as app:
        created = await create(app, request(["a@example.com"]))

        async def deferred() -> bool:
            return any(e.type == "delivery.deferred" for e in await feed(app))

        await wait_until(deferred, within=30)
        sink.tempfail_rate = 0.0
        await wait_until(lambda: completed(app, created.campaign_id), within=30)
        story = await feed(app, created.campaign_id)

    kinds = [e.type for e in story]
    first = kinds.index("delivery.deferred")
    assert kinds[first:].count("delivery.sent") == 1
    defer = story[first]
    assert defer.data["attempt"] == 1
    assert defer.data["smtpCode"] == 451
    assert "451" in defer.data["reason"]
    retry_at = datetime.fromisoformat(defer.data["retryAt"])
    assert retry_at > defer.occurred_at
    sent = next(e for e in story if e.type == "delivery.sent")
    # 451 is a server's "slow down", which does not use up an attempt.
    assert sent.data["attempt"] == 1
    assert sent.id > defer.id


async def test_pause_resume_and_cancel_are_events(settings: Settings, sink: FaultSink) -> None:
    recipients = [f"u{i}@example.com" for i in range(6)]
    async with running(settings) as app:
        created = await create(app, request(recipients, delay=30))
        cid = created.campaign_id

        async def first_sent() -> bool:
            return any(e.type == "delivery.sent" for e in await feed(app, cid))

        await wait_until(first_sent, within=30)
        await app.campaigns().pause(USER, cid)
        await app.campaigns().resume(USER, cid)
        await app.campaigns().cancel(USER, cid)
        story = await feed(app, cid)
        rows = await statuses(app, cid)

    kinds = [e.type for e in story]
    assert kinds[:3] == ["campaign.scheduled", "campaign.started", "delivery.sent"]
    assert kinds[3:6] == ["campaign.paused", "campaign.resumed", "campaign.cancelled"]
    assert Counter(kinds[6:]) == Counter({"delivery.cancelled": 5})
    cancelled = {e.data["deliveryId"] for e in story if e.type == "delivery.cancelled"}
    assert cancelled == {i for i, s in rows.items() if s == DeliveryStatus.CANCELLED}
    one = next(e for e in story if e.type == "delivery.cancelled")
    assert one.data == {
        "campaignId": cid,
        "deliveryId": one.data["deliveryId"],
        "recipient": one.data["recipient"],
        "attempt": 0,
        "status": "CANCELLED",
        "reason": "campaign cancelled",
    }
    assert one.data["recipient"] in recipients
    assert story[3].data["previousStatus"] == "RUNNING"
    assert story[4].data["status"] == "RUNNING"


# --- the store's rarer paths, on each database --------------------------------------


async def seed(db: Database, count: int) -> tuple[int, list[int]]:
    new = NewCampaign(USER, "s", "b", NOW, 0, 1000)
    recipients = [NewDelivery(f"u{i}@example.com", NOW) for i in range(count)]

    async def work(conn: AsyncConnection) -> tuple[int, list[int]]:
        cid = await insert_campaign(conn, new, recipients, NOW)
        ids = [r.id for r in await conn.execute(select(d.id).order_by(d.id))]
        await conn.execute(update(deliveries).values(status=DeliveryStatus.QUEUED))
        await sending.take_slots(conn, {cid: (1, ids)}, NOW, "me", NOW + timedelta(minutes=1))
        return cid, ids

    return await db.run(work)


async def all_events(db: Database) -> list[Event]:
    async def work(conn: AsyncConnection) -> list[Event]:
        return await events.after(conn, 0, 1000)

    return await db.run(work)


async def test_a_lease_takeover_is_deferred_and_a_possible_duplicate(db: Database) -> None:
    _, ids = await seed(db, 2)

    async def reap(conn: AsyncConnection) -> int:
        return await dispatch.expire_leases(conn, NOW + timedelta(minutes=2), 100)

    assert await db.run(reap) == 2
    later = [e for e in await all_events(db) if e.type.startswith("delivery.")]
    kinds = Counter(e.type for e in later)
    assert kinds == Counter({"delivery.deferred": 2, "delivery.possible_duplicate": 2})
    doubt = [e.data for e in later if e.type == "delivery.possible_duplicate"]
    assert sorted((x["deliveryId"], x["sendSlot"]) for x in doubt) == [(ids[0], 1), (ids[1], 2)]
    assert {x["outcome"] for x in doubt} == {SendOutcome.ORPHANED.value}
    assert all("lease expired" in e.data["reason"] for e in later)


async def test_an_outcome_whose_lease_was_taken_over_writes_no_event(db: Database) -> None:
    """Optimistic (the worker's facts), a taken-over row rolls the write back with
    LeaseLost; careful, the rows still held are written alone, with their events."""
    cid, ids = await seed(db, 2)

    async def take_over(conn: AsyncConnection) -> None:
        await conn.execute(update(deliveries).where(d.id == ids[1]).values(lease_owner="other"))

    await db.run(take_over)
    outcomes = sending.Outcomes(
        sent=[(ids[0], NOW), (ids[1], NOW)],
        finished=[(1, NOW, SendOutcome.SENT), (2, NOW, SendOutcome.SENT)],
        replies={ids[0]: (250, "2.0.0 Ok: queued as A"), ids[1]: (250, "queued as B")},
        facts={
            ids[0]: transitions.Facts(cid, USER, "u0@example.com", 1),
            ids[1]: transitions.Facts(cid, USER, "u1@example.com", 1),
        },
    )
    users = {cid: USER}

    async def optimistic(conn: AsyncConnection) -> int:
        return await sending.record(conn, "me", {cid: outcomes}, NOW, users)

    with pytest.raises(LeaseLost):
        await db.run(optimistic)
    assert [e for e in await all_events(db) if e.type == "delivery.sent"] == []

    async def careful(conn: AsyncConnection) -> int:
        return await sending.record(conn, "me", {cid: outcomes}, NOW, users, careful=True)

    assert await db.run(careful) == 1
    sent = [e.data for e in await all_events(db) if e.type == "delivery.sent"]
    assert sent == [
        {
            "campaignId": cid,
            "deliveryId": ids[0],
            "recipient": "u0@example.com",
            "attempt": 1,
            "status": "SENT",
            "smtpCode": 250,
            "smtpReply": "2.0.0 Ok: queued as A",
        }
    ]

    async def statuses(conn: AsyncConnection) -> list[str]:
        rows = await conn.execute(select(d.status).where(d.id.in_(ids)).order_by(d.id))
        return [r.status for r in rows]

    assert await db.run(statuses) == ["SENT", "SENDING"]


async def test_the_optimistic_write_records_what_the_careful_one_would(db: Database) -> None:
    cid, ids = await seed(db, 2)
    outcomes = sending.Outcomes(
        sent=[(ids[0], NOW)],
        failed=[(ids[1], "PermanentSendError: 550 no such user")],
        finished=[(1, NOW, SendOutcome.SENT), (2, NOW, SendOutcome.FAILED)],
        replies={ids[1]: (550, "5.1.1 no such user")},
        facts={
            ids[0]: transitions.Facts(cid, USER, "u0@example.com", 1),
            ids[1]: transitions.Facts(cid, USER, "u1@example.com", 1),
        },
    )

    async def write(conn: AsyncConnection) -> int:
        return await sending.record(conn, "me", {cid: outcomes}, NOW, {cid: USER})

    assert await db.run(write) == 0
    said = [
        (e.type, e.data.get("deliveryId"), e.data.get("smtpCode")) for e in await all_events(db)
    ]
    assert said[-2:] == [("delivery.sent", ids[0], None), ("delivery.failed", ids[1], 550)]

    async def dead(conn: AsyncConnection) -> list[int]:
        return [r.delivery_id for r in await dead_letters.oldest(conn, 10)]

    assert await db.run(dead) == [ids[1]]


async def test_a_failed_unit_of_work_leaves_no_event(db: Database) -> None:
    """The events are part of the transaction: a rollback takes them too."""
    cid, ids = await seed(db, 1)
    outcomes = sending.Outcomes(sent=[(ids[0], NOW)], finished=[(1, NOW, SendOutcome.SENT)])
    before = await all_events(db)

    class Boom(Exception):
        pass

    async def write(conn: AsyncConnection) -> Any:
        await sending.record(conn, "me", {cid: outcomes}, NOW, {cid: USER})
        raise Boom

    with pytest.raises(Boom):
        await db.run(write)
    assert await all_events(db) == before

    async def write_again(conn: AsyncConnection) -> int:
        return await sending.record(conn, "me", {cid: outcomes}, NOW, {cid: USER})

    assert await db.run(write_again) == 0
    assert [e.type for e in await all_events(db)][len(before) :] == ["delivery.sent"]


@pytest.mark.parametrize("database_url", ["mariadb"], indirect=True)
async def test_two_transactions_completing_one_campaign_write_one_event(db: Database) -> None:
    """The second waits for the first's lock, then finds the campaign moved: it writes
    neither the change nor an event (before, it wrote a second ``campaign.completed``)."""
    cid, _ = await seed(db, 1)
    change = transitions.CampaignChange(cid, USER, CampaignStatus.SCHEDULED)
    first_moved = asyncio.Event()
    release = asyncio.Event()

    async def first(conn: AsyncConnection) -> list[int]:
        moved = await transitions.move_campaigns(conn, [change], CampaignStatus.COMPLETED, NOW)
        first_moved.set()
        await release.wait()
        return moved

    async def second(conn: AsyncConnection) -> list[int]:
        return await transitions.move_campaigns(conn, [change], CampaignStatus.COMPLETED, NOW)

    one = asyncio.create_task(db.run(first))
    await first_moved.wait()
    two = asyncio.create_task(db.run(second))
    await asyncio.sleep(0.2)  # the second is now waiting for the campaign's lock
    release.set()
    assert (await one, await two) == ([cid], [])
    done = [e for e in await all_events(db) if e.type == "campaign.completed"]
    assert len(done) == 1


async def test_a_campaign_with_nothing_to_send_is_completed_by_the_reaper(db: Database) -> None:
    """Every recipient suppressed at creation: no send will ever complete it, so the
    reaper's sweep does (before, it stayed SCHEDULED for good)."""
    live = await seed(db, 1)  # a campaign with a delivery still to send stays as it is
    new = NewCampaign(USER, "s", "b", NOW, 0, 1000)
    gone = DeliveryStatus.SUPPRESSED
    recipients = [NewDelivery(f"u{i}@example.com", NOW, status=gone) for i in range(2)]
    cid = await db.run(lambda conn: insert_campaign(conn, new, recipients, NOW))

    async def sweep(conn: AsyncConnection) -> int:
        return await complete_stalled(conn, NOW, 100)

    assert await db.run(sweep) == 1
    assert await db.run(sweep) == 0
    kinds = [(e.type, e.campaign_id) for e in await all_events(db)]
    assert kinds.count(("delivery.suppressed", cid)) == 2
    assert ("campaign.completed", cid) in kinds
    assert ("campaign.completed", live[0]) not in kinds
