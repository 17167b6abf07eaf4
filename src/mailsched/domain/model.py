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
    COMPLETED = "COMPLETED"


class DeliveryStatus(StrEnum):
    """Where one recipient's email is.

    SCHEDULED lives only in the database, QUEUED is on the queue, SENDING is
    claimed by a worker under a lease, SENT and FAILED are final.
    """

    SCHEDULED = "SCHEDULED"
    QUEUED = "QUEUED"
    SENDING = "SENDING"
    SENT = "SENT"
    FAILED = "FAILED"

    @property
    def is_final(self) -> bool:
        return self in FINAL_DELIVERY_STATUSES


FINAL_DELIVERY_STATUSES = frozenset({DeliveryStatus.SENT, DeliveryStatus.FAILED})

#: Every move a delivery may make. SENDING -> SCHEDULED is a retry (or a lease
#: takeover); QUEUED -> SCHEDULED is a re-plan or a lost queue message.
DELIVERY_TRANSITIONS: dict[DeliveryStatus, frozenset[DeliveryStatus]] = {
    DeliveryStatus.SCHEDULED: frozenset({DeliveryStatus.QUEUED}),
    DeliveryStatus.QUEUED: frozenset({DeliveryStatus.SENDING, DeliveryStatus.SCHEDULED}),
    DeliveryStatus.SENDING: frozenset(
        {DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.SCHEDULED}
    ),
    DeliveryStatus.SENT: frozenset(),
    DeliveryStatus.FAILED: frozenset(),
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

    def rules(self, window: timedelta) -> Rules:
        """The campaign's sending rules, with the deployment's length of an "hour"."""
        return Rules(timedelta(seconds=self.delay_seconds), self.hourly_limit, window)
