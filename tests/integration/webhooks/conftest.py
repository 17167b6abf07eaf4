"""Webhook fixtures: a config for tests, events, endpoints, and an app with the routes."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.config import WebhookConfig
from mailsched.domain.events import Event, EventType, NewEvent
from mailsched.metrics import Metrics
from mailsched.producer.api import create_app
from mailsched.producer.auth import Authenticator, caller_dependency
from mailsched.producer.campaigns import Campaigns
from mailsched.store import events as event_store
from mailsched.store import webhooks as endpoints
from mailsched.store.db import Database
from mailsched.webhooks.api import webhook_routes
from mailsched.webhooks.deliver import WebhookDeliverer
from mailsched.webhooks.fanout import FanOut
from tests.support.api import client_for, new_key


def now() -> datetime:
    """The wall clock: receivers check webhook timestamps against it."""
    return datetime.now(UTC)


CONFIG = WebhookConfig(
    retry_schedule=(0.05,) * 5,
    timeout=5.0,
    allow_private_urls=True,
    group_id="mailsched-webhooks-test",
    concurrency=8,
    max_batch=500,
)


def config(**changes: Any) -> WebhookConfig:
    return dataclasses.replace(CONFIG, **changes)


async def add_events(
    db: Database, user_id: int, count: int, type: EventType = EventType.DELIVERY_SENT
) -> list[Event]:
    """``count`` stored events of ``user_id``, as the relay would read them."""
    at = now()

    async def work(conn: AsyncConnection) -> list[Event]:
        last = await event_store.append(
            conn,
            [
                NewEvent(user_id, type, at, campaign_id=7, delivery_id=i + 1, fields={"n": i})
                for i in range(count)
            ],
        )
        return await event_store.after(conn, last - count, count)

    return await db.run(work)


async def add_endpoint(
    db: Database,
    user_id: int,
    url: str,
    *,
    batch: bool = False,
    types: list[str] | None = None,
    created_at: datetime | None = None,
) -> tuple[int, str]:
    """An endpoint stored directly (no URL check); returns its id and secret."""
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

    async def work(conn: AsyncConnection) -> endpoints.Endpoint:
        return await endpoints.add_endpoint(
            conn, user_id, url, None, types, secret, batch, created_at or now() - timedelta(1)
        )

    return (await db.run(work)).id, secret


async def fan_out(db: Database, events: list[Event]) -> None:
    fanout = FanOut(now)

    async def work(conn: AsyncConnection) -> None:
        await fanout.publish(conn, events)

    await db.run(work)


async def deliver_until(
    deliverer: WebhookDeliverer, done: Callable[[], bool], seconds: float = 20
) -> int:
    """Run passes until ``done()``; return the requests made. Sleeps only while a retry
    is not yet due (the retry schedule of :data:`CONFIG` is 50 ms)."""
    made = 0
    async with asyncio.timeout(seconds):
        while not done():
            sent = await deliverer.deliver_once()
            made += sent
            if not sent:
                await asyncio.sleep(0.02)
    return made


@pytest.fixture
async def deliverer_for(
    db: Database,
) -> AsyncIterator[Callable[..., WebhookDeliverer]]:
    made: list[WebhookDeliverer] = []

    def make(**changes: Any) -> WebhookDeliverer:
        deliverer = WebhookDeliverer(db, config(**changes), now, Metrics())
        made.append(deliverer)
        return deliverer

    yield make
    for deliverer in made:
        await deliverer.aclose()


def webhook_app(db: Database, **changes: Any) -> FastAPI:
    caller = caller_dependency(Authenticator(db, 6000))
    routes = webhook_routes(db, caller, now, config(**changes))
    campaigns = Campaigns(db, timedelta(hours=1), now)
    return create_app(campaigns, caller, routers=(routes,))


@pytest.fixture
async def api(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """User 1's client of an app whose URL checks refuse private addresses."""
    async with client_for(webhook_app(db, allow_private_urls=False), await new_key(db, 1)) as c:
        yield c
