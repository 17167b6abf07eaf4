"""The VERP return path through real processes, on both stacks.

Embedded: one ``mailsched run``. Real: ``mailsched api``, ``mailsched worker`` and
``mailsched webhooks`` on MariaDB + Kafka. A small campaign goes to the SMTP sink on
loopback, which records each message's envelope sender (``MAIL FROM``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from mailsched.mail.verp import ReturnPath
from mailsched.store import secrets
from mailsched.store.db import Database
from tests.conftest import Stack
from tests.support.deployment import deployed
from tests.support.smtp_sink import Arrival, SmtpSink

pytestmark = pytest.mark.e2e

FROM = "news@example.com"
BOUNCES = "bounces@bounce.example.com"
RECIPIENTS = [f"user{i}@example.com" for i in range(4)]


def delivery_id(arrival: Arrival) -> int:
    # Message-ID is <c{campaign}.d{delivery}@domain>.
    return int(str(arrival.message["Message-ID"]).split("@")[0].split(".d")[1])


async def send_campaign(stack: Stack, env: dict[str, str], tmp_path: Path) -> int:
    """Deploy with ``env``, send a campaign to :data:`RECIPIENTS`; its id."""
    async with deployed(stack, env, tmp_path) as (app, api):
        await asyncio.to_thread(app.wait_joined)
        created = await api.campaign(
            {
                "userId": 1,
                "subject": "Bounces come back to us",
                "body": "Hello.",
                "startTime": "2026-01-25T12:00:00Z",
                "delaySeconds": 0,
                "hourlyLimit": 1000,
                "recipients": RECIPIENTS,
            }
        )
        await api.completed(created["campaignId"])
        assert not app.tracebacks(), app.output()
    campaign_id: int = created["campaignId"]
    return campaign_id


async def verp_key(database_url: str) -> bytes:
    """The key the deployment's workers used: the one its database shares."""
    db = Database.from_url(database_url)
    try:
        return bytes.fromhex(await db.run(lambda conn: secrets.get_or_create(conn, "verp")))
    finally:
        await db.dispose()


async def test_each_envelope_sender_is_its_deliverys_signed_return_path(
    stack: Stack, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    # Fails if an envelope sender is not bounces+<token>@bounce.example.com, if a
    # token does not verify with the key the deployment shares through its database
    # (to the delivery of that very message), or if the From header changed.
    env = {
        "MAILSCHED_FROM": FROM,
        "MAILSCHED_SMTP_URL": smtp_sink.url,
        "MAILSCHED_BOUNCE_ADDRESS": BOUNCES,
    }
    campaign_id = await send_campaign(stack, env, tmp_path)
    return_path = ReturnPath(BOUNCES, await verp_key(stack.database_url))

    arrivals = smtp_sink.arrivals
    assert Counter(a.rcpt for a in arrivals) == Counter(RECIPIENTS)
    for arrival in arrivals:
        assert arrival.campaign_id == campaign_id
        assert arrival.mail_from.startswith("bounces+"), arrival.mail_from
        assert arrival.mail_from.endswith("@bounce.example.com"), arrival.mail_from
        assert return_path.delivery_of(arrival.mail_from) == delivery_id(arrival)
        assert arrival.message["From"] == FROM
    assert len({a.mail_from for a in arrivals}) == len(RECIPIENTS)


async def test_without_a_bounce_address_the_envelope_sender_is_the_from_address(
    stack: Stack, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    env = {"MAILSCHED_FROM": FROM, "MAILSCHED_SMTP_URL": smtp_sink.url}
    await send_campaign(stack, env, tmp_path)

    arrivals = smtp_sink.arrivals
    assert Counter(a.rcpt for a in arrivals) == Counter(RECIPIENTS)
    assert {a.mail_from for a in arrivals} == {FROM}
    assert {a.message["From"] for a in arrivals} == {FROM}
