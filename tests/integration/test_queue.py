"""One suite over every DeliveryQueue: the in-process queue and Kafka.

Kafka runs against the real broker named by MAILSCHED_TEST_KAFKA_BOOTSTRAP_SERVERS,
each test on its own topics and consumer group. Without that variable the Kafka
cases are skipped on a laptop and fail in CI (when CI is set).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Sequence

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from mailsched.config import KafkaConfig
from mailsched.errors import QueueError, QueueUnavailable
from mailsched.queue import DeadLetter, DeliveryQueue, DueDelivery, Lane, Received
from mailsched.queue.kafka import KafkaQueue, KafkaReceived
from mailsched.queue.memory import MemoryQueue

KAFKA_ENV = "MAILSCHED_TEST_KAFKA_BOOTSTRAP_SERVERS"
WAIT = 30.0  # the longest any case waits for messages to arrive


class MemoryBackend:
    """Every client shares the one in-process queue; nothing outlives it."""

    durable = False

    def __init__(self) -> None:
        self._queue = MemoryQueue()

    async def connect(self) -> DeliveryQueue:
        return self._queue

    async def reconnect(self, queue: DeliveryQueue) -> DeliveryQueue:
        return queue  # closing would lose everything: the same queue goes on

    async def dead_letters(self, expected: int) -> list[tuple[DueDelivery, str]]:
        return [(d.delivery, d.reason) for d in self._queue.dead_letters]

    async def aclose(self) -> None:
        await self._queue.close()


class KafkaBackend:
    """Clients of one consumer group on topics of their own, deleted afterwards."""

    durable = True

    def __init__(self, bootstrap_servers: str) -> None:
        name = f"mailsched-test-{uuid.uuid4().hex[:12]}"
        self.config = KafkaConfig(
            bootstrap_servers=bootstrap_servers,
            topic=name,
            partitions=3,
            dead_letter_topic=f"{name}-dlq",
            group_id=name,
            replication_factor=1,
        )
        self._queues: list[KafkaQueue] = []
        self._created = False

    async def connect(self) -> DeliveryQueue:
        queue = KafkaQueue(self.config, client_id="mailsched-test", publish_timeout=15.0)
        self._queues.append(queue)
        if not self._created:
            await queue.ensure_topics()
            self._created = True
        return queue

    async def reconnect(self, queue: DeliveryQueue) -> DeliveryQueue:
        await queue.close()
        return await self.connect()

    async def dead_letters(self, expected: int) -> list[tuple[DueDelivery, str]]:
        return await asyncio.to_thread(self._read_dead_letters, expected)

    def _read_dead_letters(self, expected: int) -> list[tuple[DueDelivery, str]]:
        consumer = Consumer(
            {
                "bootstrap.servers": self.config.bootstrap_servers,
                "group.id": f"{self.config.group_id}-reader",
                "enable.auto.commit": False,
            }
        )
        try:
            consumer.assign([TopicPartition(self.config.dead_letter_topic, 0, OFFSET_BEGINNING)])
            records: list[tuple[DueDelivery, str]] = []
            deadline = time.monotonic() + WAIT
            while len(records) < expected and time.monotonic() < deadline:
                for message in consumer.consume(expected, 0.5):
                    assert message.error() is None, message.error()
                    record = json.loads(message.value() or b"")
                    assert message.key() == str(record["c"]).encode()
                    records.append((DueDelivery(record["d"], record["c"]), record["r"]))
            return records
        finally:
            consumer.close()

    async def committed(self, partition: int) -> int | None:
        """The group's committed position on a partition of the delivery topic."""
        return await asyncio.to_thread(self._committed, partition)

    def _committed(self, partition: int) -> int | None:
        # committed() asks the group coordinator without joining the group.
        consumer = Consumer(
            {"bootstrap.servers": self.config.bootstrap_servers, "group.id": self.config.group_id}
        )
        try:
            [position] = consumer.committed([TopicPartition(self.config.topic, partition)], 15)
            return position.offset if position.offset >= 0 else None
        finally:
            consumer.close()

    async def aclose(self) -> None:
        for queue in self._queues:
            await queue.close()
        if self._created:
            await asyncio.to_thread(self._delete_topics)

    def _delete_topics(self) -> None:
        admin = AdminClient({"bootstrap.servers": self.config.bootstrap_servers})
        config = self.config
        topics = [config.topic, config.behind_topic, config.dead_letter_topic]
        for future in admin.delete_topics(topics, operation_timeout=10).values():
            future.result(timeout=15)
        groups = [config.group_id, config.behind_group_id]
        for future in admin.delete_consumer_groups(groups).values():
            # A group that never committed does not exist.
            with contextlib.suppress(KafkaException):
                future.result(timeout=15)


Backend = MemoryBackend | KafkaBackend


def _kafka_bootstrap_servers() -> str:
    servers = os.environ.get(KAFKA_ENV)
    if servers:
        return servers
    if os.environ.get("CI"):
        pytest.fail(f"{KAFKA_ENV} is unset: CI must run the queue suite against a real Kafka")
    pytest.skip(f"{KAFKA_ENV} is unset")


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.realstack)])
async def queue_factory(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    backend: Backend
    if request.param == "kafka":
        backend = KafkaBackend(_kafka_bootstrap_servers())
    else:
        backend = MemoryBackend()
    try:
        yield backend
    finally:
        await backend.aclose()


@pytest.fixture
async def kafka_factory() -> AsyncIterator[KafkaBackend]:
    """For what only a durable queue does: keep messages across clients."""
    backend = KafkaBackend(_kafka_bootstrap_servers())
    try:
        yield backend
    finally:
        await backend.aclose()


async def _receive(queue: DeliveryQueue, count: int) -> list[Received]:
    """Receive until ``count`` messages came (or WAIT passed)."""
    received: list[Received] = []
    deadline = time.monotonic() + WAIT
    while len(received) < count and time.monotonic() < deadline:
        received.extend(await queue.receive(max_items=200, timeout=0.5))
    return received


async def _receive_until(queue: DeliveryQueue, last: DueDelivery) -> list[DueDelivery]:
    """Receive until ``last`` came, and then whatever else arrives within a second."""
    got: list[DueDelivery] = []
    deadline = time.monotonic() + WAIT
    while last not in got and time.monotonic() < deadline:
        got.extend(m.delivery for m in await queue.receive(max_items=200, timeout=0.5))
    got.extend(m.delivery for m in await queue.receive(max_items=200, timeout=1.0))
    return got


def _deliveries(count: int, campaigns: Sequence[int], start: int = 1) -> list[DueDelivery]:
    return [DueDelivery(start + i, campaigns[i % len(campaigns)]) for i in range(count)]


async def test_publish_then_receive_keeps_each_campaigns_order(queue_factory: Backend) -> None:
    queue = await queue_factory.connect()
    published = _deliveries(60, campaigns=[11, 12, 13, 14])
    await queue.publish(published)

    received = [m.delivery for m in await _receive(queue, len(published))]

    assert sorted(received, key=lambda d: d.delivery_id) == published
    for campaign in (11, 12, 13, 14):
        in_order = [d for d in published if d.campaign_id == campaign]
        assert [d for d in received if d.campaign_id == campaign] == in_order


async def test_receive_returns_nothing_after_the_timeout_when_empty(
    queue_factory: Backend,
) -> None:
    queue = await queue_factory.connect()
    started = time.monotonic()

    received = await queue.receive(max_items=10, timeout=0.3)

    assert list(received) == []
    assert time.monotonic() - started < 2.5


async def test_receive_takes_at_most_max_items(queue_factory: Backend) -> None:
    queue = await queue_factory.connect()
    published = _deliveries(10, campaigns=[1])
    await queue.publish(published)

    batches: list[Sequence[Received]] = []
    deadline = time.monotonic() + WAIT
    while sum(map(len, batches)) < len(published) and time.monotonic() < deadline:
        batches.append(await queue.receive(max_items=3, timeout=0.5))

    assert [m.delivery for batch in batches for m in batch] == published
    assert all(len(batch) <= 3 for batch in batches)


async def test_the_on_time_lane_comes_before_the_behind_lane(queue_factory: Backend) -> None:
    queue = await queue_factory.connect()
    behind = _deliveries(5, campaigns=[71, 72])
    on_time = _deliveries(2, campaigns=[73], start=100)  # one partition: fetched together
    await queue.publish(behind, Lane.BEHIND)
    await queue.publish(on_time)

    batches: list[list[DueDelivery]] = []
    deadline = time.monotonic() + WAIT
    while sum(map(len, batches)) < 7 and time.monotonic() < deadline:
        # At first a long wait: once neither lane has anything at hand, it is the
        # on-time lane's (Kafka's consumers join their groups on the first receive).
        # Kafka's wait ends early only once max_items came.
        wait, most = (0.5, 200) if batches else (WAIT, len(on_time))
        if batch := await queue.receive(max_items=most, timeout=wait):
            batches.append([m.delivery for m in batch])

    received = [d for batch in batches for d in batch]
    assert received[:2] == on_time
    assert sorted(received[2:], key=lambda d: d.delivery_id) == behind
    # One lane per receive.
    assert all(set(batch) <= set(on_time) or set(batch) <= set(behind) for batch in batches)


async def test_acknowledged_messages_do_not_come_again(queue_factory: Backend) -> None:
    queue = await queue_factory.connect()
    published = _deliveries(8, campaigns=[21, 22, 23])
    await queue.publish(published[:4])
    await queue.publish(published[4:], Lane.BEHIND)  # each lane commits its own
    received = await _receive(queue, len(published))
    await queue.ack(received)

    queue = await queue_factory.reconnect(queue)
    sentinel = DueDelivery(999, 21)
    await queue.publish([sentinel])

    assert await _receive_until(queue, sentinel) == [sentinel]


async def test_unacknowledged_messages_come_again_after_close(kafka_factory: KafkaBackend) -> None:
    queue = await kafka_factory.connect()
    published = _deliveries(6, campaigns=[31, 32])
    await queue.publish(published)
    assert len(await _receive(queue, len(published))) == len(published)

    queue = await kafka_factory.reconnect(queue)

    again = [m.delivery for m in await _receive(queue, len(published))]
    assert sorted(again, key=lambda d: d.delivery_id) == published


async def test_out_of_order_acks_commit_only_the_done_prefix(kafka_factory: KafkaBackend) -> None:
    assert isinstance(kafka_factory, KafkaBackend)
    queue = await kafka_factory.connect()
    published = _deliveries(12, campaigns=[41])  # one campaign: one partition, one order
    await queue.publish(published)
    received = await _receive(queue, len(published))
    assert [m.delivery for m in received] == published
    [partition] = {m.partition for m in received if isinstance(m, KafkaReceived)}
    first, middle, last = received[:4], received[4:8], received[8:]

    await queue.ack(last)  # finished before the earlier batches
    assert await kafka_factory.committed(partition) is None
    await queue.ack(first)  # the middle batch is still being handled
    assert await kafka_factory.committed(partition) == 4

    queue = await kafka_factory.reconnect(queue)
    sentinel = DueDelivery(999, 41)
    await queue.publish([sentinel])

    again = await _receive_until(queue, sentinel)
    assert again == [m.delivery for m in middle + last] + [sentinel]


async def test_dead_letters_are_readable_each_with_its_reason(queue_factory: Backend) -> None:
    queue = await queue_factory.connect()
    failed = [
        DeadLetter(DueDelivery(51, 5), "550 5.1.1 no such user"),
        DeadLetter(DueDelivery(52, 5), "554 5.7.1 rejected as spam"),
        DeadLetter(DueDelivery(53, 6), "too many attempts: 451 4.3.0 try later"),
    ]

    await queue.dead_letter(failed)

    assert await queue_factory.dead_letters(expected=3) == [
        (letter.delivery, letter.reason) for letter in failed
    ]


async def test_a_closed_queue_refuses_work(queue_factory: Backend) -> None:
    queue = await queue_factory.connect()
    await queue.close()

    with pytest.raises(QueueError):
        await queue.publish([DueDelivery(1, 1)])
    with pytest.raises(QueueError):
        await queue.receive(max_items=1, timeout=0.1)


async def test_undecodable_records_are_skipped_and_committed(kafka_factory: KafkaBackend) -> None:
    assert isinstance(kafka_factory, KafkaBackend)
    config = kafka_factory.config
    queue = await kafka_factory.connect()
    producer = Producer({"bootstrap.servers": config.bootstrap_servers})
    for junk in (b"not json", b'{"d": "x", "c": 61}', b"[]"):
        producer.produce(config.topic, value=junk, key=b"61")
    assert await asyncio.to_thread(producer.flush, 15.0) == 0
    good = DueDelivery(1, 61)
    await queue.publish([good])

    received = await _receive(queue, 1)
    assert [m.delivery for m in received] == [good]
    await queue.ack(received)

    queue = await kafka_factory.reconnect(queue)
    sentinel = DueDelivery(999, 61)
    await queue.publish([sentinel])
    assert await _receive_until(queue, sentinel) == [sentinel]


async def test_memory_join_waits_for_every_acknowledgement() -> None:
    queue = MemoryQueue()
    await queue.publish(_deliveries(5, campaigns=[1]))
    first = await queue.receive(max_items=2, timeout=0.1)
    rest = await queue.receive(max_items=10, timeout=0.1)
    assert (len(first), len(rest), queue.pending) == (2, 3, 5)

    await queue.ack(rest)
    joined = asyncio.create_task(queue.join())
    await asyncio.sleep(0)
    assert not joined.done() and queue.pending == 2

    await queue.ack(first)
    await asyncio.wait_for(joined, 1.0)
    assert queue.pending == 0


async def test_publishing_to_an_unreachable_broker_raises_queue_unavailable() -> None:
    config = KafkaConfig(
        bootstrap_servers="127.0.0.1:1",
        topic="mailsched-unreachable",
        partitions=1,
        dead_letter_topic="mailsched-unreachable-dlq",
        group_id="mailsched-unreachable",
        replication_factor=1,
    )
    queue = KafkaQueue(config, client_id="mailsched-test", publish_timeout=1.0)
    started = time.monotonic()
    try:
        with pytest.raises(QueueUnavailable) as raised:
            await queue.publish([DueDelivery(1, 1)])
    finally:
        await queue.close()

    assert time.monotonic() - started < 10
    assert isinstance(raised.value.__cause__, KafkaException)
