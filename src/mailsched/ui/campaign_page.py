"""What one campaign's page shows: its view, chart, next sends, frequent errors, a
page of its deliveries and the controls that apply to its status.

Ownership is checked once, by :meth:`Campaigns.get` (another user's campaign is
:class:`~mailsched.errors.NotFound`); the rest is read in one transaction
through :mod:`mailsched.ui.queries`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.model import CampaignStatus, DeliveryStatus
from mailsched.domain.shaping import Shaping
from mailsched.producer.campaigns import Campaigns
from mailsched.producer.schemas import CampaignView
from mailsched.store import campaigns as store
from mailsched.store import shaping as groups_store
from mailsched.store.db import Database
from mailsched.ui import queries
from mailsched.ui.chart import describe, sends_chart
from mailsched.ui.limits_view import GroupLine, group_lines
from mailsched.ui.progress import Progress, rate_in

#: Rows of the deliveries table per page.
DELIVERY_PAGE = 50
#: The next sends listed.
NEXT_DUE = 10
#: The distinct errors listed.
TOP_ERRORS = 5
#: A longer search is cut: addresses are at most 320 characters.
MAX_SEARCH = 320

_S = CampaignStatus
#: The statuses each control applies to (as the service methods allow them).
CONTROLS: dict[str, frozenset[CampaignStatus]] = {
    "schedule": frozenset({_S.DRAFT}),
    "pause": frozenset({_S.SCHEDULED, _S.RUNNING}),
    "resume": frozenset({_S.PAUSED}),
    "cancel": frozenset({_S.DRAFT, _S.SCHEDULED, _S.RUNNING, _S.PAUSED}),
    "retry-failed": frozenset({_S.SCHEDULED, _S.RUNNING, _S.COMPLETED}),
}


@dataclass(frozen=True, slots=True)
class Filter:
    """The deliveries table's GET form: status, recipient search and cursor."""

    status: DeliveryStatus | None = None
    recipient: str = ""
    after: int = 0

    @classmethod
    def parse(cls, status: str, recipient: str, after: str) -> Filter:
        """Anything unknown is ignored rather than refused."""
        known = {s.value for s in DeliveryStatus}
        return cls(
            DeliveryStatus(status) if status in known else None,
            recipient.strip()[:MAX_SEARCH],
            int(after) if after.isdigit() else 0,
        )


@dataclass(frozen=True, slots=True)
class CampaignPage:
    """Everything the template needs."""

    progress: Progress
    chart: str
    chart_text: str
    next_due: list[queries.Due]
    errors: list[tuple[str, int]]
    rows: list[store.DeliveryView]
    next_after: int | None
    controls: list[str]
    #: The shaping groups (none without a shaping file).
    limits: list[GroupLine]

    @property
    def view(self) -> CampaignView:
        return self.progress.view


def controls(view: CampaignView) -> list[str]:
    """The controls that apply now: Retry failed only with something FAILED."""
    shown = [name for name, allowed in CONTROLS.items() if view.status in allowed]
    if not view.counts.get(DeliveryStatus.FAILED, 0):
        shown = [name for name in shown if name != "retry-failed"]
    return shown


async def load(
    campaigns: Campaigns,
    db: Database,
    user_id: int,
    campaign_id: int,
    wanted: Filter,
    window: timedelta,
    now: datetime,
    shaping: Shaping | None = None,
) -> CampaignPage:
    """The page of the user's campaign; raises ``NotFound`` for anyone else's."""
    shaping = shaping or Shaping()
    view = await campaigns.get(user_id, campaign_id)

    async def work(
        conn: AsyncConnection,
    ) -> tuple[
        tuple[list[datetime], list[datetime]],
        list[queries.Due],
        list[tuple[str, int]],
        list[store.DeliveryView],
        int,
        dict[str, groups_store.GroupRow],
    ]:
        return (
            await queries.send_times(conn, campaign_id),
            await queries.next_due(conn, campaign_id, NEXT_DUE),
            await queries.top_errors(conn, campaign_id, TOP_ERRORS),
            await store.list_deliveries(
                conn,
                campaign_id,
                wanted.status,
                wanted.after,
                DELIVERY_PAGE + 1,
                wanted.recipient,
            ),
            await rate_in(conn, now, campaign_id),
            await groups_store.states(conn) if shaping else {},
        )

    (planned, sent), due, errors, rows, rate, groups = await db.run(work)
    more = len(rows) > DELIVERY_PAGE
    rows = rows[:DELIVERY_PAGE]
    limit, delay = view.hourly_limit, view.delay_seconds
    # The times are naive UTC (see queries.send_times): so is the chart's "now".
    naive_now = now.astimezone(UTC).replace(tzinfo=None)
    return CampaignPage(
        progress=Progress(view, rate),
        chart=sends_chart(planned, sent, limit, delay, window, naive_now),
        chart_text=describe(len(planned), sent, limit, delay, window),
        next_due=due,
        errors=errors,
        rows=rows,
        next_after=rows[-1].id if more and rows else None,
        controls=controls(view),
        limits=group_lines(shaping, groups, [d.recipient for d in due], now),
    )
