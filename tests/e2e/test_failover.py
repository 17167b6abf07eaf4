"""Two SMTP relays through real processes, on both stacks: the first breaks, then heals.

Embedded: one ``mailsched run``. Real: ``mailsched api``, ``mailsched worker`` and
``mailsched webhooks`` on MariaDB + Kafka. ``MAILSCHED_SMTP_URL`` names a primary and
a backup relay, both :class:`~tests.support.switch_sink.SwitchSink`. While the
primary refuses connections (or greets with 421) a campaign goes out through the
backup, each email exactly once; once the primary heals, the next campaign goes
mostly through it again (after its probe). The deliveries listing names the relay
of each. The failover time and the loss are printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Stack
from tests.support.deployment import Api, Deployment, deployed
from tests.support.smtp_sink import Arrival
from tests.support.switch_sink import SwitchSink

pytestmark = pytest.mark.e2e

RECIPIENTS = 200
PROBE_SECONDS = 1


@dataclass
class Run:
    """One campaign sent: its recipients, when it was created and when it completed
    (``time.time()``, as the sinks stamp arrivals)."""

    campaign_id: int
    recipients: list[str]
    started: float
    completed: float

    @property
    def seconds(self) -> float:
        """From creation to completion."""
        return self.completed - self.started

    def first_at(self, sink: SwitchSink) -> float:
        """Seconds from the campaign's creation to its first arrival at ``sink``."""
        arrivals = self.at(sink)
        return arrivals[0].at - self.started if arrivals else float("nan")

    def at(self, sink: SwitchSink) -> list[Arrival]:
        """The campaign's arrivals at ``sink``, in order."""
        mine = set(self.recipients)
        return sorted((a for a in sink.arrivals if a.rcpt in mine), key=lambda a: a.at)


@pytest.fixture
def relays() -> Iterator[tuple[SwitchSink, SwitchSink]]:
    """The primary and the backup relay, both taking mail."""
    primary, backup = SwitchSink().start(), SwitchSink().start()
    try:
        yield primary, backup
    finally:
        primary.stop()
        backup.stop()


async def send_campaign(api: Api, tag: str) -> Run:
    recipients = [f"{tag}{i}@example.com" for i in range(RECIPIENTS)]
    started = time.time()
    created = await api.campaign(
        {
            "userId": 1,
            "subject": f"Failover {tag}",
            "body": "Hello.",
            "startTime": "2026-01-25T12:00:00Z",
            "delaySeconds": 0,
            "hourlyLimit": 100_000,
            "recipients": recipients,
        }
    )
    await api.completed(created["campaignId"], within=120)
    return Run(created["campaignId"], recipients, started, time.time())


async def wait_probed(api: Api, primary: SwitchSink, within: float = 60) -> int:
    """Send one-recipient campaigns, one after another, until one arrives at the healed
    primary: its probe (due ``PROBE_SECONDS`` after its last failure) succeeded.
    Return how many were sent."""
    deadline = time.monotonic() + within
    sent = 0
    while not any(a.rcpt.startswith("canary") for a in primary.arrivals):
        assert time.monotonic() < deadline, f"no letter reached the primary in {within} s"
        sent += 1
        created = await api.campaign(
            {
                "userId": 1,
                "subject": "Canary",
                "body": "Hello.",
                "startTime": "2026-01-25T12:00:00Z",
                "delaySeconds": 0,
                "hourlyLimit": 100_000,
                "recipients": [f"canary{sent}@example.com"],
            }
        )
        await api.completed(created["campaignId"], within=60)
    return sent


async def deliveries(api: Api, campaign_id: int) -> list[dict[str, Any]]:
    """Every delivery of the campaign, following ``nextCursor``."""
    items: list[dict[str, Any]] = []
    params: dict[str, str | int] = {"limit": 1000}
    while True:
        response = await api.client.get(
            f"/api/v1/email/campaign/{campaign_id}/deliveries", params=params
        )
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        if page["nextCursor"] is None:
            return items
        params["cursor"] = page["nextCursor"]


async def relay_metrics(app: Deployment) -> dict[tuple[str, str], float]:
    """``mailsched_relay_sends_total`` of the process that sends, by (relay, result)."""
    if app.embedded:
        url = f"{app.base_url}/metrics"
    else:
        url = await asyncio.to_thread(app.processes["worker"].metrics_url)
    async with httpx.AsyncClient() as client:
        text = (await client.get(url, timeout=10)).text
    pattern = r'mailsched_relay_sends_total\{relay="([^"]+)",result="([^"]+)"\} (\S+)'
    return {(relay, result): float(n) for relay, result, n in re.findall(pattern, text)}


def relays_env(
    primary: SwitchSink, backup: SwitchSink, primary_params: str = "", **extra: str
) -> dict[str, str]:
    """The primary and then the backup in MAILSCHED_SMTP_URL, and ``extra`` settings."""
    return {
        "MAILSCHED_FROM": "news@example.com",
        "MAILSCHED_SMTP_URL": f"{primary.url}?name=primary{primary_params} "
        f"{backup.url}?name=backup",
        "MAILSCHED_SMTP_PROBE_SECONDS": str(PROBE_SECONDS),
        **extra,
    }


def exactly_once(recipients: list[str], *sinks: SwitchSink) -> tuple[list[str], dict[str, int]]:
    """The recipients that got nothing, and those that got more than one email."""
    arrived: Counter[str] = Counter()
    for sink in sinks:
        arrived += sink.per_recipient()
    lost = [r for r in recipients if arrived[r] == 0]
    twice = {r: n for r, n in arrived.items() if n > 1}
    assert set(arrived) <= set(recipients)
    return lost, twice


@pytest.mark.parametrize("trouble", ["refuse", "busy"], ids=["refused", "421"])
async def test_a_broken_relay_fails_over_without_loss_and_gets_its_traffic_back(
    stack: Stack, relays: tuple[SwitchSink, SwitchSink], tmp_path: Path, trouble: str
) -> None:
    primary, backup = relays
    async with deployed(stack, relays_env(primary, backup), tmp_path) as (app, api):
        await asyncio.to_thread(app.wait_joined)
        healthy = await send_campaign(api, "healthy")
        getattr(primary, trouble)()
        broken = await send_campaign(api, "broken")
        primary.accept()
        healed_at = time.time()
        canaries = await wait_probed(api, primary)
        back_after = primary.arrivals[-1].at - healed_at
        healed = await send_campaign(api, "healed")
        listed = {
            run.campaign_id: await deliveries(api, run.campaign_id) for run in (broken, healed)
        }
        metrics = await relay_metrics(app)
        assert not app.tracebacks(), app.output()

    canary = [f"canary{i}@example.com" for i in range(1, canaries + 1)]
    lost, twice = exactly_once(
        healthy.recipients + broken.recipients + healed.recipients + canary, primary, backup
    )
    print(
        f"\n[{stack.name}, primary {trouble}] {RECIPIENTS} emails each. Healthy: first "
        f"arrival {healthy.first_at(primary):.3f} s after creation, all in "
        f"{healthy.seconds:.2f} s. Broken: first arrival at the backup "
        f"{broken.first_at(backup):.3f} s after creation, all in {broken.seconds:.2f} s "
        f"({broken.seconds - healthy.seconds:+.2f} s). Healed: back at the primary "
        f"{back_after:.2f} s later (probe after {PROBE_SECONDS} s, {canaries} one-email "
        f"campaigns), then {len(healed.at(primary))}/{RECIPIENTS} through it in "
        f"{healed.seconds:.2f} s. Lost {len(lost)}, twice {len(twice)}. "
        f"Relay sends {dict(sorted(metrics.items()))}"
    )

    # Every email exactly once, over both relays.
    assert lost == []
    assert twice == {}
    assert len(healthy.at(primary)) == RECIPIENTS
    # While the primary was broken, nothing reached it.
    assert broken.at(primary) == []
    assert len(broken.at(backup)) == RECIPIENTS
    # Once healed, its probe (one canary) brought its traffic back.
    assert [a.rcpt for a in primary.arrivals if a.rcpt in canary] == [canary[-1]]
    assert len(healed.at(primary)) == RECIPIENTS
    # The listing names the relay that took each email, and no attempt was burned.
    first_listing = listed[broken.campaign_id]
    assert Counter(d["relay"] for d in first_listing) == {"backup": RECIPIENTS}
    assert Counter(d["attempts"] for d in first_listing) == {1: RECIPIENTS}
    assert Counter(d["status"] for d in first_listing) == {"SENT": RECIPIENTS}
    second_listing = listed[healed.campaign_id]
    assert Counter(d["relay"] for d in second_listing) == {"primary": RECIPIENTS}
    assert metrics[("primary", "unavailable")] >= 1
    assert metrics[("backup", "accepted")] == RECIPIENTS + canaries - 1
    assert metrics[("primary", "accepted")] == 2 * RECIPIENTS + 1


async def test_a_relay_that_goes_down_mid_campaign_loses_nothing(
    stack: Stack, relays: tuple[SwitchSink, SwitchSink], tmp_path: Path
) -> None:
    """The primary is paced (100 a second), so the campaign is still going when it stops
    listening and cuts its connections, a quarter of the way in. Letters cut before
    their final dot are retried; one cut after it may have arrived (RFC 1047), so an
    email may come twice, at most one per connection the primary had."""
    primary, backup = relays
    env = relays_env(primary, backup, "&max_per_second=100", MAILSCHED_RETRY_BASE_SECONDS="1")
    async with deployed(stack, env, tmp_path) as (app, api):
        await asyncio.to_thread(app.wait_joined)
        running = asyncio.create_task(send_campaign(api, "cut"))
        await asyncio.to_thread(primary.wait_for, RECIPIENTS // 4, 60)
        primary.refuse()
        cut_at = time.time()
        run = await running
        listing = await deliveries(api, run.campaign_id)
        metrics = await relay_metrics(app)
        assert not app.tracebacks(), app.output()

    lost, twice = exactly_once(run.recipients, primary, backup)
    after_cut = [a for a in backup.arrivals if a.at >= cut_at]
    retried = sum(1 for d in listing if d["attempts"] > 1)
    print(
        f"\n[{stack.name}, primary cut mid-campaign] {len(run.at(primary))} through the "
        f"primary, {len(run.at(backup))} through the backup; first arrival at the backup "
        f"{after_cut[0].at - cut_at if after_cut else float('nan'):.3f} s after the cut; "
        f"all in {run.seconds:.2f} s; {retried} retried; lost {len(lost)}, "
        f"twice {len(twice)}. Relay sends {dict(sorted(metrics.items()))}"
    )

    assert lost == []
    assert len(twice) <= 8  # the primary's connections
    assert RECIPIENTS // 4 <= len(run.at(primary)) < RECIPIENTS
    assert all(a.at < cut_at for a in primary.arrivals)
    assert {d["status"] for d in listing} == {"SENT"}
    took = {a.rcpt: "backup" for a in backup.arrivals} | {
        a.rcpt: "primary" for a in primary.arrivals if a.rcpt not in twice
    }
    assert {d["recipient"]: d["relay"] for d in listing if d["recipient"] not in twice} == {
        r: took[r] for r in run.recipients if r not in twice
    }
