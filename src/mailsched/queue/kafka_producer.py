"""Sending records to Kafka and awaiting the broker's confirmation of each.

One idempotent producer (``acks=all``) per process. ``produce()`` only queues a
record inside librdkafka; the confirmation arrives later as a delivery report,
served by ``poll()``. A dedicated thread does the polling, blocking inside
``poll()`` until there is something to serve, and hands each send's outcome
to the event loop with ``call_soon_threadsafe``. Nothing is flushed per send:
records batch for ``linger.ms`` and each send waits for its own reports only.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

# Where it is defined: the package re-exports it without declaring it public.
from confluent_kafka.admin._metadata import TopicMetadata

from mailsched.errors import QueueError, QueueUnavailable
from mailsched.queue.kafka_errors import map_kafka_exceptions, raise_kafka_error

logger = logging.getLogger(__name__)

# How long the poll thread blocks per call: bounds how long close() waits for it.
_POLL_SECONDS = 0.5
# librdkafka fails a record after message.timeout.ms; this is our backstop on top.
_GRACE_SECONDS = 5.0
# Sends failing for this long, none confirmed in between, are an outage, not a blip.
_OUTAGE_SECONDS = 60.0

#: Send errors after which the producer is replaced (see ``Publisher._discard``).
_WEDGED = frozenset(
    {
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError.UNKNOWN_PRODUCER_ID,
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError._FATAL,
    }
)

Record = tuple[bytes, bytes]
"""A record's key and value."""


@dataclass(slots=True)
class _Streak:
    """A topic's failed sends since its last confirmed one (monotonic seconds)."""

    since: float
    last: float
    logged: bool = False


class _Reports:
    """One send's delivery reports, counted on the poll thread, settled on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, expected: int) -> None:
        self._loop = loop
        self._remaining = expected
        self._settled = False
        self.outcome: asyncio.Future[KafkaError | None] = loop.create_future()

    def on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        # Only the poll thread calls this (and close(), after that thread has
        # stopped), so the counter needs no lock. The first error settles the
        # send at once; its other records may still arrive, which the
        # at-least-once contract allows.
        if self._settled:
            return
        self._remaining -= 1
        if error is not None or self._remaining == 0:
            self._settled = True
            self._loop.call_soon_threadsafe(self._settle, error)

    def _settle(self, error: KafkaError | None) -> None:
        if not self.outcome.done():  # the sender may have timed out and gone
            self.outcome.set_result(error)


class Publisher:
    """Sends records and returns once the broker holds all of them."""

    def __init__(self, config: dict[str, Any], timeout: float) -> None:
        """``config`` is librdkafka producer configuration; ``timeout`` bounds each send."""
        self._config = {
            **config,
            "enable.idempotence": True,
            "acks": "all",
            "message.timeout.ms": max(1, int(timeout * 1000)),
        }
        self._timeout = timeout
        self._producer: Producer | None = None
        self._poller: threading.Thread | None = None
        self._stopping = threading.Event()
        self._closed = False
        # Per topic: one whose partitions have no leader fails while the others work.
        self._failing: dict[str, _Streak] = {}

    def failed_within(self, topic: str, seconds: float) -> bool:
        """Whether a send to ``topic`` failed in the last ``seconds``, none confirmed since."""
        streak = self._failing.get(topic)
        return streak is not None and time.monotonic() - streak.last < seconds

    async def topic_metadata(self, topic: str, wait: float) -> TopicMetadata | None:
        """The brokers' current view of ``topic``, asked for up to ``wait`` seconds.

        ``None`` when they do not know it. Asked through this long-lived producer:
        no client is made per call.
        """
        if self._closed:
            raise QueueError("the Kafka producer is closed")
        producer = self._started()
        with map_kafka_exceptions():
            cluster = await asyncio.to_thread(producer.list_topics, topic, wait)
        found: TopicMetadata | None = cluster.topics.get(topic)
        return found

    async def send(self, topic: str, records: Sequence[Record]) -> None:
        """Produce ``records`` to ``topic``; raise :class:`QueueError` unless all are confirmed."""
        if self._closed:
            raise QueueError("the Kafka producer is closed")
        if not records:
            return
        try:
            await self._send(topic, records)
        except QueueError:
            self._failed(topic)
            raise
        self._failing.pop(topic, None)

    def _failed(self, topic: str) -> None:
        now = time.monotonic()
        streak = self._failing.get(topic)
        if streak is None:
            self._failing[topic] = _Streak(since=now, last=now)
            return
        streak.last = now
        if now - streak.since > _OUTAGE_SECONDS and not streak.logged:
            # Each failed send is a warning where it is retried; this says it lasts.
            streak.logged = True
            logger.error("Kafka has confirmed no send to %s for %.0f s", topic, now - streak.since)

    async def _send(self, topic: str, records: Sequence[Record]) -> None:
        producer = self._started()
        reports = _Reports(asyncio.get_running_loop(), len(records))
        with map_kafka_exceptions():
            for key, value in records:
                producer.produce(topic, value=value, key=key, on_delivery=reports.on_delivery)
        try:
            async with asyncio.timeout(self._timeout + _GRACE_SECONDS):
                error = await reports.outcome
        except TimeoutError as exc:
            await self._discard(producer)
            raise QueueUnavailable(
                f"Kafka did not confirm {len(records)} records to {topic} "
                f"within {self._timeout + _GRACE_SECONDS:.0f} s"
            ) from exc
        if error is not None:
            if error.code() in _WEDGED:
                await self._discard(producer)
            raise_kafka_error(error)

    async def _discard(self, producer: Producer) -> None:
        """Drop a producer that could not deliver; the next send starts a fresh one.

        An idempotent producer whose records timed out, or that met a new cluster
        (the broker's data was wiped: new cluster id, new producer ids, topics made
        again), can stay stuck on its old state for good; a fresh one is not.
        """
        if self._producer is not producer:
            return
        logger.warning("restarting the Kafka producer after a failed send")
        self._producer = None
        stopping, self._stopping = self._stopping, threading.Event()
        poller, self._poller = self._poller, None
        await asyncio.to_thread(_abandon, producer, poller, stopping)

    async def close(self) -> None:
        """Stop polling and wait (up to the send timeout) for records still in flight."""
        if self._closed:
            return
        self._closed = True
        if self._producer is not None:
            await asyncio.to_thread(self._stop, self._producer)

    def _started(self) -> Producer:
        if self._producer is None:
            with map_kafka_exceptions():
                self._producer = Producer(self._config)
            self._poller = threading.Thread(
                target=self._poll,
                args=(self._producer, self._stopping),
                name="mailsched-kafka-poll",
                daemon=True,
            )
            self._poller.start()
        return self._producer

    def _poll(self, producer: Producer, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                producer.poll(_POLL_SECONDS)
            except Exception:
                # A callback raised; the pump must keep serving the others.
                logger.exception("error while serving Kafka producer callbacks")

    def _stop(self, producer: Producer) -> None:
        self._stopping.set()
        if self._poller is not None:
            self._poller.join()
        left = producer.flush(self._timeout)
        if left:
            logger.warning("closed the Kafka producer with %s records unconfirmed", left)


def _abandon(
    producer: Producer, poller: threading.Thread | None, stopping: threading.Event
) -> None:
    # Its records are reported failed already (or timed out): purge, do not wait.
    stopping.set()
    if poller is not None:
        poller.join()
    producer.purge()
    producer.flush(0)
