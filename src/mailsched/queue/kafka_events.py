"""The Kafka events topic: the relay publishes every event to it, ``mailsched webhooks``
(and anyone else) reads it.

A public interface, described in ``docs/events.md``. One record per event, keyed by
its campaign (``"42"``), or by its user (``"user-7"``) when it has none, so that a
campaign's events keep their order on one partition. The value is JSON::

    {"eventId": 1234, "userId": 7, "type": "delivery.sent",
     "timestamp": "2026-12-01T09:00:00.123Z", "data": {"campaignId": 42, ...}}

Delivery is at least once: a reader may see an event twice, and tells by its
``eventId``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeGuard

from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.config import EventsConfig, KafkaConfig
from mailsched.domain.events import Event
from mailsched.queue.kafka_consumer import Subscriber, group_member
from mailsched.queue.kafka_errors import TopicMissing
from mailsched.queue.kafka_logs import client_logging
from mailsched.queue.kafka_producer import Publisher, Record
from mailsched.queue.kafka_topics import ensure_topics, new_topic

__all__ = ["KafkaEventConsumer", "KafkaEventSink", "ReceivedEvent", "decode", "encode"]

logger = logging.getLogger(__name__)

_COMPACT = (",", ":")


def key(event: Event) -> bytes:
    """The record key: the campaign, else the user."""
    if event.campaign_id is not None:
        return str(event.campaign_id).encode()
    return f"user-{event.user_id}".encode()


def encode(event: Event) -> bytes:
    """The record value."""
    record = {"eventId": event.id, "userId": event.user_id, **event.body()}
    return json.dumps(record, separators=_COMPACT, ensure_ascii=False).encode()


def decode(value: bytes | None) -> Event | None:
    """An event from a record value; ``None`` when it is not one."""
    try:
        record = json.loads(value) if value is not None else None
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    event_id, user_id, kind = record.get("eventId"), record.get("userId"), record.get("type")
    data, stamp = record.get("data"), record.get("timestamp")
    if not (_is_int(event_id) and _is_int(user_id) and isinstance(kind, str)):
        return None
    if not (isinstance(data, dict) and isinstance(stamp, str)):
        return None
    try:
        occurred_at = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    campaign_id = data.get("campaignId")
    return Event(
        event_id, user_id, kind, occurred_at, campaign_id if _is_int(campaign_id) else None, data
    )


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _client(kafka: KafkaConfig, client_id: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": kafka.bootstrap_servers,
        "client.id": client_id,
        "topic.metadata.refresh.interval.ms": 5_000,
        **client_logging(),
    }


async def ensure_events_topic(kafka: KafkaConfig, events: EventsConfig, client_id: str) -> None:
    """Create the events topic if missing, with as many partitions as the delivery topic."""
    admin = {"bootstrap.servers": kafka.bootstrap_servers, "client.id": client_id}
    topic = new_topic(events.topic, kafka.partitions, kafka.replication_factor)
    await ensure_topics({**admin, **client_logging()}, [topic], 30.0)


class KafkaEventSink:
    """An :class:`~mailsched.producer.relay.EventSink` that produces to the events topic
    and returns once the in-sync replicas hold every record (idempotent, ``acks=all``)."""

    def __init__(
        self, kafka: KafkaConfig, events: EventsConfig, client_id: str, *, timeout: float = 10.0
    ) -> None:
        self._kafka = kafka
        self._events = events
        self._client_id = client_id
        config = {
            **_client(kafka, client_id),
            "linger.ms": 5,
            # Keyed like the delivery topic: the Java client's hashing.
            "partitioner": "murmur2_random",
        }
        self._publisher = Publisher(config, timeout=timeout)

    async def publish(self, _conn: AsyncConnection, events: Sequence[Event]) -> None:
        """Produce one record per event, in one send; raise QueueError unless all are held."""
        records: list[Record] = [(key(ev), encode(ev)) for ev in events]
        try:
            await self._publisher.send(self._events.topic, records)
        except TopicMissing as exc:
            # Deleted, or the cluster's data wiped: the relay's cursor has not moved,
            # so nothing is lost by making the topic again.
            logger.warning("Kafka events topic missing (%s): creating it again", exc)
            await ensure_events_topic(self._kafka, self._events, self._client_id)
            await self._publisher.send(self._events.topic, records)

    async def close(self) -> None:
        """Wait (up to the send timeout) for records in flight."""
        await self._publisher.close()


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    """An event read from the topic, with where it came from (for the commit)."""

    event: Event
    topic: str
    partition: int
    offset: int


def _received(value: bytes | None, topic: str, partition: int, offset: int) -> ReceivedEvent | None:
    event = decode(value)
    return None if event is None else ReceivedEvent(event, topic, partition, offset)


class KafkaEventConsumer:
    """A member of its own consumer group on the events topic; commits only what the
    caller says it has written (at least once)."""

    def __init__(
        self, kafka: KafkaConfig, events: EventsConfig, group_id: str, client_id: str
    ) -> None:
        self._kafka = kafka
        self._events = events
        self._client_id = client_id
        self._subscriber = Subscriber(
            {**_client(kafka, client_id), **group_member(group_id)}, events.topic, _received
        )

    async def receive(
        self,
        max_items: int,
        timeout: float,  # noqa: ASYNC109 - consume() applies it
    ) -> Sequence[ReceivedEvent]:
        """Up to ``max_items`` events, waiting at most ``timeout`` seconds for the first."""
        try:
            return await self._subscriber.receive(max_items, timeout)
        except TopicMissing as exc:
            # Made again (a consumer keeps reading the old one by its id): join afresh.
            logger.warning("Kafka events topic missing (%s): creating it again", exc)
            await ensure_events_topic(self._kafka, self._events, self._client_id)
            await self._subscriber.restart()
            return []

    async def commit(self, received: Sequence[ReceivedEvent]) -> None:
        """Mark events written and commit each partition's written prefix."""
        await self._subscriber.ack(received)

    async def close(self) -> None:
        """Leave the group; what was not committed goes to the partitions' next owners."""
        await self._subscriber.close()
