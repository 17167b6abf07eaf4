"""What mailsched tells the outside world: event types, and one event as published.

Every event is the record of one change (a status moved, a send slot ended in
doubt, a recipient unsubscribed). It is written in the transaction that makes
the change, by :mod:`mailsched.store.transitions`, and then read by the feed,
the relay, and the webhooks. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    """The public event types, named ``noun.verb``."""

    CAMPAIGN_SCHEDULED = "campaign.scheduled"
    CAMPAIGN_STARTED = "campaign.started"
    CAMPAIGN_PAUSED = "campaign.paused"
    CAMPAIGN_RESUMED = "campaign.resumed"
    CAMPAIGN_CANCELLED = "campaign.cancelled"
    CAMPAIGN_COMPLETED = "campaign.completed"
    DELIVERY_SENT = "delivery.sent"
    #: A retry was planned: ``retryAt`` says when, ``reason`` why.
    DELIVERY_DEFERRED = "delivery.deferred"
    DELIVERY_FAILED = "delivery.failed"
    DELIVERY_SUPPRESSED = "delivery.suppressed"
    DELIVERY_CANCELLED = "delivery.cancelled"
    #: A send slot ended ORPHANED or AMBIGUOUS: the recipient may get the email twice.
    DELIVERY_POSSIBLE_DUPLICATE = "delivery.possible_duplicate"
    #: The recipient's server reported a bounce: ``kind`` hard (the delivery is now
    #: BOUNCED) or soft (recorded; the delivery stays SENT), ``status``, ``diagnostic``.
    DELIVERY_BOUNCED = "delivery.bounced"
    #: The recipient reported the email as spam: the delivery is now COMPLAINED.
    DELIVERY_COMPLAINED = "delivery.complained"
    RECIPIENT_UNSUBSCRIBED = "recipient.unsubscribed"
    #: The address was added to the user's suppression list: ``reason`` says why.
    RECIPIENT_SUPPRESSED = "recipient.suppressed"


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be written; the store gives it its id."""

    user_id: int
    type: EventType
    occurred_at: datetime
    campaign_id: int | None = None
    delivery_id: int | None = None
    #: The payload's other fields (camelCase), beside the ids and the time.
    fields: Mapping[str, Any] = field(default_factory=dict)

    def data(self) -> dict[str, Any]:
        """The payload's ``data`` object."""
        data: dict[str, Any] = {}
        if self.campaign_id is not None:
            data["campaignId"] = self.campaign_id
        if self.delivery_id is not None:
            data["deliveryId"] = self.delivery_id
        data.update(self.fields)
        return data


@dataclass(frozen=True, slots=True)
class Event:
    """A stored event: its id increases with the order in which events became visible."""

    id: int
    user_id: int
    type: str
    occurred_at: datetime
    campaign_id: int | None
    data: Mapping[str, Any]

    def body(self) -> dict[str, Any]:
        """The Standard Webhooks body: ``{"type", "timestamp", "data"}``."""
        return {"type": self.type, "timestamp": timestamp(self.occurred_at), "data": self.data}

    def item(self) -> dict[str, Any]:
        """The event feed's item: the body with its ``eventId``."""
        return {"eventId": self.id, **self.body()}


def timestamp(at: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and a ``Z``: ``2026-12-01T09:00:00.123Z``."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
