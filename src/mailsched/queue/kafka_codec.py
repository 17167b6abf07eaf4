"""The bytes of mailsched's Kafka records.

A delivery record is keyed by its campaign, so one campaign's deliveries share
a partition and keep their order; its value is compact JSON::

    {"d": <delivery id>, "c": <campaign id>, "t": <dispatch time, unix seconds>}

A dead-letter record adds ``"r"``, the reason. ``"t"`` lets a worker measure
how long a message waited in the queue.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TypeGuard

from mailsched.queue import DeadLetter, DueDelivery

_COMPACT = (",", ":")


@dataclass(frozen=True, slots=True)
class DecodedDelivery:
    """A delivery read back from a record, with the time it was dispatched."""

    delivery: DueDelivery
    dispatched_at: float | None


def key(delivery: DueDelivery) -> bytes:
    """The record key: the campaign id, so a campaign stays on one partition."""
    return str(delivery.campaign_id).encode()


def encode(delivery: DueDelivery, now: float) -> bytes:
    """The value of a delivery record."""
    record = {"d": delivery.delivery_id, "c": delivery.campaign_id, "t": round(now, 3)}
    return json.dumps(record, separators=_COMPACT).encode()


def encode_dead_letter(letter: DeadLetter, now: float) -> bytes:
    """The value of a dead-letter record."""
    delivery = letter.delivery
    record = {
        "d": delivery.delivery_id,
        "c": delivery.campaign_id,
        "t": round(now, 3),
        "r": letter.reason,
    }
    return json.dumps(record, separators=_COMPACT).encode()


def decode(value: bytes | None) -> DecodedDelivery | None:
    """Read a delivery record's value; ``None`` when it is not one."""
    if value is None:
        return None
    try:
        record = json.loads(value)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    delivery_id, campaign_id, at = record.get("d"), record.get("c"), record.get("t")
    if not (_is_int(delivery_id) and _is_int(campaign_id)):
        return None
    dispatched_at = float(at) if isinstance(at, int | float) and not isinstance(at, bool) else None
    return DecodedDelivery(DueDelivery(delivery_id, campaign_id), dispatched_at)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
