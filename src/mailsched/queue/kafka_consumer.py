"""Reading records from Kafka and committing what the reader has finished.

A :class:`Subscriber` reads one topic; a function given to it turns each record into
the item it hands out (:func:`delivery_record` for the delivery queue, another for
the events topic).

The confluent-kafka ``Consumer`` must not be called from two threads at once,
and its rebalance callbacks run inside whichever call triggered them. So every
consumer call, the callbacks and the :class:`OffsetTracker` they update live on
one dedicated thread (a single-worker executor): nothing here needs a lock.

Offsets are committed by hand, synchronously, when the worker acknowledges:
``await ack(...)`` returns after the broker confirmed the commit. Each commit
goes only up to a partition's first unacknowledged message, so messages
finished out of order are never skipped. When a partition is revoked its done
prefix is committed and its tracking dropped; unacknowledged messages are read
again by its next owner. Close leaves the group without committing them.

A ``receive`` that is cancelled while ``consume`` runs still takes those
messages off Kafka; unacknowledged, they hold their partitions' commits back
until the consumer closes and they come again, as at-least-once allows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from mailsched.errors import QueueError
from mailsched.queue import DueDelivery
from mailsched.queue.kafka_codec import decode
from mailsched.queue.kafka_errors import map_kafka_exceptions
from mailsched.queue.kafka_offsets import OffsetTracker, Partition

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Located(Protocol):
    """An item read from Kafka: where it came from, for the commit."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


Item = TypeVar("Item", bound=Located)

#: Makes a record's value into an item (given its topic, partition and offset), or
#: returns ``None`` for a value that is not one.
Reader = Callable[[bytes | None, str, int, int], Item | None]


def group_member(group_id: str) -> dict[str, Any]:
    """The librdkafka settings of a member of ``group_id`` that commits by hand."""
    return {
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "partition.assignment.strategy": "cooperative-sticky",
        # A member that dies (kill -9, lost host) hands its partitions on within
        # this; one that stops cleanly leaves the group at once.
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
        # Rebalance callbacks run inside consume(): a member busy with slow
        # SMTP servers must still get back to receive() in time.
        "max.poll.interval.ms": 600_000,
    }


@dataclass(frozen=True, slots=True)
class KafkaReceived:
    """A delivery read from Kafka, with where it came from (for the commit)."""

    delivery: DueDelivery
    topic: str
    partition: int
    offset: int
    dispatched_at: float | None
    """When the dispatcher published it (unix seconds), if the record says."""


def delivery_record(
    value: bytes | None, topic: str, partition: int, offset: int
) -> KafkaReceived | None:
    """A delivery record as the worker receives it (a :data:`Reader`)."""
    decoded = decode(value)
    if decoded is None:
        return None
    return KafkaReceived(decoded.delivery, topic, partition, offset, decoded.dispatched_at)


class Subscriber(Generic[Item]):
    """A consumer-group member that hands out items and commits acknowledged ones."""

    def __init__(self, config: dict[str, Any], topic: str, read: Reader[Item]) -> None:
        """``config`` is librdkafka consumer configuration, including ``group.id``;
        ``read`` makes each record an item."""
        self._config = config
        self._topic = topic
        self._read = read
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="mailsched-kafka-consumer")
        self._closed = False
        # Touched only on the executor's thread:
        self._consumer: Consumer | None = None
        self._tracker = OffsetTracker()
        self._deferred: KafkaError | None = None

    async def receive(
        self,
        max_items: int,
        timeout: float,  # noqa: ASYNC109 - consume() applies it
    ) -> list[Item]:
        """Up to ``max_items`` items, waiting at most ``timeout`` seconds for the first."""
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        return await self._call(self._consume, max_items, timeout)

    async def ack(self, messages: Sequence[Located]) -> None:
        """Mark messages handled and commit every partition's done prefix that moved."""
        await self._call(self._ack, [(m.topic, m.partition, m.offset) for m in messages])

    async def restart(self) -> None:
        """Leave the group and forget everything; the next :meth:`receive` joins afresh.

        For a topic that was deleted and created again: a consumer keeps fetching
        the old topic (by its id) and never sees the new one's records.
        """
        await self._call(self._restart)

    async def close(self) -> None:
        """Leave the group; unacknowledged messages go to the partitions' next owners."""
        if self._closed:
            return
        self._closed = True
        try:
            with map_kafka_exceptions():
                await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        finally:
            self._executor.shutdown(wait=False)

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise QueueError("the Kafka consumer is closed")
        with map_kafka_exceptions():
            return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    # Everything below runs on the consumer thread.

    def _consume(self, max_items: int, timeout: float) -> list[Item]:
        consumer = self._consumer or self._subscribe()
        if self._deferred is not None:
            deferred, self._deferred = self._deferred, None
            raise KafkaException(deferred)
        received: list[Item] = []
        first_error: KafkaError | None = None
        for message in consumer.consume(max_items, timeout):
            error = message.error()
            if error is None:
                item = self._take(message)
                if item is not None:
                    received.append(item)
            elif error.code() != KafkaError._PARTITION_EOF and first_error is None:
                first_error = error
        if first_error is not None:
            if not received:
                raise KafkaException(first_error)
            # The messages are taken off Kafka already: hand them out and
            # report the error on the next call instead of dropping them.
            self._deferred = first_error
        return received

    def _take(self, message: Message) -> Item | None:
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        if topic is None or partition is None or offset is None:
            raise QueueError("Kafka returned a message without topic, partition or offset")
        self._tracker.received((topic, partition), offset)
        item = self._read(message.value(), topic, partition, offset)
        if item is None:
            # Never let one bad record block its partition: skip it as done.
            logger.warning("skipping an undecodable record at %s[%s]@%s", topic, partition, offset)
            self._tracker.ack((topic, partition), offset)
            return None
        return item

    def _ack(self, offsets: list[tuple[str, int, int]]) -> None:
        for topic, partition, offset in offsets:
            self._tracker.ack((topic, partition), offset)
        self._commit()

    def _commit(self, only: Collection[Partition] | None = None) -> None:
        positions = self._tracker.committable()
        if only is not None:
            positions = {p: o for p, o in positions.items() if p in only}
        if not positions or self._consumer is None:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in positions.items()]
        results = self._consumer.commit(offsets=offsets, asynchronous=False)
        failed = [tp.error for tp in results if tp.error is not None]
        confirmed = {
            (tp.topic, tp.partition): positions[(tp.topic, tp.partition)]
            for tp in results
            if tp.error is None
        }
        self._tracker.committed(confirmed)
        if failed:
            # Unconfirmed positions stay due and go with the next commit.
            raise KafkaException(failed[0])

    def _subscribe(self) -> Consumer:
        self._consumer = Consumer(self._config)
        self._consumer.subscribe(
            [self._topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        return self._consumer

    def _close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            # Revokes the assignment (committing acknowledged work) and leaves the group.
            consumer.close()

    def _restart(self) -> None:
        consumer, self._consumer = self._consumer, None
        self._tracker = OffsetTracker()
        self._deferred = None
        if consumer is not None:
            try:
                consumer.close()
            except KafkaException as exc:
                logger.warning("closing the Kafka consumer for a restart: %s", exc)

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._tracker.forget(_keys(partitions))
        if partitions:  # cooperative rebalances often assign nothing new
            logger.info("assigned %s", _describe(partitions))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = _keys(partitions)
        try:
            self._commit(only=keys)
        except (KafkaException, QueueError) as exc:
            # Raising here would abort the rebalance; the cost of a lost
            # commit is only that the next owner reads those messages again.
            logger.warning("could not commit revoked %s: %s", _describe(partitions), exc)
        finally:
            self._tracker.forget(keys)
        if partitions:
            logger.info("revoked %s", _describe(partitions))

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Another member owns them already; committing would be refused.
        self._tracker.forget(_keys(partitions))
        logger.warning(
            "lost %s; their unacknowledged messages will come again", _describe(partitions)
        )


def _keys(partitions: list[TopicPartition]) -> set[Partition]:
    return {(tp.topic, tp.partition) for tp in partitions}


def _describe(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "no partitions"
