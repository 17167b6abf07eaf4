"""6. Head-of-line blocking: a small campaign started while a bulk send is under way.

Messages are keyed by campaign, so a small campaign that shares a partition, or a
worker, with a bulk one can wait behind it. One worker sends ``bulk`` deliveries
due now (ten campaigns); once sending is under way a 10-recipient campaign with
``delaySeconds: 1`` starts a second later, and each of its emails is timed:
``sent_at`` behind its first plan (``planned_at``, else ``scheduled_at``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import dbstats, waits
from bench.client import campaign_body, http_client, post, post_all
from bench.sink import SmtpSink
from bench.stack import Servers, Stack, port_of

SMALL = 10
#: Sends of the bulk that must be done before the small campaign is posted: under way.
UNDER_WAY = 0.02


async def run(
    servers: Servers, workdir: Path, sink: SmtpSink, bulk: int, settings: dict[str, str]
) -> dict[str, Any]:
    """Post the bulk, wait until some of it is sent, post the small campaign one second
    ahead, wait for everything; each small email's lateness, and where the bulk stood."""
    async with Stack(servers, workdir, common=settings) as stack, http_client() as client:
        api = stack.start("api")
        stack.start("worker", smtp_url=sink.url)
        bulk_bodies = (campaign_body(bulk // 10, tag=f"bulk{k}") for k in range(10))
        await post_all(client, port_of(api), stack.api_key, bulk_bodies, parallel=1)
        await _until_sent(stack, max(1, int(UNDER_WAY * bulk)), within=60 + bulk / 1000)
        bulk_done_before = await dbstats.finished(stack.db)
        start = datetime.now(UTC) + timedelta(seconds=1)
        small = campaign_body(SMALL, start=start, delay=1, tag="small")
        posted = await post(client, port_of(api), small, stack.api_key)
        done = await waits.finished(stack, bulk + SMALL, within=60 + bulk / 500)
        late = await dbstats.campaign_lateness(stack.db, posted.campaign_id)
        bulk_end = await dbstats.last_sent(stack.db, besides=posted.campaign_id)
    sent = [x for x in late if x is not None]
    return {
        "bulk": bulk,
        "bulk_done_when_posted": bulk_done_before,
        # After the small campaign's first plan: > 9 s means every one of its emails was
        # due while the bulk was still sending.
        "bulk_ended_after_start_s": round((bulk_end - start).total_seconds(), 2)
        if bulk_end
        else None,
        "small": SMALL,
        "small_sent": len(sent),
        "finished": done,
        "late_ms": [None if x is None else round(1000 * x) for x in late],
        "max_late_ms": round(1000 * max(sent)) if sent else None,
    }


async def _until_sent(stack: Stack, count: int, within: float) -> None:
    if await waits.finished(stack, count, within) < count:
        raise RuntimeError(f"the bulk did not reach {count:,} sends in {within:.0f} s")
