"""Dead letters: one per failed delivery, published in one send per batch, late or not.

On each stack: a campaign's batch has one delivery the server refuses for good,
and the queue refuses its dead letter. Every other send of the batch is recorded
once, nothing is sent twice (not even after the leases run out), and the dead
letter arrives once the queue takes writes again. A worker whose lease was taken
over writes no second dead letter for the delivery another worker failed since.
On each database: the relay publishes a batch of rows of many reasons at once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.bootstrap import build
from mailsched.config import Settings
from mailsched.errors import PermanentSendError, QueueUnavailable
from mailsched.mail import Accepted, Letter, Mailer
from mailsched.producer.dispatcher import Reaped
from mailsched.producer.relay import DeadLetterOutbox, Relay
from mailsched.queue import DeadLetter, DeliveryQueue, DueDelivery, Lane, Received
from mailsched.store.db import Database
from mailsched.store.migrate import upgrade
from mailsched.store.tables import dead_letters
from tests.conftest import Stack
from tests.integration.test_flow import USER, request
from tests.support.running import completed, create, wait_until
from tests.support.smtp_sink import SmtpSink

GONE = "gone@example.com"
OTHERS = [f"user{i}@example.com" for i in range(4)]


class DeadLettersRefused:
    """A queue whose dead-letter publishing fails until :attr:`accepting` is set."""

    def __init__(self, inner: DeliveryQueue) -> None:
        self.inner = inner
        self.accepting = False
        self.refused = 0
        self.accepted: list[DeadLetter] = []

    async def publish(self, deliveries: Sequence[DueDelivery], lane: Lane = Lane.ON_TIME) -> None:
        await self.inner.publish(deliveries, lane)

    async def receive(
        self,
        max_items: int,
        timeout: float,  # noqa: ASYNC109 - the DeliveryQueue contract
    ) -> Sequence[Received]:
        return await self.inner.receive(max_items, timeout)

    async def ack(self, messages: Sequence[Received]) -> None:
        await self.inner.ack(messages)

    async def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        if not self.accepting:
            self.refused += 1
            raise QueueUnavailable("kafka _MSG_TIMED_OUT: Local: Message timed out")
        await self.inner.dead_letter(letters)
        self.accepted.extend(letters)

    async def close(self) -> None:
        await self.inner.close()


class HeldUntilOpen:
    """Holds every send but the refused recipient's until :attr:`open` is set, so that
    the refusal is recorded in the middle of its batch, before the other sends end."""

    def __init__(self, inner: Mailer) -> None:
        self.inner = inner
        self.open = asyncio.Event()

    async def send(self, letter: Letter) -> Accepted:
        if letter.recipient != GONE:
            await self.open.wait()
        return await self.inner.send(letter)

    async def close(self) -> None:
        await self.inner.close()


@pytest.fixture
def settings(stack: Stack, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch) -> Settings:
    env = stack.env() | {
        "MAILSCHED_SMTP_URL": smtp_sink.url,
        "MAILSCHED_FROM": "campaigns@example.com",
        "MAILSCHED_DISPATCH_INTERVAL_SECONDS": "0.05",
        "MAILSCHED_DISPATCH_LOOKAHEAD_SECONDS": "0.3",
        "MAILSCHED_HOLD_SECONDS": "1.0",
        # Short leases and a reaper every second: a send left unrecorded would
        # be taken over and sent again while the test waits.
        "MAILSCHED_LEASE_SECONDS": "3",
        "MAILSCHED_REQUEUE_AFTER_SECONDS": "4",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings.load()


async def _outbox_size(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.count()).select_from(dead_letters))).scalar_one())


async def test_a_refused_dead_letter_abandons_nothing_and_is_delivered_later(
    settings: Settings, smtp_sink: SmtpSink
) -> None:
    smtp_sink.rcpt_policy = lambda a: "550 5.1.1 no such user" if a == GONE else None
    shift = [timedelta(0)]
    components = await build(settings, clock=lambda: datetime.now(UTC) + shift[0])
    queue = DeadLettersRefused(components.queue)
    components.queue = queue
    mailer = HeldUntilOpen(components.mailer())
    components._mailer = mailer
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        await upgrade(components.db)
        dispatcher = components.dispatcher()
        if components.in_process_queue:
            await dispatcher.recover_in_process_queue()
        relay = Relay("dead-letter", components.db, DeadLetterOutbox(queue), interval=0.05)
        worker = components.worker(await components.unsubscribe_signer())
        tasks = [
            asyncio.create_task(dispatcher.run(stop)),
            asyncio.create_task(relay.run(stop)),
            asyncio.create_task(worker.run(stop)),
        ]
        created = await create(components, request([OTHERS[0], OTHERS[1], GONE, *OTHERS[2:]]))
        campaign_id = created.campaign_id

        async def gone_failed() -> bool:
            page = await components.campaigns().deliveries(USER, campaign_id, None, 0, 10)
            return any(i.recipient == GONE and i.status == "FAILED" for i in page.items)

        await wait_until(gone_failed, within=30)
        mailer.open.set()
        await wait_until(lambda: completed(components, campaign_id), within=30)
        assert smtp_sink.per_recipient() == Counter(OTHERS)  # each once, none again
        await wait_until(lambda: queue.refused >= 2, within=30)
        assert await components.db.run(_outbox_size) == 1  # kept while the queue refuses

        queue.accepting = True
        await wait_until(lambda: queue.accepted, within=30)

        async def outbox_empty() -> bool:
            return await components.db.run(_outbox_size) == 0

        await wait_until(outbox_empty, within=30)

        page = await components.campaigns().deliveries(USER, campaign_id, None, 0, 10)
        stop.set()
        await asyncio.gather(*tasks)

        # Long after every lease: the reaper finds nothing to take back.
        shift[0] = timedelta(days=1)
        assert await dispatcher.reap_once() == Reaped(requeued=0, expired=0)
    finally:
        stop.set()
        mailer.open.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await components.aclose()

    statuses = {item.recipient: (item.status, item.attempts) for item in page.items}
    assert statuses == {GONE: ("FAILED", 1)} | {a: ("SENT", 1) for a in OTHERS}
    assert smtp_sink.per_recipient() == Counter(OTHERS)  # and not after the reaper either
    gone = next(item for item in page.items if item.recipient == GONE)
    [letter] = queue.accepted
    assert letter.delivery == DueDelivery(gone.delivery_id, campaign_id)
    assert "550" in letter.reason


class Refusing:
    """Refuses every letter for good; when ``held``, each only once :attr:`open` is set.
    :attr:`entered` is set by the first letter to arrive."""

    def __init__(self, *, held: bool) -> None:
        self.entered = asyncio.Event()
        self.open = asyncio.Event()
        if not held:
            self.open.set()

    async def send(self, letter: Letter) -> Accepted:
        self.entered.set()
        await self.open.wait()
        raise PermanentSendError("550 5.1.1 no such user", 550)

    async def close(self) -> None:
        pass


async def _receive_one(queue: DeliveryQueue) -> Received:
    taken: list[Received] = []

    async def received() -> bool:
        taken.extend(await queue.receive(1, timeout=0.5))
        return bool(taken)

    await wait_until(received, within=30)
    return taken[0]


async def test_a_late_worker_writes_no_second_dead_letter(settings: Settings) -> None:
    shift = [timedelta(0)]
    components = await build(settings, clock=lambda: datetime.now(UTC) + shift[0])
    late, prompt = Refusing(held=True), Refusing(held=False)
    components._mailer = late
    late_writer: asyncio.Task[None] | None = None
    try:
        await upgrade(components.db)
        signer = await components.unsubscribe_signer()
        dispatcher = components.dispatcher()
        worker_a = components.worker(signer)
        worker_b = replace(components, name="worker-b", _mailer=prompt).worker(signer)
        campaign_id = (await create(components, request([GONE]))).campaign_id

        # Worker A claims the delivery, and its send hangs past the lease.
        assert await dispatcher.dispatch_once() == 1
        late_writer = asyncio.create_task(worker_a.handle([await _receive_one(components.queue)]))
        await late.entered.wait()
        shift[0] = settings.worker().lease + timedelta(seconds=1)
        assert (await dispatcher.reap_once()).expired == 1

        # Worker B is given it again, fails it, and writes its dead letter.
        assert await dispatcher.dispatch_once() == 1
        await worker_b.handle([await _receive_one(components.queue)])
        assert await components.db.run(_outbox_size) == 1

        # A's refusal arrives now: its outcome is not written, nor its dead letter.
        late.open.set()
        await late_writer
        assert await components.db.run(_outbox_size) == 1
        page = await components.campaigns().deliveries(USER, campaign_id, None, 0, 10)
        assert [(i.status, i.attempts) for i in page.items] == [("FAILED", 2)]  # A's, B's
    finally:
        late.open.set()
        if late_writer is not None:
            await asyncio.gather(late_writer, return_exceptions=True)
        await components.aclose()


class Sink:
    """Takes every dead letter, and counts the sends."""

    def __init__(self) -> None:
        self.sends: list[list[DeadLetter]] = []

    async def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        self.sends.append(list(letters))


async def test_the_relay_publishes_a_batch_of_many_reasons_in_one_send(db: Database) -> None:
    reasons = [f"550 5.1.1 no such user ({i})" for i in range(5)]
    now = datetime.now(UTC)

    async def add(conn: AsyncConnection) -> None:
        await conn.execute(
            insert(dead_letters),
            [
                {"delivery_id": 10 + i, "campaign_id": 3, "reason": r, "created_at": now}
                for i, r in enumerate(reasons)
            ],
        )

    await db.run(add)
    sink = Sink()
    relay = Relay("dead-letter", db, DeadLetterOutbox(sink), batch_size=4)

    assert await relay.relay_once() == 4
    assert await relay.relay_once() == 1
    assert sink.sends == [
        [DeadLetter(DueDelivery(10 + i, 3), r) for i, r in enumerate(reasons[:4])],
        [DeadLetter(DueDelivery(14, 3), reasons[4])],
    ]
    assert await db.run(_outbox_size) == 0
