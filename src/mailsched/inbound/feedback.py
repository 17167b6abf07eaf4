"""What a bounce or a complaint does, wherever it came from (the bounce mailbox or
a provider's webhook): one service, one transaction per received message.

- A hard bounce moves the delivery from SENT to BOUNCED and suppresses the address
  for the campaign's user (for ``MAILSCHED_BOUNCE_SUPPRESSION_DAYS``, or for ever).
- A complaint moves it (SENT or BOUNCED) to COMPLAINED and suppresses the address.
- A soft bounce is recorded, with a ``delivery.bounced`` event of kind soft; the
  address is suppressed at ``MAILSCHED_SOFT_BOUNCE_LIMIT`` soft bounces of distinct
  deliveries in a row, across campaigns (a hard bounce, a complaint or removing
  the suppression starts the count again).
- The circuit breaker: after a hard bounce or a complaint, a campaign still sending
  with at least ``MAILSCHED_BREAKER_MIN_SENDS`` sends whose hard-bounce or
  complaint rate exceeds its limit pauses by itself, saying why.

Every report is kept in ``bounces``; every status change goes through
:mod:`mailsched.store.transitions`, with its event.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.config import FeedbackConfig
from mailsched.domain.events import EventType
from mailsched.domain.model import BOUNCE, COMPLAIN, PAUSE, CampaignStatus
from mailsched.inbound.reports import Kind, Report
from mailsched.store import campaigns as campaign_store
from mailsched.store import feedback, suppressions, transitions
from mailsched.store.db import Database

log = logging.getLogger(__name__)

#: Why an address is suppressed, beside ``manual`` and ``unsubscribe``.
BOUNCE_REASON, COMPLAINT_REASON = "bounce", "complaint"


@dataclass(frozen=True, slots=True)
class Received:
    """One report, tied to the delivery it is about (by a verified return path, or a
    provider's authenticated event)."""

    delivery_id: int
    report: Report


class Outcome(StrEnum):
    """What one report did."""

    BOUNCED = "bounced"
    COMPLAINED = "complained"
    SOFT = "soft"
    #: Recorded, but the delivery was not SENT (a report about it came already).
    RECORDED = "recorded"
    #: No such delivery.
    UNKNOWN = "unknown_delivery"


class Feedback:
    """Applies reports; each call is one transaction."""

    def __init__(self, db: Database, config: FeedbackConfig, clock: Callable[[], datetime]) -> None:
        self._db = db
        self._config = config
        self._clock = clock

    async def apply(self, received: Sequence[Received], source: str) -> list[Outcome]:
        """Apply ``received`` (from ``source``: smtp, sendgrid, mailgun, postmark, ses);
        one outcome per report, in order."""
        now = self._clock()

        async def work(conn: AsyncConnection) -> list[Outcome]:
            named = await feedback.deliveries_named(conn, [r.delivery_id for r in received])
            # Campaign rows first, in id order, as a worker's claim takes them.
            await campaign_store.get_campaigns(
                conn, sorted({s.campaign_id for s in named.values()}), lock=True
            )
            outcomes = []
            hit: set[int] = set()
            for item in received:
                sent = named.get(item.delivery_id)
                if sent is None:
                    outcomes.append(Outcome.UNKNOWN)
                    continue
                outcome = await self._one(conn, sent, item.report, source, now)
                if outcome in (Outcome.BOUNCED, Outcome.COMPLAINED):
                    hit.add(sent.campaign_id)
                outcomes.append(outcome)
            for campaign_id in sorted(hit):
                await self._breaker(conn, campaign_id, now)
            return outcomes

        outcomes = await self._db.run(work)
        counts = Counter(outcomes)
        log.info(
            "%s: %d reports: %s",
            source,
            len(outcomes),
            ", ".join(f"{n} {o.value}" for o, n in sorted(counts.items())),
        )
        return outcomes

    async def keep(
        self,
        source: str,
        outcome: str,
        raw: bytes,
        mail_from: str | None = None,
        rcpt_to: str | None = None,
    ) -> int:
        """Keep a message that changed nothing, for inspection; its id."""
        now = self._clock()

        async def work(conn: AsyncConnection) -> int:
            return await feedback.keep(conn, source, outcome, raw, mail_from, rcpt_to, now)

        kept = await self._db.run(work)
        log.warning("%s: message %d kept for inspection: %s", source, kept, outcome)
        return kept

    async def _one(
        self,
        conn: AsyncConnection,
        sent: feedback.Sent,
        report: Report,
        source: str,
        now: datetime,
    ) -> Outcome:
        bounce_id = await feedback.record(
            conn, sent, report.kind.value, report.status, report.diagnostic, source, now
        )
        fields = _fields(report, source)
        if report.kind is Kind.SOFT:
            facts = await transitions.lock(conn, [transitions.d.id == sent.delivery_id])
            transitions.stage_deliveries(
                conn,
                EventType.DELIVERY_BOUNCED,
                now,
                facts,
                {sent.delivery_id: fields},
                sent.status,
            )
            streak = await feedback.soft_bounced(conn, sent, bounce_id)
            if streak >= self._config.soft_bounce_limit:
                detail = f"{streak} soft bounces in a row; the last: {_said(report)}"
                await self._suppress(conn, sent, BOUNCE_REASON, detail, now)
            return Outcome.SOFT
        # A hard bounce or a complaint: the delivery moves, and the address is suppressed.
        change, reason, outcome = _FINAL[report.kind]
        said = _said(report)
        moved = await transitions.move(
            conn,
            change,
            now,
            ids=[sent.delivery_id],
            values={"last_error": f"{reason}: {said}"[:500]},
            fields=fields,
        )
        await self._suppress(conn, sent, reason, said, now)
        return outcome if moved else Outcome.RECORDED

    async def _suppress(
        self, conn: AsyncConnection, sent: feedback.Sent, reason: str, detail: str, now: datetime
    ) -> None:
        lasts = self._config.bounce_suppression
        expires = now + lasts if lasts is not None and reason == BOUNCE_REASON else None
        added = await suppressions.add(
            conn, sent.user_id, sent.recipient, reason, now, detail=detail, expires_at=expires
        )
        await feedback.end_streak(conn, sent.user_id, sent.recipient)
        if not added:
            return
        address = suppressions.normalize(sent.recipient)
        transitions.stage_suppressed(conn, sent.user_id, address, reason, detail, now)
        await suppressions.suppress_pending(conn, sent.user_id, address, now)

    async def _breaker(self, conn: AsyncConnection, campaign_id: int, now: datetime) -> None:
        """Pause the campaign if its bounces or complaints are over the limits."""
        config = self._config
        campaign = await campaign_store.get_campaign(conn, campaign_id, lock=True)
        if campaign is None or campaign.status not in feedback.BREAKABLE:
            return
        total, bounced, complained = await feedback.sent_counts(
            conn, campaign_id, campaign.breaker_since
        )
        if total < config.breaker_min_sends:
            return
        reason = None
        if bounced / total > config.breaker_bounce_rate:
            reason = (
                f"hard bounces at {bounced / total:.1%} of {total} sends, "
                f"over the limit of {config.breaker_bounce_rate:.1%}"
            )
        elif complained / total > config.breaker_complaint_rate:
            reason = (
                f"complaints at {complained / total:.2%} of {total} sends, "
                f"over the limit of {config.breaker_complaint_rate:.2%}"
            )
        if reason is None:
            return
        change = transitions.CampaignChange(campaign.id, campaign.user_id, campaign.status)
        moved = await transitions.move_campaigns(
            conn, [change], CampaignStatus.PAUSED, now, {"reason": reason}
        )
        if moved:
            await campaign_store.move_unclaimed(conn, campaign_id, PAUSE, now)
            await feedback.set_pause_reason(conn, campaign_id, reason)
            log.warning("campaign %d paused by the circuit breaker: %s", campaign_id, reason)


#: What a hard bounce and a complaint do: the move, the suppression's reason, the outcome.
_FINAL = {
    Kind.HARD: (BOUNCE, BOUNCE_REASON, Outcome.BOUNCED),
    Kind.COMPLAINT: (COMPLAIN, COMPLAINT_REASON, Outcome.COMPLAINED),
}


def _fields(report: Report, source: str) -> dict[str, object]:
    """A bounce's or complaint's event fields (``status`` is the delivery's)."""
    fields: dict[str, object] = {"kind": report.kind.value, "source": source}
    if report.status:
        fields["enhancedStatus"] = report.status
    if report.diagnostic:
        fields["diagnostic"] = report.diagnostic
    return fields


def _said(report: Report) -> str:
    """What the report says, in one line."""
    return " ".join(p for p in (report.status, report.diagnostic) if p) or report.kind.value
