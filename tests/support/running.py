"""Run mailsched's roles inside the test's event loop, against a chosen stack."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.bootstrap import Clock, Components, build, utc_now
from mailsched.config import Settings
from mailsched.domain.model import Campaign, CampaignStatus
from mailsched.producer.schemas import CampaignCreated, CampaignRequest
from mailsched.store.campaigns import get_campaign
from mailsched.store.migrate import upgrade


def load_settings(
    monkeypatch: pytest.MonkeyPatch, stack_env: Mapping[str, str], smtp_url: str, **more: str
) -> Settings:
    """The settings of a stack (its ``env()``) sending to ``smtp_url`` as
    campaigns@example.com, with ``more`` (``MAILSCHED_`` left off the names), set in
    the environment for the rest of the test."""
    env = {**stack_env, "MAILSCHED_SMTP_URL": smtp_url, "MAILSCHED_FROM": "campaigns@example.com"}
    env |= {f"MAILSCHED_{name}": value for name, value in more.items()}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings.load()


@asynccontextmanager
async def running(
    settings: Settings,
    *,
    dispatcher: bool = True,
    worker: bool = True,
    webhooks: bool = False,
    clock: Clock = utc_now,
) -> AsyncIterator[Components]:
    """Build the components (on ``clock``), migrate, and run a dispatcher (with its
    relays and the event pruner), a worker and, if asked, the webhooks (the deliverer,
    and on Kafka the reader of the events topic) until the block ends."""
    components = await build(settings, clock)
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        await upgrade(components.db)
        if dispatcher:
            d = components.dispatcher()
            if components.in_process_queue:
                await d.recover_in_process_queue()
            tasks.append(asyncio.create_task(d.run(stop)))
            tasks.append(asyncio.create_task(components.relay().run(stop)))
            tasks.append(asyncio.create_task(components.event_relay().run(stop)))
            tasks.append(asyncio.create_task(components.event_pruner().run(stop)))
        if worker:
            signer = await components.unsubscribe_signer()
            tasks.append(asyncio.create_task(components.worker(signer).run(stop)))
        if webhooks:
            if not components.in_process_queue:
                tasks.append(asyncio.create_task(components.event_intake().run(stop)))
            tasks.append(asyncio.create_task(components.webhook_deliverer().run(stop)))
        yield components
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await components.aclose()


async def wait_until(
    predicate: Callable[[], object], within: float, interval: float = 0.05
) -> None:
    """Poll ``predicate`` (sync or async) until it is true; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(interval)


async def completed(components: Components, campaign_id: int) -> bool:
    """Whether the campaign has reached COMPLETED."""

    async def work(conn: AsyncConnection) -> Campaign | None:
        return await get_campaign(conn, campaign_id)

    campaign = await components.db.run(work)
    return campaign is not None and campaign.status == CampaignStatus.COMPLETED


async def create(components: Components, request: CampaignRequest) -> CampaignCreated:
    """Create a campaign through the service, as the API does."""
    created = await components.campaigns().create(request)
    return CampaignCreated.model_validate_json(created.body)
