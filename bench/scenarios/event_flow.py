"""Events/s through each stage of the event pipeline, with mailsched's own components in-process.

N ``delivery.sent`` events (10 campaigns, the payload the worker writes) are written
for user 1, who has one webhook endpoint, into a fresh database, in transactions of
5,000 through :func:`mailsched.store.events.append`. Then each stage runs alone, on
the whole backlog, timed from its first read to its last write:

* MariaDB + Kafka: (a) the relay (``Relay`` + ``EventOutbox`` + ``KafkaEventSink``,
  as ``mailsched api`` wires them) into the events topic; (b) ``mailsched
  webhooks``' intake (``EventIntake`` over ``KafkaEventConsumer`` into ``FanOut``),
  topic to webhook messages, after its consumer has joined its group; (c) the
  ``WebhookDeliverer`` to :mod:`bench.receiver`, a separate process;
* SQLite (``mailsched run``): (a) the relay straight into ``FanOut``, in its own
  transaction; (c) the deliverer, as above.

The stages are the real classes built by :func:`mailsched.bootstrap.build` from the
stack's settings, run in the bench's process (not as ``mailsched`` processes: each
stage is timed alone). A single-event endpoint is timed over its first
``single_limit`` events (its rate is steady, and the whole backlog would take minutes).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from bench.receiver import ReceiverProcess
from bench.stack import Servers, Stack
from mailsched.bootstrap import Components, build
from mailsched.config import Settings
from mailsched.domain.events import EventType, NewEvent
from mailsched.producer.event_intake import EventIntake
from mailsched.producer.relay import EventSink
from mailsched.store import events, webhooks
from mailsched.store.db import Database
from mailsched.webhooks import signing
from mailsched.webhooks.fanout import FanOut

CAMPAIGNS = 10
WRITE_CHUNK = 5000


def settings_of(stack: Stack) -> Settings:
    """The Settings a process on ``stack`` reads, webhooks to loopback allowed."""
    env = stack.settings(webhook_allow_private_urls="true")
    # Settings reads the environment too: the embedded stack must not find Kafka there.
    values: dict[str, Any] = {"kafka_bootstrap_servers": ""}
    values |= {k.removeprefix("MAILSCHED_").lower(): v for k, v in env.items()}
    return Settings(**values)


async def add_endpoint(db: Database, url: str, batch: bool) -> int:
    """A webhook endpoint of user 1 for every event type; its id."""

    async def work(conn: AsyncConnection) -> int:
        now = datetime.now(UTC)
        secret = signing.new_secret()
        endpoint = await webhooks.add_endpoint(conn, 1, url, "bench", None, secret, batch, now)
        return endpoint.id

    return await db.run(work)


async def write_events(db: Database, total: int) -> float:
    """Append ``total`` ``delivery.sent`` events of user 1; the seconds it took."""
    started = time.perf_counter()
    for first in range(0, total, WRITE_CHUNK):

        async def work(conn: AsyncConnection, first: int = first) -> None:
            now = datetime.now(UTC)
            new = []
            for i in range(first, min(first + WRITE_CHUNK, total)):
                campaign = 1 + i % CAMPAIGNS
                fields = {
                    "recipient": f"user{i}.c{campaign}@example.com",
                    "attempt": 1,
                    "smtpCode": 250,
                    "smtpReply": f"2.0.0 Ok: queued as {i:010X}",
                }
                new.append(NewEvent(1, EventType.DELIVERY_SENT, now, campaign, i + 1, fields))
            await events.append(conn, new)

        await db.run(work)
    return time.perf_counter() - started


def _rate(count: int, seconds: float) -> dict[str, Any]:
    return {
        "events": count,
        "seconds": round(seconds, 2),
        "per_s": round(count / seconds) if seconds > 0 else None,
    }


async def time_relay(components: Components) -> dict[str, Any]:
    """Relay the whole backlog, pass after pass (as ``Relay.run`` does while full)."""
    relay = components.event_relay()
    started, total = time.perf_counter(), 0
    while relayed := await relay.relay_once():
        total += relayed
    return _rate(total, time.perf_counter() - started)


class _Counted:
    """An EventSink that counts what its inner sink took, and says stop at ``target``."""

    def __init__(self, inner: EventSink, target: int, stop: asyncio.Event) -> None:
        self._inner, self._target, self._stop = inner, target, stop
        self.count = 0
        self.first: float | None = None
        self.last = 0.0

    async def publish(self, conn: AsyncConnection, batch: Any) -> None:
        self.first = self.first or time.perf_counter()
        await self._inner.publish(conn, batch)
        self.count += len(batch)
        self.last = time.perf_counter()
        if self.count >= self._target:
            self._stop.set()


async def time_intake(components: Components, settings: Settings, total: int) -> dict[str, Any]:
    """``mailsched webhooks``' intake over the topic until every event is fanned out."""
    from mailsched.queue.kafka_events import KafkaEventConsumer

    kafka = settings.kafka()
    assert kafka is not None
    consumer = KafkaEventConsumer(
        kafka, settings.events(), settings.webhooks().group_id, components.name
    )
    stop = asyncio.Event()
    sink = _Counted(FanOut(components.clock), total, stop)
    intake = EventIntake(components.db, consumer, sink)
    started = time.perf_counter()
    try:
        await asyncio.wait_for(intake.run(stop), timeout=max(120.0, total / 500))
    finally:
        await consumer.close()
    assert sink.first is not None
    result = _rate(sink.count, sink.last - sink.first)
    result["join_s"] = round(sink.first - started, 2)
    return result


async def time_delivery(
    components: Components, receiver: ReceiverProcess, target: int
) -> dict[str, Any]:
    """The deliverer until ``target`` events reached the receiver."""
    deliverer = components.webhook_deliverer()
    stop = asyncio.Event()
    started = time.time()
    task = asyncio.create_task(deliverer.run(stop))
    try:
        stats = await receiver.wait_events(target, timeout=max(120.0, target / 50))
    finally:
        stop.set()
        await task
    result = _rate(stats["events"], (stats["last"] or started) - started)
    result["requests"] = stats["requests"]
    return result


async def run(
    servers: Servers, workdir: Path, total: int, single_limit: int, *, sqlite: bool, batch: bool
) -> dict[str, Any]:
    """One stack, one endpoint (batching or not): write, relay, (take in,) deliver."""
    out: dict[str, Any] = {
        "stack": "sqlite" if sqlite else "mariadb+kafka",
        "endpoint": "batch" if batch else "single",
        "events": total,
        "campaigns": CAMPAIGNS,
    }
    async with Stack(servers, workdir, sqlite=sqlite) as stack:
        receiver = ReceiverProcess()
        try:
            settings = settings_of(stack)
            components = await build(settings)
            try:
                await add_endpoint(stack.db, receiver.url, batch)
                out["write"] = _rate(total, await write_events(stack.db, total))
                out["relay"] = await time_relay(components)
                if not sqlite:
                    out["intake"] = await time_intake(components, settings, total)
                target = total if batch else min(total, single_limit)
                out["deliver"] = await time_delivery(components, receiver, target)
            finally:
                await components.aclose()
        finally:
            receiver.stop()
    return out
