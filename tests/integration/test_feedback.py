"""What bounces and complaints do, on each database: statuses, suppressions, the
soft-bounce streak, events, and the circuit breaker."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.config import FeedbackConfig
from mailsched.domain.model import CampaignStatus, DeliveryStatus
from mailsched.inbound.feedback import Feedback, Outcome, Received
from mailsched.inbound.reports import Kind, Report
from mailsched.producer.campaigns import Campaigns
from mailsched.producer.suppressions import SuppressionRequest, Suppressions
from mailsched.store import events, suppressions
from mailsched.store.db import Database
from mailsched.store.tables import bounces
from tests.integration.test_suppressions import (
    NOW,
    campaign_status,
    on_mariadb_only,
    seed,
    statuses,
)

S = DeliveryStatus
CONFIG = FeedbackConfig(
    soft_bounce_limit=3,
    bounce_suppression=None,
    breaker_min_sends=20,
    breaker_bounce_rate=0.05,
    breaker_complaint_rate=0.003,
)


def _feedback(db: Database, **changes: Any) -> Feedback:
    config = dataclasses.replace(CONFIG, **changes)
    return Feedback(db, config, lambda: NOW)


def _report(kind: Kind, status: str | None = None, diagnostic: str | None = None) -> Report:
    return Report(kind, None, status, diagnostic, None, "dsn")


HARD = _report(Kind.HARD, "5.1.1", "smtp; 550 5.1.1 no such user")
SOFT = _report(Kind.SOFT, "4.2.2", "smtp; 452 4.2.2 mailbox full")
COMPLAINT = _report(Kind.COMPLAINT, None, "abuse")


async def _events(db: Database, user_id: int) -> list[tuple[str, dict[str, Any]]]:
    async def work(conn: AsyncConnection) -> list[tuple[str, dict[str, Any]]]:
        found, _ = await events.page(conn, user_id, 0, 1000)
        return [(e.type, dict(e.data)) for e in found]

    return await db.run(work)


async def _suppression(db: Database, user_id: int) -> list[suppressions.Suppression]:
    async def work(conn: AsyncConnection) -> list[suppressions.Suppression]:
        return await suppressions.page(conn, user_id, None, 100, NOW)

    return await db.run(work)


async def test_a_hard_bounce_bounces_the_delivery_and_suppresses_the_address(db: Database) -> None:
    first, (sent, other) = await seed(
        db, 1, [("Ann@Example.com", S.SENT), ("bob@example.com", S.SENT)]
    )
    later, (pending,) = await seed(db, 1, [("ann@example.com", S.SCHEDULED)])
    outcomes = await _feedback(db).apply([Received(sent, HARD)], "smtp")
    assert outcomes == [Outcome.BOUNCED]
    assert await statuses(db, [sent, other, pending]) == [S.BOUNCED, S.SENT, S.SUPPRESSED]
    listed = await Campaigns(db, timedelta(hours=1), lambda: NOW).deliveries(1, first, None, 0, 10)
    assert [(i.status, i.last_error) for i in listed.items] == [
        (S.BOUNCED, "bounce: 5.1.1 smtp; 550 5.1.1 no such user"),
        (S.SENT, None),
    ]
    (entry,) = await _suppression(db, 1)
    assert (entry.address, entry.reason, entry.expires_at) == ("ann@example.com", "bounce", None)
    assert entry.detail == "5.1.1 smtp; 550 5.1.1 no such user"
    assert await campaign_status(db, later) == CampaignStatus.COMPLETED
    said = await _events(db, 1)
    bounced = [data for kind, data in said if kind == "delivery.bounced"]
    assert bounced == [
        {
            "campaignId": bounced[0]["campaignId"],
            "deliveryId": sent,
            "recipient": "Ann@Example.com",
            "attempt": 0,
            "status": "BOUNCED",
            "kind": "hard",
            "source": "smtp",
            "enhancedStatus": "5.1.1",
            "diagnostic": "smtp; 550 5.1.1 no such user",
        }
    ]
    assert (
        "recipient.suppressed",
        {"recipient": "ann@example.com", "reason": "bounce", "detail": entry.detail},
    ) in said
    # The same report again changes nothing more, and says so.
    assert await _feedback(db).apply([Received(sent, HARD)], "smtp") == [Outcome.RECORDED]
    assert [k for k, _ in await _events(db, 1)].count("delivery.bounced") == 1


async def test_a_complaint_marks_the_delivery_and_suppresses_the_address(db: Database) -> None:
    _, (sent, bounced) = await seed(
        db, 1, [("ann@example.com", S.SENT), ("bob@example.com", S.BOUNCED)]
    )
    feedback = _feedback(db)
    outcomes = await feedback.apply(
        [Received(sent, COMPLAINT), Received(bounced, COMPLAINT)], "ses"
    )
    assert outcomes == [Outcome.COMPLAINED, Outcome.COMPLAINED]
    assert await statuses(db, [sent, bounced]) == [S.COMPLAINED, S.COMPLAINED]
    assert {(e.address, e.reason) for e in await _suppression(db, 1)} == {
        ("ann@example.com", "complaint"),
        ("bob@example.com", "complaint"),
    }
    complained = [d for k, d in await _events(db, 1) if k == "delivery.complained"]
    assert [d["source"] for d in complained] == ["ses", "ses"]


async def test_soft_bounces_suppress_at_the_limit_counting_each_delivery_once(db: Database) -> None:
    rows = [("ann@example.com", S.SENT)] * 3 + [("bob@example.com", S.SENT)]
    _, (first, second, third, bob) = await seed(db, 1, rows)
    feedback = _feedback(db)
    assert await feedback.apply([Received(first, SOFT), Received(first, SOFT)], "smtp") == [
        Outcome.SOFT,
        Outcome.SOFT,
    ]
    await feedback.apply([Received(second, SOFT), Received(bob, SOFT)], "smtp")
    # A server's later "delayed" notice about the first delivery: still two deliveries.
    await feedback.apply([Received(first, SOFT)], "smtp")
    assert await _suppression(db, 1) == []
    await feedback.apply([Received(third, SOFT)], "smtp")
    (entry,) = await _suppression(db, 1)
    assert (entry.address, entry.reason) == ("ann@example.com", "bounce")
    assert entry.detail is not None and entry.detail.startswith("3 soft bounces in a row")
    # Soft bounces leave the deliveries SENT, and each says so in an event.
    assert await statuses(db, [first, second, third]) == [S.SENT] * 3
    soft = [d for k, d in await _events(db, 1) if k == "delivery.bounced"]
    assert len(soft) == 6 and {d["kind"] for d in soft} == {"soft"}
    assert {d["status"] for d in soft} == {"SENT"}


async def test_a_hard_bounce_ends_the_soft_streak(db: Database) -> None:
    rows = [("ann@example.com", S.SENT)] * 4
    _, (a, b, c, d) = await seed(db, 1, rows)
    feedback = _feedback(db)
    await feedback.apply([Received(a, SOFT), Received(b, SOFT)], "smtp")
    await feedback.apply([Received(c, HARD)], "smtp")

    async def work(conn: AsyncConnection) -> None:
        await suppressions.remove(conn, 1, "ann@example.com")

    await db.run(work)
    await feedback.apply([Received(d, SOFT)], "smtp")
    assert await _suppression(db, 1) == []


async def test_an_unknown_delivery_changes_nothing(db: Database) -> None:
    assert await _feedback(db).apply([Received(987654, HARD)], "smtp") == [Outcome.UNKNOWN]
    assert await _events(db, 1) == []


async def test_a_bounce_suppression_expires_when_configured(db: Database) -> None:
    _, (sent,) = await seed(db, 1, [("ann@example.com", S.SENT)])
    await _feedback(db, bounce_suppression=timedelta(days=30)).apply([Received(sent, HARD)], "smtp")
    (entry,) = await _suppression(db, 1)
    assert entry.expires_at == NOW + timedelta(days=30)

    async def blocked(at: Any) -> set[str]:
        async def work(conn: AsyncConnection) -> set[str]:
            return await suppressions.suppressed(conn, 1, ["ann@example.com"], at)

        return await db.run(work)

    assert await blocked(NOW + timedelta(days=29)) == {"ann@example.com"}
    assert await blocked(NOW + timedelta(days=30)) == set()


@pytest.mark.parametrize(
    ("report", "bad", "reason"),
    [
        (HARD, 2, "hard bounces at 10.0% of 20 sends"),
        (COMPLAINT, 1, "complaints at 5.00% of 20 sends"),
    ],
)
async def test_the_breaker_pauses_a_campaign_past_its_rates(
    db: Database, report: Report, bad: int, reason: str
) -> None:
    rows = [(f"r{i}@example.com", S.SENT) for i in range(20)] + [("late@example.com", S.SCHEDULED)]
    campaign_id, ids = await seed(db, 1, rows)
    feedback = _feedback(db)
    if report is HARD:
        # One bounce is 5%, not over the limit: the campaign goes on.
        await feedback.apply([Received(ids[0], HARD)], "smtp")
        assert await campaign_status(db, campaign_id) == CampaignStatus.RUNNING
    await feedback.apply([Received(i, report) for i in ids[report is HARD : bad]], "smtp")
    assert await campaign_status(db, campaign_id) == CampaignStatus.PAUSED
    assert await statuses(db, [ids[-1]]) == [S.PAUSED]
    paused = [d for k, d in await _events(db, 1) if k == "campaign.paused"]
    assert len(paused) == 1 and paused[0]["reason"].startswith(reason)

    campaigns_ = Campaigns(db, timedelta(hours=1), lambda: NOW)
    view = await campaigns_.get(1, campaign_id)
    assert view.pause_reason is not None and view.pause_reason.startswith(reason)
    # A person decides: resumed, it says no more why it paused, and the breaker
    # weighs only what is sent from now on: the next bounce does not trip it again.
    await campaigns_.resume(1, campaign_id)
    assert (await campaigns_.get(1, campaign_id)).pause_reason is None
    await feedback.apply([Received(ids[bad], report)], "smtp")
    assert await campaign_status(db, campaign_id) != CampaignStatus.PAUSED


async def test_the_breaker_waits_for_the_minimum_and_spares_a_finished_campaign(
    db: Database,
) -> None:
    few, ids = await seed(db, 1, [(f"r{i}@example.com", S.SENT) for i in range(10)])
    done, done_ids = await seed(
        db, 1, [(f"d{i}@example.com", S.SENT) for i in range(20)], CampaignStatus.COMPLETED
    )
    feedback = _feedback(db)
    await feedback.apply([Received(i, HARD) for i in ids[:5]], "smtp")
    await feedback.apply([Received(i, HARD) for i in done_ids[:5]], "smtp")
    assert await campaign_status(db, few) == CampaignStatus.RUNNING
    assert await campaign_status(db, done) == CampaignStatus.COMPLETED


async def test_every_report_is_kept(db: Database) -> None:
    _, (sent,) = await seed(db, 1, [("ann@example.com", S.SENT)])
    await _feedback(db).apply([Received(sent, SOFT), Received(sent, HARD)], "mailgun")

    async def work(conn: AsyncConnection) -> list[tuple[str, str | None, str]]:
        rows = await conn.execute(
            select(bounces.c.kind, bounces.c.status, bounces.c.source).order_by(bounces.c.id)
        )
        return [(r.kind, r.status, r.source) for r in rows]

    assert await db.run(work) == [("soft", "4.2.2", "mailgun"), ("hard", "5.1.1", "mailgun")]


@on_mariadb_only
async def test_soft_bounces_for_one_address_at_once_all_count(db: Database) -> None:
    # Fails if the streak's first row is inserted without skipping a duplicate: under
    # READ COMMITTED two transactions both find no row, and one insert fails.
    feedback = _feedback(db, soft_bounce_limit=100)
    for round_ in range(5):
        rows = [(f"same{round_}@example.com", S.SENT)] * 8
        _, ids = await seed(db, 1, rows)
        outcomes = await asyncio.gather(*(feedback.apply([Received(i, SOFT)], "smtp") for i in ids))
        assert outcomes == [[Outcome.SOFT]] * 8

        async def work(conn: AsyncConnection, address: str = f"same{round_}@example.com") -> int:
            query = select(func.count()).where(bounces.c.recipient == address)
            return int((await conn.execute(query)).scalar_one())

        assert await db.run(work) == 8


async def test_an_expiring_suppression_is_extended_made_permanent_and_listed_while_in_force(
    db: Database,
) -> None:
    rows = [("ann@example.com", S.SENT)] * 2 + [("bob@example.com", S.SENT)]
    _, (first, second, bob) = await seed(db, 1, rows)
    month = timedelta(days=30)
    await _feedback(db, bounce_suppression=month).apply([Received(first, HARD)], "smtp")
    later = Feedback(
        db, dataclasses.replace(CONFIG, bounce_suppression=month), lambda: NOW + month / 2
    )
    # Bounced again half a month later: it lasts from that bounce.
    await later.apply([Received(second, HARD)], "smtp")
    (entry,) = await _suppression(db, 1)
    assert entry.expires_at == NOW + month / 2 + month
    # A complaint makes it permanent, and says why.
    await later.apply([Received(second, COMPLAINT)], "smtp")
    (entry,) = await _suppression(db, 1)
    assert (entry.reason, entry.expires_at) == ("complaint", None)
    # An expired one is no longer listed.
    await _feedback(db, bounce_suppression=timedelta(days=1)).apply([Received(bob, HARD)], "smtp")

    async def listed(at: Any) -> list[str]:
        async def work(conn: AsyncConnection) -> list[str]:
            return [r.address for r in await suppressions.page(conn, 1, None, 10, at)]

        return await db.run(work)

    assert await listed(NOW) == ["ann@example.com", "bob@example.com"]
    assert await listed(NOW + timedelta(days=2)) == ["ann@example.com"]


async def test_an_unsubscribe_over_an_expiring_bounce_is_a_new_suppression_with_its_event(
    db: Database,
) -> None:
    _, (sent,) = await seed(db, 1, [("ann@example.com", S.SENT)])
    await _feedback(db, bounce_suppression=timedelta(days=30)).apply([Received(sent, HARD)], "smtp")
    service = Suppressions(db, lambda: NOW)
    added, _ = await service.add(1, SuppressionRequest(address="someone@example.com"))
    assert added

    async def unsubscribe(conn: AsyncConnection) -> bool:
        return await suppressions.add(conn, 1, "ann@example.com", "unsubscribe", NOW)

    assert await db.run(unsubscribe)
    listed = {(e.address, e.reason, e.expires_at) for e in await _suppression(db, 1)}
    assert listed == {
        ("ann@example.com", "unsubscribe", None),
        ("someone@example.com", "manual", None),
    }
    said = [(k, d.get("reason")) for k, d in await _events(db, 1) if k == "recipient.suppressed"]
    assert said == [("recipient.suppressed", "bounce"), ("recipient.suppressed", "manual")]
