"""The whole flow in one event loop, on each stack: POST -> dispatcher -> queue -> worker -> SMTP.

Every check here is made where the mail arrives (a real SMTP server on loopback)
and again on the times the database recorded.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from mailsched.config import Settings
from mailsched.errors import Invalid
from mailsched.producer.api import create_app
from mailsched.producer.schemas import CampaignRequest
from mailsched.queue.memory import MemoryQueue
from tests.conftest import Stack
from tests.support.rules import max_in_window, min_gap
from tests.support.running import completed, create, load_settings, running, wait_until
from tests.support.smtp_sink import SmtpSink

WINDOW = 2.0
USER = 7


@pytest.fixture
def settings(stack: Stack, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch) -> Settings:
    return load_settings(
        monkeypatch,
        stack.env(),
        smtp_sink.url,
        RATE_WINDOW_SECONDS=str(WINDOW),
        DISPATCH_INTERVAL_SECONDS="0.05",
        DISPATCH_LOOKAHEAD_SECONDS="0.3",
        HOLD_SECONDS="1.0",
        RETRY_BASE_SECONDS="0.2",
        RETRY_CAP_SECONDS="0.5",
        MAX_ATTEMPTS="3",
    )


def request(recipients: list[str], delay: int = 0, limit: int = 1000) -> CampaignRequest:
    return CampaignRequest.model_validate(
        {
            "userId": USER,
            "subject": "Grüße from mailsched",
            "body": "Hello,\nthis is the campaign body.\n",
            "startTime": datetime(2026, 1, 25, 12, tzinfo=UTC).isoformat(),
            "delaySeconds": delay,
            "hourlyLimit": limit,
            "recipients": recipients,
        }
    )


def addresses(n: int, prefix: str = "user") -> list[str]:
    return [f"{prefix}{i}@example.com" for i in range(n)]


async def test_every_recipient_gets_one_email_within_both_rules(
    settings: Settings, smtp_sink: SmtpSink
) -> None:
    recipients = addresses(5)
    async with running(settings) as app:
        created = await create(app, request(recipients, delay=1, limit=2))
        await wait_until(lambda: completed(app, created.campaign_id), within=30)
        view = await app.campaigns().get(USER, created.campaign_id)
        page = await app.campaigns().deliveries(USER, created.campaign_id, None, 0, 100)

    arrivals = smtp_sink.arrivals
    assert Counter(a.rcpt for a in arrivals) == Counter(recipients)
    times = [a.at for a in arrivals]
    assert min_gap(times) >= 1.0
    assert max_in_window(times, WINDOW) <= 2
    message = arrivals[0].message
    assert message["Subject"] == "Grüße from mailsched"
    assert message["From"] == "campaigns@example.com"
    body = message.get_body()
    assert body is not None
    assert body.get_content().replace("\r\n", "\n") == "Hello,\nthis is the campaign body.\n"
    assert len({a.message["Message-ID"] for a in arrivals}) == len(recipients)

    assert view.counts["SENT"] == len(recipients)
    assert view.first_sent_at is not None and view.last_sent_at is not None
    sent = [item.sent_at.timestamp() for item in page.items if item.sent_at]
    assert min_gap(sent) >= 1.0
    assert max_in_window(sent, WINDOW) <= 2
    assert all(item.attempts == 1 for item in page.items)
    for item in page.items:  # never before its planned time
        assert item.sent_at is not None and item.sent_at >= item.scheduled_at


async def test_transient_replies_are_retried(settings: Settings, smtp_sink: SmtpSink) -> None:
    refused: Counter[str] = Counter()

    def policy(address: str) -> str | None:
        if address.startswith("flaky") and refused[address] < 1:
            refused[address] += 1
            return "441 4.4.1 no answer from host"
        return None

    smtp_sink.rcpt_policy = policy
    async with running(settings) as app:
        created = await create(app, request(["flaky@example.com", "ok@example.com"]))
        await wait_until(lambda: completed(app, created.campaign_id), within=30)
        page = await app.campaigns().deliveries(USER, created.campaign_id, None, 0, 100)

    assert smtp_sink.per_recipient() == Counter({"flaky@example.com": 1, "ok@example.com": 1})
    flaky = next(i for i in page.items if i.recipient.startswith("flaky"))
    assert (flaky.status, flaky.attempts) == ("SENT", 2)
    assert flaky.last_error is None


async def test_a_slow_down_reply_postpones_the_campaign_without_burning_attempts(
    settings: Settings, smtp_sink: SmtpSink
) -> None:
    slowed: list[float] = []

    def policy(address: str) -> str | None:
        if address.startswith("user0") and not slowed:
            slowed.append(time.time())
            return "451 4.7.1 slow down, please"
        return None

    smtp_sink.rcpt_policy = policy
    recipients = addresses(3)
    # A pause of 1.5-3 s (half to all of the retry base), longer than the 1 s delay.
    settings = settings.model_copy(update={"retry_base_seconds": 3.0, "retry_cap_seconds": 3.0})
    async with running(settings) as app:
        created = await create(app, request(recipients, delay=1))
        await wait_until(lambda: completed(app, created.campaign_id), within=30)
        page = await app.campaigns().deliveries(USER, created.campaign_id, None, 0, 100)

    assert smtp_sink.per_recipient() == Counter(recipients)
    assert all(item.attempts == 1 for item in page.items), page.items
    # Nothing of the campaign went out during the pause.
    assert min(a.at for a in smtp_sink.arrivals) >= slowed[0] + 1.5


async def test_permanent_refusal_fails_the_delivery_only(
    settings: Settings, smtp_sink: SmtpSink
) -> None:
    smtp_sink.rcpt_policy = lambda a: "550 5.1.1 no such user" if a.startswith("gone") else None
    async with running(settings) as app:
        created = await create(app, request(["gone@example.com", "ok@example.com"]))
        await wait_until(lambda: completed(app, created.campaign_id), within=30)
        page = await app.campaigns().deliveries(USER, created.campaign_id, None, 0, 100)
        view = await app.campaigns().get(USER, created.campaign_id)
        queue = app.queue
        if isinstance(queue, MemoryQueue):
            # The relay publishes it from the outbox, a moment after the outcome.
            await wait_until(lambda: queue.dead_letters, within=10)
            dead = [d.delivery.delivery_id for d in queue.dead_letters]
        else:
            dead = None

    gone = next(i for i in page.items if i.recipient.startswith("gone"))
    assert gone.status == "FAILED" and gone.attempts == 1
    assert gone.last_error is not None and "550" in gone.last_error
    assert view.counts["FAILED"] == 1 and view.counts["SENT"] == 1
    assert smtp_sink.per_recipient() == Counter({"ok@example.com": 1})
    if dead is not None:
        assert dead == [gone.delivery_id]


async def test_exhausted_retries_fail(settings: Settings, smtp_sink: SmtpSink) -> None:
    smtp_sink.rcpt_policy = lambda a: "441 4.4.1 no answer from host"
    async with running(settings) as app:
        created = await create(app, request(["busy@example.com"]))
        await wait_until(lambda: completed(app, created.campaign_id), within=30)
        page = await app.campaigns().deliveries(USER, created.campaign_id, None, 0, 100)
    (item,) = page.items
    assert (item.status, item.attempts) == ("FAILED", settings.max_attempts)
    assert smtp_sink.arrivals == []


async def test_a_late_start_is_replanned_not_sent_in_a_burst(
    settings: Settings, smtp_sink: SmtpSink
) -> None:
    recipients = addresses(3)
    async with running(settings, dispatcher=False, worker=False) as app:
        created = await create(app, request(recipients, delay=2))
    await asyncio.sleep(4.5)  # every delivery is now overdue: the worker was "down"
    async with running(settings) as app:
        await wait_until(lambda: completed(app, created.campaign_id), within=30)
        page = await app.campaigns().deliveries(USER, created.campaign_id, None, 0, 100)
    times = [a.at for a in smtp_sink.arrivals]
    assert len(times) == len(recipients)
    assert min_gap(times) >= 2.0
    # The delay (2 s) is longer than a worker holds (1 s): the rest was planned again.
    planned = [item.scheduled_at for item in page.items]
    assert planned[1] - planned[0] >= timedelta(seconds=2)
    assert planned[1] > created.first_send_at + timedelta(seconds=4)  # was first + 2 s


async def test_pause_stops_sending_and_resume_sends_the_rest_exactly_once(
    settings: Settings, smtp_sink: SmtpSink
) -> None:
    recipients = addresses(8)
    async with running(settings) as app:
        created = await create(app, request(recipients, delay=1))
        smtp_sink.wait_for(2, timeout=30)
        paused = await app.campaigns().pause(USER, created.campaign_id)
        at_pause = len(smtp_sink.arrivals)
        await asyncio.sleep(2.5)  # more than two delays: nothing may start now
        during_pause = len(smtp_sink.arrivals)
        resumed_at = time.time()
        await app.campaigns().resume(USER, created.campaign_id)
        await wait_until(lambda: completed(app, created.campaign_id), within=40)

    # Only a send already claimed when pause returned may complete after it.
    assert during_pause - at_pause <= paused.in_flight
    assert smtp_sink.per_recipient() == Counter(recipients)  # none skipped, none twice
    after = [a.at for a in smtp_sink.arrivals if a.at >= resumed_at]
    assert len(after) == len(recipients) - during_pause
    assert min_gap([a.at for a in smtp_sink.arrivals]) >= 1.0


async def test_cancel_sends_nothing_more(settings: Settings, smtp_sink: SmtpSink) -> None:
    recipients = addresses(6)
    async with running(settings) as app:
        created = await create(app, request(recipients, delay=1))
        smtp_sink.wait_for(2, timeout=30)
        cancelled = await app.campaigns().cancel(USER, created.campaign_id)
        at_cancel = len(smtp_sink.arrivals)
        await asyncio.sleep(2.5)
        view = await app.campaigns().get(USER, created.campaign_id)

    assert len(smtp_sink.arrivals) - at_cancel <= cancelled.in_flight
    assert view.status == "CANCELLED"
    sent = len(smtp_sink.arrivals)
    assert view.counts["SENT"] == sent
    assert view.counts["CANCELLED"] == len(recipients) - sent


async def test_personalized_mail_with_unsubscribe_and_suppression(
    settings: Settings, smtp_sink: SmtpSink
) -> None:
    personalized = CampaignRequest.model_validate(
        {
            "userId": USER,
            "subject": "Hello {{ name or 'friend' }}, your {{ plan }} plan",
            "body": "Dear {{ name or 'friend' }},\nyour plan is {{ plan }}.\n",
            "htmlBody": "<p>Dear {{ name or 'friend' }}, plan <b>{{ plan }}</b></p>",
            "startTime": datetime(2026, 1, 25, 12, tzinfo=UTC).isoformat(),
            "delaySeconds": 0,
            "hourlyLimit": 100,
            "recipients": [
                {"email": "ann@example.com", "name": "Ann", "vars": {"plan": "pro"}},
                {"email": "bob@example.com", "vars": {"plan": "free"}},
            ],
        }
    )
    async with running(settings) as app:
        created = await create(app, personalized)
        await wait_until(lambda: completed(app, created.campaign_id), within=30)
        by_rcpt = {a.rcpt: a.message for a in smtp_sink.arrivals}
        assert by_rcpt["ann@example.com"]["Subject"] == "Hello Ann, your pro plan"
        assert by_rcpt["bob@example.com"]["Subject"] == "Hello friend, your free plan"
        ann = by_rcpt["ann@example.com"]
        assert ann.get_content_type() == "multipart/alternative"
        html = ann.get_body(preferencelist=("html",))
        assert html is not None and "<b>pro</b>" in html.get_content()
        assert ann["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        url = str(ann["List-Unsubscribe"]).split(",")[0].strip().strip("<>")
        path = url.split("://", 1)[1].split("/", 1)[1]

        # Ann unsubscribes with one click (RFC 8058) ...
        signer = await app.unsubscribe_signer()
        api = create_app(app.campaigns(), app.caller(), routers=app.public_routes(signer))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=api), base_url="http://test"
        ) as client:
            response = await client.post(
                "/" + path,
                content="List-Unsubscribe=One-Click",
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
            assert response.status_code == 200, response.text

        # ... and the next campaign skips her.
        again = await create(app, request(["ann@example.com", "cid@example.com"]))
        await wait_until(lambda: completed(app, again.campaign_id), within=30)
        page = await app.campaigns().deliveries(USER, again.campaign_id, None, 0, 10)

    statuses = {item.recipient: item.status for item in page.items}
    assert statuses == {"ann@example.com": "SUPPRESSED", "cid@example.com": "SENT"}
    assert smtp_sink.per_recipient()["ann@example.com"] == 1


async def test_a_missing_template_variable_is_refused_at_creation(settings: Settings) -> None:
    bad = request(["a@example.com"]).model_copy(update={"subject": "Hi {{ first_name }}"})
    async with running(settings, dispatcher=False, worker=False) as app:
        with pytest.raises(Invalid) as refused:
            await app.campaigns().create(bad)
    assert refused.value.problems == [("recipients.0.vars", "missing variables: first_name")]
