"""What an endpoint receives: the body of a request, and its ``webhook-id``.

One event per request (the default)::

    webhook-id: 1234                        (the event id, in decimal)
    {"type": "delivery.sent", "timestamp": "2026-12-01T09:00:00.123Z",
     "data": {"campaignId": 7, "deliveryId": 42, ...}}

A batching endpoint (``"batch": true``) gets up to 500 events per request, in
increasing ``eventId`` order::

    webhook-id: batch_6150727401935872      (the batch's key)
    {"type": "batch", "timestamp": "<the newest event's timestamp>",
     "data": {"events": [
        {"eventId": 1234, "type": "delivery.sent", "timestamp": "...", "data": {...}},
        ...
     ]}}

A batch's members are fixed at its first attempt: every retry carries the same
events, in the same body, under the same ``webhook-id``. Receivers may dedupe on
``webhook-id`` for a request, and on ``eventId`` for an event (at least once: an
event can arrive twice, and order is not promised; ``eventId`` increases in the
order events happened).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from mailsched.domain.events import Event, timestamp


def _json(document: dict[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def single(event: Event) -> tuple[str, str]:
    """``(webhook-id, body)`` of one event's request."""
    return str(event.id), _json(event.body())


def batch(key: int, events: Sequence[Event]) -> tuple[str, str]:
    """``(webhook-id, body)`` of a batch's request; ``events`` in id order."""
    items = [event.item() for event in sorted(events, key=lambda e: e.id)]
    newest = max(event.occurred_at for event in events)
    body = {"type": "batch", "timestamp": timestamp(newest), "data": {"events": items}}
    return f"batch_{key}", _json(body)
