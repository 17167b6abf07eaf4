"""A campaign's progress as the dashboard shows it: share done, sent/total, rate, end.

Built from the API's own view (:meth:`Campaigns.get`), so the page and the API
cannot disagree; only the rate (sends finished in the last minute) is read here,
for all of a list's campaigns in one query (:func:`mailsched.ui.queries.finishes`).

Cost per poll of a page of 20 campaigns: 20 views (3 statements each, in a
transaction each) and one statement for the rates; it was 4 statements and 2
transactions per campaign (81 statements with the session's lookup, now 62).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.model import SENT_DELIVERY_STATUSES, CampaignStatus, DeliveryStatus
from mailsched.errors import NotFound
from mailsched.producer.campaigns import Campaigns
from mailsched.producer.schemas import CampaignView
from mailsched.store.db import Database
from mailsched.ui import queries

#: Recipients in these statuses need nothing more (a bounce or a complaint comes
#: after the send).
DONE = (
    DeliveryStatus.SENT,
    DeliveryStatus.FAILED,
    DeliveryStatus.SUPPRESSED,
    DeliveryStatus.CANCELLED,
    DeliveryStatus.BOUNCED,
    DeliveryStatus.COMPLAINED,
)
#: A rate above this many a minute is shown as "at least": the count stops there.
RATE_CAP = 10_000


@dataclass(frozen=True, slots=True)
class Progress:
    """One campaign's row on the list."""

    view: CampaignView
    #: Sends that finished in the last minute.
    rate: int

    @property
    def done(self) -> int:
        return sum(self.view.counts.get(status, 0) for status in DONE)

    @property
    def percent(self) -> int:
        """Whole percent done, rounded down: 100 only once every recipient is done."""
        total = self.view.recipient_count
        return 100 if total == 0 else min(100, self.done * 100 // total)

    @property
    def active(self) -> bool:
        """Whether the numbers may still move by themselves (worth polling)."""
        return self.view.status in (CampaignStatus.SCHEDULED, CampaignStatus.RUNNING)

    def as_json(self) -> dict[str, object]:
        """The row for the page's script (``ui.js``)."""
        return {
            "id": self.view.campaign_id,
            "status": self.view.status.value,
            "percent": self.percent,
            # Bounced and complained-of emails were sent too.
            "sent": sum(self.view.counts.get(s, 0) for s in SENT_DELIVERY_STATUSES),
            "total": self.view.recipient_count,
            "rate": rate_text(self.rate, self.active and self.view.first_sent_at is not None),
            "completion": when(self.view.estimated_completion_at),
            "active": self.active,
            "counts": {status.value: self.view.counts.get(status, 0) for status in DeliveryStatus},
        }


def rate_text(rate: int, active: bool) -> str:
    """ "12/min", or a dash when nothing was sent in the last minute of a quiet campaign."""
    if rate == 0 and not active:
        return "—"
    return f"{rate}+/min" if rate >= RATE_CAP else f"{rate}/min"


def when(at: datetime | None) -> str:
    """A time as the page shows it: UTC to the second, or a dash."""
    return "—" if at is None else at.strftime("%Y-%m-%d %H:%M:%S UTC")


async def progress(
    campaigns: Campaigns,
    db: Database,
    clock: Callable[[], datetime],
    user_id: int,
    ids: Iterable[int],
) -> list[Progress]:
    """The progress of those of ``ids`` that are the user's, in the order given;
    another user's campaign is left out as if it did not exist."""
    views: list[CampaignView] = []
    for campaign_id in ids:
        try:
            views.append(await campaigns.get(user_id, campaign_id))
        except NotFound:
            continue
    if not views:
        return []
    now = clock()

    async def work(conn: AsyncConnection) -> dict[int, int]:
        return await rates_in(conn, now, [view.campaign_id for view in views])

    rates = await db.run(work)
    return [Progress(view, rates.get(view.campaign_id, 0)) for view in views]


async def rates_in(conn: AsyncConnection, now: datetime, campaign_ids: list[int]) -> dict[int, int]:
    """Each campaign's sends that finished in the minute before ``now``, or are still in
    flight (at most the cap); a campaign with none is left out."""
    counts = await queries.finishes(conn, campaign_ids, now - timedelta(minutes=1))
    return {campaign_id: min(count, RATE_CAP) for campaign_id, count in counts.items()}


async def rate_in(conn: AsyncConnection, now: datetime, campaign_id: int) -> int:
    """Sends of the campaign that finished in the minute before ``now`` (at most the cap)."""
    return (await rates_in(conn, now, [campaign_id])).get(campaign_id, 0)
