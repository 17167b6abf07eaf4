"""Fan-out: each event becomes one message per endpoint that wants it.

Called by whatever reads the events (the Kafka consumer of ``mailsched webhooks``,
or the in-process relay of ``mailsched run``), in that reader's transaction, so an
event is fanned out exactly when the reader's position moves past it. Giving the
same event twice adds nothing: the message's key is (endpoint, event), and a
delivered message stays a day (see :mod:`mailsched.store.webhook_messages`).

An endpoint gets the events that happen from its creation on (give or take a
minute of clock skew between processes), not the history a replay of the topic
would bring: the feed, ``GET /api/v1/events``, is for history.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.events import Event
from mailsched.store import webhook_messages as messages
from mailsched.store import webhooks as endpoints

log = logging.getLogger(__name__)

#: How much older than its endpoint an event may be and still be sent to it.
CLOCK_SKEW = timedelta(minutes=1)


class FanOut:
    """Turns events into webhook messages (see the module docstring)."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock

    async def publish(self, conn: AsyncConnection, events: Sequence[Event]) -> None:
        """Add a pending message per (enabled endpoint of the event's user that
        subscribes to its type, event), in the caller's transaction.

        One read of the endpoints and one INSERT per thousand messages, whatever
        the number of events.
        """
        if not events:
            return
        by_user: dict[int, list[endpoints.Endpoint]] = {}
        for endpoint in await endpoints.subscribers(conn, {e.user_id for e in events}):
            by_user.setdefault(endpoint.user_id, []).append(endpoint)
        if not by_user:
            return
        pairs: set[tuple[int, int]] = set()
        for event in events:
            for endpoint in by_user.get(event.user_id, ()):
                if endpoint.wants(event.type) and (
                    event.occurred_at >= endpoint.created_at - CLOCK_SKEW
                ):
                    pairs.add((endpoint.id, event.id))
        if pairs:
            await messages.add(conn, sorted(pairs), self._clock())
            log.debug("%d events fanned out to %d webhook messages", len(events), len(pairs))
