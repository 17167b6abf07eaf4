"""The producer's view of an outage: failed sends to the delivery topic make it not ready;
a long run of them is an error. The dead-letter topic's failures are its own.

No broker: the send underneath is replaced, and the clock is a counter the test moves.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

import pytest
from confluent_kafka.admin._metadata import TopicMetadata

from mailsched.config import KafkaConfig
from mailsched.errors import QueueUnavailable
from mailsched.queue import DeadLetter, DueDelivery, kafka_producer
from mailsched.queue.kafka import KafkaQueue
from mailsched.queue.kafka_producer import Publisher, Record
from tests.unit.test_kafka_writable import topic_metadata

TOPIC = "mailsched.deliveries"
DEAD_LETTERS = "mailsched.deliveries.dlq"


class Scripted:
    """The send underneath: fails while :attr:`down` is set, and always to the topics
    in :attr:`leaderless`."""

    def __init__(self) -> None:
        self.down = True
        self.leaderless: set[str] = set()

    async def __call__(self, topic: str, records: Sequence[Record]) -> None:
        if self.down or topic in self.leaderless:
            raise QueueUnavailable("kafka _MSG_TIMED_OUT: Local: Message timed out")


@pytest.fixture
def now(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    clock = [1000.0]
    monkeypatch.setattr(kafka_producer.time, "monotonic", lambda: clock[0])
    return clock


async def _send(publisher: Publisher, topic: str = TOPIC) -> None:
    with contextlib.suppress(QueueUnavailable):
        await publisher.send(topic, [(b"1", b"{}")])


async def test_failed_sends_are_an_outage_until_one_is_confirmed(
    now: list[float], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = Publisher({}, timeout=1.0)
    underneath = Scripted()
    monkeypatch.setattr(publisher, "_send", underneath)
    assert not publisher.failed_within(TOPIC, 60)

    await _send(publisher)
    assert publisher.failed_within(TOPIC, 60)
    now[0] += 61
    assert not publisher.failed_within(TOPIC, 60)  # nothing was tried since: no news

    await _send(publisher)  # 61 s of failing, nothing confirmed: an outage
    now[0] += 1
    await _send(publisher)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [f"Kafka has confirmed no send to {TOPIC} for 61 s"]

    underneath.down = False
    await _send(publisher)
    assert not publisher.failed_within(TOPIC, 60)

    underneath.down = True
    now[0] += 1000
    await _send(publisher)  # a new streak: a warning where it is retried, not an error
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
    assert publisher.failed_within(TOPIC, 60)


async def test_a_leaderless_dead_letter_topic_leaves_the_queue_ready(
    now: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = KafkaConfig(
        bootstrap_servers="localhost:9",
        topic=TOPIC,
        partitions=1,
        dead_letter_topic=DEAD_LETTERS,
        group_id="workers",
        replication_factor=1,
    )
    queue = KafkaQueue(config, client_id="test")
    underneath = Scripted()
    underneath.down, underneath.leaderless = False, {DEAD_LETTERS}
    publisher = queue._publisher
    monkeypatch.setattr(publisher, "_send", underneath)

    async def known(topic: str, wait: float) -> TopicMetadata:
        return topic_metadata((1, [1]))  # a leader and enough replicas: writable

    monkeypatch.setattr(publisher, "topic_metadata", known)
    letters = [DeadLetter(DueDelivery(1, 2), "550 5.1.1 no such user")]

    await queue.publish([DueDelivery(1, 2)])
    for _ in range(3):  # the relay retrying, 30 s apart
        with pytest.raises(QueueUnavailable):
            await queue.dead_letter(letters)
        now[0] += 30
        await queue.check_writable()
    assert publisher.failed_within(DEAD_LETTERS, 60)
    await queue.publish([DueDelivery(3, 2)])  # a confirmed delivery ends no other streak
    assert publisher.failed_within(DEAD_LETTERS, 60)

    underneath.leaderless = {TOPIC}
    with pytest.raises(QueueUnavailable):
        await queue.publish([DueDelivery(4, 2)])
    with pytest.raises(QueueUnavailable, match="the latest sends to Kafka failed"):
        await queue.check_writable()
