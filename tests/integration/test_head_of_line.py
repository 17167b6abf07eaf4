"""No head-of-line blocking, on each stack: a campaign due now is sent on time while a
backlog of another campaign's emails waits for the same worker.

The backlog's first email is held at the SMTP server until the small campaign's
email has been dispatched: by then the backlog is queued ahead of it. A worker
that took the queue in order (as before the lanes) would send it last.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mailsched.config import Settings
from mailsched.domain.model import DeliveryStatus
from mailsched.producer.schemas import CampaignRequest
from mailsched.store.tables import deliveries
from tests.conftest import Stack
from tests.support.running import completed, create, load_settings, running, wait_until
from tests.support.smtp_sink import Gate, SmtpSink

BACKLOG = 600
USER = 7


@pytest.fixture
def settings(stack: Stack, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch) -> Settings:
    return load_settings(
        monkeypatch,
        stack.env(),
        smtp_sink.url,
        DISPATCH_INTERVAL_SECONDS="0.05",
        # Small batches, one at a time: the backlog cannot all be in the worker's hands.
        WORKER_BATCH_SIZE="10",
        WORKER_INFLIGHT_BATCHES="1",
    )


def request(prefix: str, count: int) -> CampaignRequest:
    return CampaignRequest.model_validate(
        {
            "userId": USER,
            "subject": prefix,
            "body": "Hello\n",
            "startTime": datetime.now(UTC).isoformat(),
            "delaySeconds": 0,
            "hourlyLimit": 100_000,
            "recipients": [f"{prefix}{i}@example.com" for i in range(count)],
        }
    )


async def test_a_campaign_due_now_is_not_sent_behind_another_ones_backlog(
    settings: Settings, smtp_sink: SmtpSink
) -> None:
    smtp_sink.gate = gate = Gate()
    d = deliveries.c
    async with running(settings) as app:
        await create(app, request("bulk", BACKLOG))
        await wait_until(gate.waiting.is_set, within=30)  # the backlog is being sent
        small = await create(app, request("small", 1))

        async def small_is_queued() -> bool:
            status = await app.db.run(
                lambda conn: conn.scalar(
                    deliveries.select()
                    .with_only_columns(d.status)
                    .where(d.campaign_id == small.campaign_id)
                )
            )
            return status != DeliveryStatus.SCHEDULED

        await wait_until(small_is_queued, within=30)
        gate.opened.set()
        await wait_until(lambda: completed(app, small.campaign_id), within=60)
        await wait_until(lambda: len(smtp_sink.arrivals) == BACKLOG + 1, within=120)

    order = [a.rcpt for a in smtp_sink.arrivals]
    # The backlog's crowd on the on-time lane (50) and the batches in hand come first.
    assert order.index("small0@example.com") < BACKLOG // 4, order.index("small0@example.com")
