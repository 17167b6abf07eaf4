"""Bounces and complaints through the bounce mailbox, with real processes on both stacks.

Embedded: ``mailsched run`` serves the bounce mailbox too. Real: ``mailsched inbound``
beside ``api``, ``worker`` and ``webhooks``. Campaigns go to the SMTP sink, which
records each letter's envelope sender (its VERP return path); the test then sends
reports to those addresses over SMTP, as a recipient's server would, and reads the
outcome from the API. The mailbox answers 250 once it has applied a message, so what
the API shows after that answer is final: nothing is waited for.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stack
from tests.support.bounces import COMPLAINT, HARD, SOFT, Answered, dsn, submit
from tests.support.deployment import Api, Deployment, deployed
from tests.support.processes import Mailsched
from tests.support.smtp_sink import SmtpSink, free_port

pytestmark = pytest.mark.e2e

BOUNCES = "bounces@bounce.example.com"


def settings(sink: SmtpSink, **more: str) -> dict[str, str]:
    return {
        "MAILSCHED_FROM": "news@example.com",
        "MAILSCHED_SMTP_URL": sink.url,
        "MAILSCHED_BOUNCE_ADDRESS": BOUNCES,
    } | more


def campaign(recipients: list[str], hourly_limit: int = 1000) -> dict[str, Any]:
    return {
        "userId": 1,
        "subject": "Bounces come back",
        "body": "Hello.",
        "startTime": "2026-01-25T12:00:00Z",
        "delaySeconds": 0,
        "hourlyLimit": hourly_limit,
        "recipients": recipients,
    }


async def sent(api: Api, sink: SmtpSink, recipients: list[str]) -> tuple[int, dict[str, str]]:
    """Send a campaign to completion; its id and each recipient's return path."""
    created = await api.campaign(campaign(recipients))
    campaign_id: int = created["campaignId"]
    await api.completed(campaign_id)
    paths = {a.rcpt: a.mail_from for a in sink.arrivals if a.campaign_id == campaign_id}
    assert sorted(paths) == sorted(recipients)
    return campaign_id, paths


async def send(app: Deployment, rcpt: str, raw: bytes) -> Answered:
    return await asyncio.to_thread(submit, app.inbound_port, [rcpt], raw)


async def deliveries(api: Api, campaign_id: int) -> dict[str, str]:
    """Each recipient's delivery status."""
    response = await api.client.get(
        f"/api/v1/email/campaign/{campaign_id}/deliveries", params={"limit": 1000}
    )
    assert response.status_code == 200, response.text
    return {item["recipient"]: item["status"] for item in response.json()["items"]}


async def suppressed(api: Api) -> dict[str, str]:
    response = await api.client.get("/api/v1/email/suppressions", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return {item["address"]: item["reason"] for item in response.json()["items"]}


def forged(address: str) -> str:
    """``address`` with the last character of its MAC changed: a valid-looking token."""
    local, _, domain = address.rpartition("@")
    last = "a" if local[-1] != "a" else "b"
    return f"{local[:-1]}{last}@{domain}"


async def test_bounces_complaints_and_soft_bounces_suppress_their_addresses(
    stack: Stack, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    async with deployed(stack, settings(smtp_sink), tmp_path) as (app, api):
        await asyncio.to_thread(app.wait_joined)
        people = ["ann@example.com", "bob@example.com", "cat@example.com", "dan@example.com"]
        first, paths = await sent(api, smtp_sink, people)

        # A hard bounce: the delivery BOUNCED, the address suppressed.
        assert await send(app, paths["ann@example.com"], HARD) == Answered([250], 250)
        # A complaint: COMPLAINED and suppressed.
        assert await send(app, paths["bob@example.com"], COMPLAINT) == Answered([250], 250)
        # A forged token naming cat's real Message-ID and address: nothing changes.
        message_id = next(
            str(a.message["Message-ID"]) for a in smtp_sink.arrivals if a.rcpt == "cat@example.com"
        )
        raw = dsn("cat@example.com", message_id)
        assert await send(app, forged(paths["cat@example.com"]), raw) == Answered([250], 250)
        # No open relay.
        assert await send(app, "someone@example.org", HARD) == Answered([550], None)

        assert await deliveries(api, first) == {
            "ann@example.com": "BOUNCED",
            "bob@example.com": "COMPLAINED",
            "cat@example.com": "SENT",
            "dan@example.com": "SENT",
        }
        assert await suppressed(api) == {
            "ann@example.com": "bounce",
            "bob@example.com": "complaint",
        }

        # Soft bounces of three campaigns in a row suppress the address on the third.
        for i in range(3):
            assert "dan@example.com" not in await suppressed(api), f"after {i} soft bounces"
            _, dan = await sent(api, smtp_sink, ["dan@example.com"])
            assert await send(app, dan["dan@example.com"], SOFT) == Answered([250], 250)
        assert (await suppressed(api))["dan@example.com"] == "bounce"

        # A later campaign skips every suppressed address.
        later = await api.campaign(campaign(people))
        await api.completed(later["campaignId"])
        assert await deliveries(api, later["campaignId"]) == {
            "ann@example.com": "SUPPRESSED",
            "bob@example.com": "SUPPRESSED",
            "cat@example.com": "SENT",
            "dan@example.com": "SUPPRESSED",
        }
        types = {e["type"] for e in await api.feed(first)}
        assert {"delivery.bounced", "delivery.complained"} <= types
        assert not app.tracebacks(), app.output()


async def test_the_circuit_breaker_pauses_a_campaign_that_bounces(
    stack: Stack, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    # 22 recipients at 20 an hour: 20 are sent now, 2 wait, so the campaign is still
    # running when 2 of the 20 (10%, over the limit of 5%) bounce.
    env = settings(smtp_sink, MAILSCHED_BREAKER_MIN_SENDS="20")
    async with deployed(stack, env, tmp_path) as (app, api):
        await asyncio.to_thread(app.wait_joined)
        people = [f"user{i}@example.com" for i in range(22)]
        created = await api.campaign(campaign(people, hourly_limit=20))
        campaign_id = created["campaignId"]
        await twenty_sent(api, campaign_id)
        paths = {a.rcpt: a.mail_from for a in smtp_sink.arrivals}

        assert await send(app, paths["user0@example.com"], HARD) == Answered([250], 250)
        view = (await api.client.get(f"/api/v1/email/campaign/{campaign_id}")).json()
        assert view["status"] == "RUNNING", view
        assert await send(app, paths["user1@example.com"], HARD) == Answered([250], 250)

        view = (await api.client.get(f"/api/v1/email/campaign/{campaign_id}")).json()
        assert view["status"] == "PAUSED", view
        assert "hard bounces at 10.0% of 20 sends" in view["pauseReason"], view
        paused = [e for e in await api.feed(campaign_id) if e["type"] == "campaign.paused"]
        assert [e["data"]["reason"] for e in paused] == [view["pauseReason"]]
        assert not app.tracebacks(), app.output()


async def twenty_sent(api: Api, campaign_id: int, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while True:
        view = (await api.client.get(f"/api/v1/email/campaign/{campaign_id}")).json()
        if view["counts"].get("SENT") == 20:
            return
        assert time.monotonic() < deadline, f"not 20 sent in {within} s: {view}"
        await asyncio.sleep(0.2)


def test_mailsched_inbound_alone_needs_only_a_database_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    # Fails if `mailsched inbound` asks for Kafka, does not listen where it is told,
    # or does not exit 0 on SIGTERM.
    port = free_port()
    env = {
        "MAILSCHED_DATABASE_URL": f"sqlite:///{tmp_path / 'inbound.db'}",
        "MAILSCHED_BOUNCE_ADDRESS": BOUNCES,
        "MAILSCHED_INBOUND_PORT": str(port),
    }
    inbound = Mailsched(["inbound"], env, tmp_path, "inbound").start()
    try:
        inbound.wait_log(f"inbound SMTP server listening on 127.0.0.1:{port}")
        assert submit(port, ["postmaster@bounce.example.com"], HARD) == Answered([250], 250)
        assert submit(port, ["someone@example.org"], HARD) == Answered([550], None)
    finally:
        code = inbound.stop()
    assert code == 0, inbound.output()
    assert "Traceback" not in inbound.output()

    without = Mailsched(["inbound"], env | {"MAILSCHED_BOUNCE_ADDRESS": ""}, tmp_path, "bare")
    with without:
        assert without.proc is not None
        assert without.proc.wait(60) == 1
    assert "needs MAILSCHED_BOUNCE_ADDRESS" in without.output()
