"""The Kafka delivery queue: the real one, for several dispatchers and workers.

Deliveries are keyed by campaign, so a campaign's deliveries keep their order
on one partition. Each lane is a topic: the on-time lane is ``topic``, the behind
lane ``topic.behind``, read by a consumer group of its own
(``group_id.behind``), so that a worker can ask the on-time lane first whatever
the behind lane holds. The producer and the consumer are created on first use: a
dispatcher that only publishes never joins the consumer group (where it would
be given partitions it never reads).

The pieces: :mod:`.kafka_producer` (confirmed sends), :mod:`.kafka_consumer`
(group membership and commits), :mod:`.kafka_offsets` (which offsets may be
committed), :mod:`.kafka_codec` (record bytes), :mod:`.kafka_topics` (topic
creation) and :mod:`.kafka_errors` (the one place errors are translated).

The consumer uses the cooperative-sticky assignor: a worker joining or
leaving moves only the partitions that must move, so the others' in-flight
batches stay valid instead of every member giving up everything (as with the
eager ``range`` assignor) and reading its unacknowledged messages again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from mailsched.config import KafkaConfig
from mailsched.errors import QueueUnavailable
from mailsched.queue import DeadLetter, DueDelivery, Lane, Received
from mailsched.queue import kafka_codec as codec
from mailsched.queue.kafka_consumer import (
    KafkaReceived,
    Subscriber,
    delivery_record,
    group_member,
)
from mailsched.queue.kafka_errors import TopicMissing
from mailsched.queue.kafka_logs import client_logging
from mailsched.queue.kafka_producer import Publisher
from mailsched.queue.kafka_topics import ensure_topics, min_insync, new_topic, unwritable

__all__ = ["KafkaQueue", "KafkaReceived"]

logger = logging.getLogger(__name__)

#: How often clients re-read topic metadata: a topic created again (after it was
#: deleted or the cluster's data was wiped) is picked up within this.
_METADATA_REFRESH_MS = 5_000

#: A failed send this recent, none confirmed since, makes the queue not ready.
_RECENT_FAILURE_SECONDS = 60.0


class KafkaQueue:
    """A :class:`~mailsched.queue.DeliveryQueue` on Kafka topics."""

    def __init__(
        self,
        config: KafkaConfig,
        client_id: str,
        *,
        # Short: a producer stuck on a broker that came back as a new cluster (its
        # data wiped) is only replaced once a send times out.
        publish_timeout: float = 10.0,
        admin_timeout: float = 30.0,
    ) -> None:
        """Nothing connects until first use; ``publish_timeout`` bounds every publish."""
        self._config = config
        self._admin_timeout = admin_timeout
        self._admin_config: dict[str, Any] = {
            "bootstrap.servers": config.bootstrap_servers,
            "client.id": client_id,
            **client_logging(),
        }
        common: dict[str, Any] = {
            **self._admin_config,
            "topic.metadata.refresh.interval.ms": _METADATA_REFRESH_MS,
        }
        publisher = {
            **common,
            "linger.ms": 5,
            # The Java client's key hashing: a campaign lands on the same partition
            # whichever client (or Kafka Streams job) produces it.
            "partitioner": "murmur2_random",
        }
        self._publisher = Publisher(publisher, timeout=publish_timeout)
        self._lanes = {
            Lane.ON_TIME: Subscriber(
                {**common, **group_member(config.group_id)}, config.topic, delivery_record
            ),
            Lane.BEHIND: Subscriber(
                {**common, **group_member(config.behind_group_id)},
                config.behind_topic,
                delivery_record,
            ),
        }
        self._topics = {Lane.ON_TIME: config.topic, Lane.BEHIND: config.behind_topic}

    async def check_writable(self) -> None:
        """Return if deliveries can be published now; raise QueueUnavailable if not (``/readyz``).

        A broker that answers is not enough: with two brokers of three down it
        still does, and every write times out. So: no send to either lane's topic
        may have failed lately, and every partition of each needs a leader and
        enough in-sync replicas. Asked through the long-lived producer. The
        dead-letter topic is not asked: while it fails, dead letters wait in
        their outbox, and deliveries go on.
        """
        for name in self._topics.values():
            if self._publisher.failed_within(name, _RECENT_FAILURE_SECONDS):
                raise QueueUnavailable("the latest sends to Kafka failed")
        for name in self._topics.values():
            topic = await self._publisher.topic_metadata(name, wait=2.0)
            reason = unwritable(topic, min_insync(self._config.replication_factor))
            if reason is not None:
                raise QueueUnavailable(f"Kafka topic {name}: {reason}")

    async def ensure_topics(self) -> None:
        """Create the lanes' and the dead-letter topics if missing; wait until they are usable."""
        config = self._config
        await ensure_topics(
            self._admin_config,
            [
                new_topic(config.topic, config.partitions, config.replication_factor),
                new_topic(config.behind_topic, config.partitions, config.replication_factor),
                # Dead letters are few and read by people: one partition keeps them in order.
                new_topic(config.dead_letter_topic, 1, config.replication_factor),
            ],
            self._admin_timeout,
        )

    async def publish(self, deliveries: Sequence[DueDelivery], lane: Lane = Lane.ON_TIME) -> None:
        """Produce the deliveries to ``lane``'s topic; return once the in-sync replicas
        hold every one."""
        now = time.time()
        records = [(codec.key(d), codec.encode(d, now)) for d in deliveries]
        await self._send(self._topics[lane], records)

    async def receive(
        self,
        max_items: int,
        timeout: float,  # noqa: ASYNC109 - the DeliveryQueue contract
    ) -> Sequence[KafkaReceived]:
        """Up to ``max_items`` deliveries, waiting at most ``timeout`` seconds: what the
        on-time lane has at hand, else what the behind lane has, else what comes on
        the on-time lane within the timeout (librdkafka waits all of it unless
        ``max_items`` come: a batch, rather than a claim per message)."""
        for lane in Lane:
            if received := await self._receive(lane, max_items, 0.0):
                return received
        return await self._receive(Lane.ON_TIME, max_items, timeout)

    async def _receive(
        self,
        lane: Lane,
        max_items: int,
        timeout: float,  # noqa: ASYNC109 - the DeliveryQueue contract
    ) -> Sequence[KafkaReceived]:
        subscriber = self._lanes[lane]
        try:
            return await subscriber.receive(max_items, timeout)
        except TopicMissing as exc:
            # The topic was made again: a fresh consumer reads the new one. What it
            # had handed out is in the database, and comes again by the reaper.
            await self._recreate_topics(exc)
            await subscriber.restart()
            return []

    async def ack(self, messages: Sequence[Received]) -> None:
        """Commit, per partition, up to the first message not yet acknowledged.

        Returns after the broker confirmed the commit. If it fails, the error
        is raised and the acknowledgements are kept for the next commit.
        """
        received: dict[Lane, list[KafkaReceived]] = {}
        for message in messages:
            if not isinstance(message, KafkaReceived):
                raise TypeError(f"not a message from a KafkaQueue: {message!r}")
            lane = Lane.BEHIND if message.topic == self._config.behind_topic else Lane.ON_TIME
            received.setdefault(lane, []).append(message)
        for lane, taken in received.items():
            await self._lanes[lane].ack(taken)

    async def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        """Produce a record per dead letter to the dead-letter topic, all in one send."""
        now = time.time()
        records = [(codec.key(x.delivery), codec.encode_dead_letter(x, now)) for x in letters]
        await self._send(self._config.dead_letter_topic, records)

    async def _send(self, topic: str, records: list[tuple[bytes, bytes]]) -> None:
        try:
            await self._publisher.send(topic, records)
        except TopicMissing as exc:
            await self._recreate_topics(exc)
            await self._publisher.send(topic, records)

    async def _recreate_topics(self, cause: TopicMissing) -> None:
        # The topic was deleted or the cluster's data wiped: what it held is
        # lost, and the dispatcher's reaper re-dispatches it from the database.
        logger.warning("Kafka topic missing (%s): creating the topics again", cause)
        await self.ensure_topics()

    async def close(self) -> None:
        """Leave the group without committing unacknowledged work; finish pending sends."""
        try:
            closed = await asyncio.gather(
                *(subscriber.close() for subscriber in self._lanes.values()),
                return_exceptions=True,
            )
            for result in closed:
                if isinstance(result, BaseException):
                    raise result
        finally:
            await self._publisher.close()
