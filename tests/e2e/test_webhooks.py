"""Webhooks end to end, on both stacks, through real processes and real HTTP.

Embedded: one ``mailsched run``. Real: ``mailsched api``, ``mailsched worker`` and
``mailsched webhooks`` on MariaDB + Kafka. A receiver on loopback stands for a
user's application. What it gets is compared with the event feed, and every
signature is checked with the ``standardwebhooks`` package, never with mailsched's
own code.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection
from standardwebhooks.webhooks import Webhook

from mailsched.config import Settings
from mailsched.domain.model import DeliveryStatus
from mailsched.store.db import Database
from mailsched.store.tables import deliveries
from tests.conftest import Stack
from tests.e2e.test_run import campaign
from tests.support.deployment import Api, Deployment, deployed
from tests.support.receiver import Answer, Receiver, Request
from tests.support.rules import min_gap
from tests.support.smtp_sink import SmtpSink

pytestmark = pytest.mark.e2e

#: Quick retries, so that a refused request comes back within a second.
RETRIES = "0.2,0.2,0.5,1,1,1"


def settings(sink: SmtpSink, **extra: str) -> dict[str, str]:
    return {
        "MAILSCHED_SMTP_URL": sink.url,
        "MAILSCHED_WEBHOOK_ALLOW_PRIVATE_URLS": "true",
        "MAILSCHED_WEBHOOK_RETRY_SCHEDULE": RETRIES,
        # A killed worker's delivery comes back in seconds, not minutes.
        "MAILSCHED_LEASE_SECONDS": "8",
        "MAILSCHED_REQUEUE_AFTER_SECONDS": "8",
        **extra,
    }


async def settle(check: Callable[[], bool], within: float) -> None:
    """Poll ``check`` until it holds or ``within`` seconds pass: the caller's
    assertions then say what is missing."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)


async def until(check: Callable[[], bool], within: float, what: str) -> None:
    """Poll ``check`` until it holds; fail, naming ``what``, after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        await asyncio.sleep(0.05)


def ids(requests: Iterable[Request]) -> set[str]:
    return {r.headers["webhook-id"] for r in requests}


def verified(secret: str, request: Request) -> dict[str, Any]:
    """The body, once ``standardwebhooks`` has checked its signature (it raises if not)."""
    body: dict[str, Any] = Webhook(secret).verify(request.body, request.headers)
    return body


def body_of(item: dict[str, Any]) -> dict[str, Any]:
    """What a webhook's body holds for the feed's ``item``."""
    return {"type": item["type"], "timestamp": item["timestamp"], "data": item["data"]}


def at(text: str) -> float:
    """Unix seconds of an API date-time (UTC if it names no zone)."""
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


async def test_a_receiver_gets_every_event_of_a_campaign_signed(
    stack: Stack, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    # Fails if a transition wrote no event (the types below), if the relay, the
    # events topic or the fan-out lost one (an id of the feed missing at the
    # receiver), if a body differed from the feed, or if the signing strayed from
    # Standard Webhooks (verify raises).
    recipients = [f"user{i}@example.com" for i in range(30)]
    async with (
        Receiver() as receiver,
        deployed(stack, settings(smtp_sink), tmp_path) as (app, api),
    ):
        hook = await api.webhook(receiver.url)
        created = await api.campaign(campaign(recipients, delay=0, limit=1000))
        campaign_id = created["campaignId"]
        await api.completed(campaign_id)
        items = await api.feed(campaign_id)
        wanted = {str(item["eventId"]) for item in items}
        await settle(lambda: wanted <= ids(receiver.requests), 30)
    # The processes have stopped: nothing more can arrive.

    assert Counter(item["type"] for item in items) == {
        "campaign.scheduled": 1,
        "campaign.started": 1,
        "delivery.sent": len(recipients),
        "campaign.completed": 1,
    }
    sent = [item["data"] for item in items if item["type"] == "delivery.sent"]
    assert sorted(data["recipient"] for data in sent) == sorted(recipients)
    feed = {str(item["eventId"]): item for item in items}
    assert ids(receiver.requests) == set(feed)
    for request in receiver.requests:
        body = verified(hook["secret"], request)
        assert body == body_of(feed[request.headers["webhook-id"]])
    assert not app.tracebacks(), app.output()


async def test_a_receiver_that_refuses_at_first_gets_everything_under_the_same_ids(
    stack: Stack, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    # Fails if a refused request were dropped (its id never answered 200), if a
    # retry were a new message (another webhook-id, or another body), or if the
    # deliverer did not record the 503s it got.
    refusals = 6
    answers: list[tuple[Request, int]] = []

    async def respond(request: Request) -> Answer:
        status = 503 if len(answers) < refusals else 200
        answers.append((request, status))
        return Answer(status)

    recipients = [f"user{i}@example.com" for i in range(10)]
    async with (
        Receiver(respond) as receiver,
        deployed(stack, settings(smtp_sink), tmp_path) as (app, api),
    ):
        hook = await api.webhook(receiver.url)
        created = await api.campaign(campaign(recipients, delay=0, limit=1000))
        campaign_id = created["campaignId"]
        await api.completed(campaign_id)
        items = await api.feed(campaign_id)
        wanted = {str(item["eventId"]) for item in items}

        def delivered() -> set[str]:
            return ids(r for r, status in answers if status == 200)

        await settle(lambda: wanted <= delivered(), 30)
        attempts = await api.attempts(hook["webhookId"])

    refused = [request for request, _status in answers[:refusals]]
    assert len(refused) == refusals
    assert delivered() == wanted
    for first in refused:
        again = [
            r
            for r, _status in answers[refusals:]
            if r.headers["webhook-id"] == first.headers["webhook-id"]
        ]
        assert again, f"{first.headers['webhook-id']} was not sent again"
        assert {r.body for r in again} == {first.body}
    feed = {str(item["eventId"]): item for item in items}
    for request in receiver.requests:
        assert verified(hook["secret"], request) == body_of(feed[request.headers["webhook-id"]])
    # mailsched's own record agrees: the 503s it got, for the same ids.
    got_503 = Counter(a["messageId"] for a in attempts if a["statusCode"] == 503)
    assert got_503 == Counter(r.headers["webhook-id"] for r in refused)
    assert not app.tracebacks(), app.output()


class Gate:
    """A receiver's answers around a kill.

    Open, it accepts every request (200). Closed, it holds the first request that
    comes (in flight when the sender is killed) and refuses the others (503: they
    wait for their retry in mailsched). Opened again, it accepts what it held: the
    receiver got that event, even though its sender died before hearing so.
    """

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self.held = 0
        self.refused = 0
        #: The webhook-ids answered 200.
        self.accepted: set[str] = set()

    async def respond(self, request: Request) -> Answer:
        if not self._open.is_set():
            if self.held:
                self.refused += 1
                return Answer(503)
            self.held += 1
            await self._open.wait()
        self.accepted.add(request.headers["webhook-id"])
        return Answer(200)

    def close(self) -> None:
        self.held = self.refused = 0
        self._open.clear()

    def open(self) -> None:
        self._open.set()


async def kill_in_flight(app: Deployment, api: Api, gate: Gate, hook: int, role: str) -> None:
    """kill -9 ``role`` while the receiver holds one of its requests and has refused
    another, whose retry mailsched has recorded; start it again."""
    gate.close()
    await until(lambda: gate.held > 0 and gate.refused > 0, 30, f"{role}: held, refused")
    # Killed before it records the refusal, the sender would leave that message to
    # its lease (the timeout + 60 s): wait until the attempt, written with the
    # retry, shows.
    deadline = time.monotonic() + 30
    while not any(a["statusCode"] == 503 for a in await api.attempts(hook)):
        assert time.monotonic() < deadline, "the refusal was not recorded"
        await asyncio.sleep(0.05)
    await asyncio.to_thread(app.kill, role)
    gate.open()
    await asyncio.to_thread(app.restart, role)


async def restart_after_kill(app: Deployment, role: str) -> None:
    """kill -9 ``role`` and start it again."""
    await asyncio.to_thread(app.kill, role)
    await asyncio.to_thread(app.restart, role)


async def sent_in_database(database_url: str, campaign_id: int) -> list[int]:
    """The campaign's deliveries whose status is SENT, read from the database itself."""
    db = Database.from_url(database_url)

    async def work(conn: AsyncConnection) -> list[int]:
        rows = await conn.execute(
            select(deliveries.c.id).where(
                deliveries.c.campaign_id == campaign_id,
                deliveries.c.status == DeliveryStatus.SENT.value,
            )
        )
        return [row[0] for row in rows]

    try:
        return await db.run(work)
    finally:
        await db.dispose()


async def test_kill_9_mid_campaign_every_sent_delivery_has_its_event_at_the_receiver(
    stack: Stack, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    # Fails if a send were recorded without its event, or with two (the feed against
    # the database); if a retry lived only in the killed process (checked by hand:
    # retries kept in memory fail here, while the 503 test still passes); or if a
    # restarted process did not carry on where the dead one stopped (the relay's
    # cursor, the events topic's offsets, the messages waiting). A loss confined to
    # a narrow window (a cursor or an offset moved before the write it stands for)
    # is caught only when a kill lands in it: the integration tests aim at those.
    gate = Gate()
    recipients = [f"user{i}@example.com" for i in range(16)]
    # Retries slow enough that none is given up while the gate is closed and the
    # process down. A message whose request had not reached the receiver at the
    # kill waits for its lease (the timeout + 60 s): a short timeout bounds that.
    env = settings(
        smtp_sink,
        MAILSCHED_WEBHOOK_RETRY_SCHEDULE="0.5,1,2,2,5,5,10",
        MAILSCHED_WEBHOOK_TIMEOUT_SECONDS="2",
    )

    def arrived(count: int) -> Callable[[], bool]:
        return lambda: len(smtp_sink.arrivals) >= count

    async with (
        Receiver(gate.respond) as receiver,
        deployed(stack, env, tmp_path) as (app, api),
    ):
        hook = await api.webhook(receiver.url)
        created = await api.campaign(campaign(recipients, delay=1, limit=1000))
        campaign_id = created["campaignId"]
        # Kills land on progress seen at the SMTP sink, with sends still to come.
        plan: list[tuple[int, Callable[[], Awaitable[None]]]]
        if app.embedded:
            plan = [(3, lambda: kill_in_flight(app, api, gate, hook["webhookId"], "run"))]
        else:
            plan = [
                (3, lambda: kill_in_flight(app, api, gate, hook["webhookId"], "webhooks")),
                (6, lambda: restart_after_kill(app, "worker")),
                (9, lambda: restart_after_kill(app, "api")),
            ]
        for count, kill in plan:
            await until(arrived(count), 60, f"{count} emails sent")
            assert len(smtp_sink.arrivals) < len(recipients), "the campaign ended before a kill"
            await kill()
        await api.completed(campaign_id, within=90)
        items = await api.feed(campaign_id)
        sent_events = [item for item in items if item["type"] == "delivery.sent"]
        wanted = {str(item["eventId"]) for item in sent_events}
        # 90 s: a message claimed by a killed process waits for its lease (62 s).
        await settle(lambda: wanted <= gate.accepted, 90)
        sent = await sent_in_database(app.env["MAILSCHED_DATABASE_URL"], campaign_id)

    assert wanted <= gate.accepted, f"never accepted: {wanted - gate.accepted}"
    assert len(sent) == len(recipients)
    # Exactly one delivery.sent per SENT delivery, and none for any other.
    assert Counter(item["data"]["deliveryId"] for item in sent_events) == Counter(sent)
    feed = {str(item["eventId"]): item for item in items}
    for request in receiver.requests:
        assert verified(hook["secret"], request) == body_of(feed[request.headers["webhook-id"]])
    assert not app.tracebacks(), app.output()


def uncovered(attempts: list[dict[str, Any]], times: Iterable[float]) -> list[float]:
    """The ``times`` at which none of the ``attempts`` was in flight."""

    def in_flight(attempt: dict[str, Any], t: float) -> bool:
        start = at(attempt["attemptedAt"])
        return start <= t <= start + float(attempt["durationMs"]) / 1000

    return [t for t in times if not any(in_flight(a, t) for a in attempts)]


async def covering(
    api: Api, webhook_id: int, times: Iterable[float], within: float = 40
) -> list[dict[str, Any]]:
    """The endpoint's attempts, once those recorded cover every one of ``times`` (an
    attempt is recorded when it ends), or after ``within`` seconds."""
    wanted = list(times)
    deadline = time.monotonic() + within
    while True:
        attempts = await api.attempts(webhook_id)
        if not uncovered(attempts, wanted) or time.monotonic() > deadline:
            return attempts
        await asyncio.sleep(0.5)


async def test_a_hanging_receiver_does_not_move_the_send_times(
    stack: Stack, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    # Fails if anything on the sending path waits for a webhook. Checked by hand: a
    # deliverer that blocks (a synchronous POST) fails it on both stacks, inside
    # `mailsched run` and when the worker runs it inline: the sends fall 10 s (the
    # timeout) behind their plan per request, or stop. The second half proves the
    # receiver really was hanging while the sends went out.
    release = asyncio.Event()
    arrivals: list[float] = []

    async def hang(_request: Request) -> Answer:
        arrivals.append(time.time())
        with suppress(TimeoutError):
            async with asyncio.timeout(30):
                await release.wait()
        return Answer(200)

    count = 8
    recipients = [f"user{i}@example.com" for i in range(count)]
    # The webhook timeout is left at its default, 10 s.
    async with (
        Receiver(hang) as receiver,
        deployed(stack, settings(smtp_sink), tmp_path) as (app, api),
    ):
        try:
            # On Kafka, the first sends must not wait for the worker's first rebalance.
            await asyncio.to_thread(app.wait_joined)
            hook = await api.webhook(receiver.url)
            # A few seconds ahead: the receiver hangs before the first send.
            start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5)
            body = campaign(recipients, delay=1, limit=1000)
            body["startTime"] = start.strftime("%Y-%m-%dT%H:%M:%SZ")
            created = await api.campaign(body)
            first, last = at(created["firstSendAt"]), at(created["lastSendAt"])
            # A second apart, and the plan's margin for each send's answer.
            step = 1 + Settings.model_fields["plan_margin_seconds"].default
            planned = [first + k * step for k in range(count)]
            assert abs(last - planned[-1]) < 0.001, created
            # Watched at the SMTP sink, not through the API (which shares a blocked
            # process's event loop).
            await settle(lambda: len(smtp_sink.arrivals) >= count, last - time.time() + 20)
            sends = sorted(a.at for a in smtp_sink.arrivals)
            assert len(sends) == count, f"{len(sends)} of {count} sent"
            late = [round(s - p, 3) for s, p in zip(sends, planned, strict=True)]
            assert all(abs(seconds) <= 1.0 for seconds in late), late
            assert min_gap(sends) >= 1.0
            attempts = await covering(api, hook["webhookId"], sends)
        finally:
            release.set()

    # The receiver had a request open (and unanswered) before the first send...
    assert arrivals and min(arrivals) < sends[0], (arrivals, sends)
    # ... and mailsched's own record shows requests in flight over every send, each
    # ended by the timeout, not by an answer.
    assert attempts and all(a["statusCode"] is None for a in attempts), attempts
    assert all(a["durationMs"] >= 9_000 for a in attempts), attempts
    assert not uncovered(attempts, sends), (attempts, sends)
    assert not app.tracebacks(), app.output()
