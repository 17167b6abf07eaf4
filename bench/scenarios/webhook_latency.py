"""From a send to its webhook: real processes, a receiver subscribed to ``delivery.sent``.

MariaDB + Kafka: ``mailsched api`` (dispatcher and event relay), ``mailsched worker``
into the bench's ``smtp-sink``, ``mailsched webhooks`` (joined to its group before
anything is posted) and :mod:`bench.receiver`. SQLite: ``mailsched run`` alone, with
the same sink and receiver. The endpoint is made through ``POST /api/v1/webhooks``,
one event per request unless ``batch``.

Two shapes of load:

* ``burst``: one campaign of ``recipients``, ``delaySeconds: 0``, no limit: the
  worker's full speed, so the webhooks fall behind and catch up;
* ``steady``: 50 campaigns of 20 recipients with ``delaySeconds: 1``, their starts
  spread over a second: about 50 emails/s for 20 s (a whole second is the API's
  smallest delay, so a modest rate is many campaigns).

Latency = the event's arrival at the receiver (its clock) minus the delivery's
``sent_at`` (the worker's clock, when the SMTP server accepted the message):
one host, one clock.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from bench import dbstats
from bench.client import campaign_body, http_client, post
from bench.receiver import ReceiverProcess
from bench.sink import SmtpSink
from bench.stack import Servers, Stack, port_of
from mailsched.domain.model import DeliveryStatus
from mailsched.store.tables import deliveries, events

STEADY_CAMPAIGNS = 50
STEADY_SECONDS = 20


def bodies(shape: str, recipients: int, base: datetime) -> list[bytes]:
    """The campaigns of ``shape``, starting at ``base``."""
    if shape == "burst":
        return [campaign_body(recipients, start=base, tag="burst")]
    return [
        campaign_body(
            STEADY_SECONDS,
            start=base + timedelta(seconds=k / STEADY_CAMPAIGNS),
            delay=1,
            tag=f"s{k}",
        )
        for k in range(STEADY_CAMPAIGNS)
    ]


async def add_webhook(
    client: httpx.AsyncClient, port: int, key: str | None, url: str, batch: bool
) -> None:
    """``POST /api/v1/webhooks`` for ``delivery.sent`` to ``url``."""
    response = await client.post(
        f"http://127.0.0.1:{port}/api/v1/webhooks",
        json={"url": url, "events": ["delivery.sent"], "description": "bench", "batch": batch},
        headers={"Authorization": f"Bearer {key}"} if key else {},
    )
    if response.status_code != 201:
        raise RuntimeError(f"POST /api/v1/webhooks: {response.status_code} {response.text[:300]}")


async def sent_times(stack: Stack) -> dict[int, datetime]:
    """Each ``delivery.sent`` event's delivery's ``sent_at``, by event id."""

    async def work(conn: AsyncConnection) -> dict[int, datetime]:
        sent = {
            r.id: r.sent_at
            for r in await conn.execute(
                select(deliveries.c.id, deliveries.c.sent_at).where(
                    deliveries.c.status == DeliveryStatus.SENT
                )
            )
        }
        query = select(events.c.id, events.c.data).where(events.c.type == "delivery.sent")
        found = {}
        for r in await conn.execute(query):
            delivery_id = json.loads(r.data).get("deliveryId")
            if delivery_id in sent:
                found[int(r.id)] = sent[delivery_id]
        return found

    return await stack.db.run(work)


async def run(
    servers: Servers,
    workdir: Path,
    sink: SmtpSink,
    shape: str,
    recipients: int,
    settings: dict[str, str],
    *,
    sqlite: bool,
    batch: bool = False,
) -> dict[str, Any]:
    """Start the processes, subscribe the receiver, post the load, wait for every webhook."""
    common = settings | {"MAILSCHED_WEBHOOK_ALLOW_PRIVATE_URLS": "true"}
    async with (
        Stack(servers, workdir, sqlite=sqlite, common=common) as stack,
        http_client() as client,
    ):
        receiver = ReceiverProcess()
        try:
            if sqlite:
                api = stack.start("run", smtp_url=sink.url)
                commands = [api.shell()]
            else:
                api = stack.start("api")
                worker = stack.start("worker", smtp_url=sink.url)
                hooks = stack.start("webhooks")
                hooks.wait_log("assigned")
                commands = [api.shell(), worker.shell(), hooks.shell()]
            await add_webhook(client, port_of(api), stack.api_key, receiver.url, batch)
            base = datetime.now(UTC) + timedelta(seconds=5)
            loads = bodies(shape, recipients, base)
            total = sum(b.count(b"@example.com") for b in loads)
            await asyncio.gather(*(post(client, port_of(api), b, stack.api_key) for b in loads))
            stats = await receiver.wait_events(total, timeout=120 + total / 50)
            arrivals = receiver.arrivals()
            sent = await sent_times(stack)
            span_sent, span = await dbstats.send_span(stack.db)
            late = await dbstats.lateness(stack.db)
        finally:
            receiver.stop()
    delays = [arrivals[i] - at.timestamp() for i, at in sent.items() if i in arrivals]
    return {
        "stack": "sqlite" if sqlite else "mariadb+kafka",
        "shape": shape,
        "endpoint": "batch" if batch else "single",
        "deliveries": total,
        "sent": span_sent,
        "send_rate_per_s": round(span_sent / span) if span else None,
        "webhooks_arrived": len(delays),
        "requests": stats["requests"],
        "send_to_webhook": dbstats.percentiles(delays),
        "sent_at_late": dbstats.percentiles(late["sent"]),
        "commands": commands,
    }
