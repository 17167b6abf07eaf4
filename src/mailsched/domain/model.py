"""Campaigns, deliveries and the statuses they move through."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from mailsched.domain.plan import Rules


class CampaignStatus(StrEnum):
    """Where a campaign is in its life."""

    SCHEDULED = "SCHEDULED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"

    @property
    def sends(self) -> bool:
        """Whether deliveries of a campaign in this status may be sent."""
        return self in (CampaignStatus.SCHEDULED, CampaignStatus.RUNNING)


class DeliveryStatus(StrEnum):
    """Where one recipient's email is.

    SCHEDULED lives only in the database, QUEUED is on the queue, SENDING is
    claimed by a worker under a lease, PAUSED waits for its campaign to resume;
    SENT, FAILED, CANCELLED and SUPPRESSED (the recipient unsubscribed) are final.
    """

    SCHEDULED = "SCHEDULED"
    QUEUED = "QUEUED"
    SENDING = "SENDING"
    PAUSED = "PAUSED"
    SENT = "SENT"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    SUPPRESSED = "SUPPRESSED"

    @property
    def is_final(self) -> bool:
        return self in FINAL_DELIVERY_STATUSES


class SendOutcome(StrEnum):
    """How one send attempt (one send slot) ended."""

    SENT = "SENT"
    RETRY = "RETRY"
    SLOWED = "SLOWED"
    FAILED = "FAILED"
    #: Never started: the lease was too close to its end.
    RELEASED = "RELEASED"
    #: The connection broke after the data went out: the server may have it.
    AMBIGUOUS = "AMBIGUOUS"
    #: The worker vanished mid-send and its lease ran out: the server may have it.
    ORPHANED = "ORPHANED"


#: Outcomes after which the recipient may get the email twice (the RFC 1047 window).
POSSIBLE_DUPLICATE_OUTCOMES = frozenset({SendOutcome.AMBIGUOUS, SendOutcome.ORPHANED})


FINAL_DELIVERY_STATUSES = frozenset(
    {
        DeliveryStatus.SENT,
        DeliveryStatus.FAILED,
        DeliveryStatus.CANCELLED,
        DeliveryStatus.SUPPRESSED,
    }
)

#: Deliveries not yet claimed by a worker: what pause, cancel and re-plans move.
UNCLAIMED_DELIVERY_STATUSES = frozenset(
    {DeliveryStatus.SCHEDULED, DeliveryStatus.QUEUED, DeliveryStatus.PAUSED}
)

_STOPPABLE = {DeliveryStatus.PAUSED, DeliveryStatus.CANCELLED, DeliveryStatus.SUPPRESSED}

#: Every move a delivery may make. SENDING -> SCHEDULED is a retry (or a lease
#: takeover); QUEUED -> SCHEDULED is a re-plan or a lost queue message;
#: FAILED -> SCHEDULED is an operator's retry of failed deliveries.
DELIVERY_TRANSITIONS: dict[DeliveryStatus, frozenset[DeliveryStatus]] = {
    DeliveryStatus.SCHEDULED: frozenset({DeliveryStatus.QUEUED, *_STOPPABLE}),
    DeliveryStatus.QUEUED: frozenset(
        {DeliveryStatus.SENDING, DeliveryStatus.SCHEDULED, *_STOPPABLE}
    ),
    DeliveryStatus.SENDING: frozenset(
        {DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.SCHEDULED}
    ),
    DeliveryStatus.PAUSED: frozenset({DeliveryStatus.SCHEDULED, DeliveryStatus.CANCELLED}),
    DeliveryStatus.SENT: frozenset(),
    DeliveryStatus.FAILED: frozenset({DeliveryStatus.SCHEDULED}),
    DeliveryStatus.CANCELLED: frozenset(),
    DeliveryStatus.SUPPRESSED: frozenset(),
}


def can_move(current: DeliveryStatus, new: DeliveryStatus) -> bool:
    """Whether a delivery may go from ``current`` to ``new``."""
    return new in DELIVERY_TRANSITIONS[current]


@dataclass(frozen=True, slots=True)
class Campaign:
    """A stored campaign: what was asked for, and how far sending got."""

    id: int
    user_id: int
    subject: str
    body: str
    start_time: datetime
    delay_seconds: int
    hourly_limit: int
    status: CampaignStatus
    recipient_count: int
    slot_seq: int
    created_at: datetime
    completed_at: datetime | None
    html_body: str | None = None
    #: Subject or bodies use template syntax: rendered per recipient.
    templated: bool = False

    def rules(self, window: timedelta) -> Rules:
        """The campaign's sending rules, with the deployment's length of an "hour"."""
        return Rules(timedelta(seconds=self.delay_seconds), self.hourly_limit, window)
