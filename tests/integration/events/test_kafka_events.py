"""The Kafka events topic on a real broker: what the sink publishes, the consumer reads
back with the same ids and payloads, keyed by campaign; offsets are committed only
once the reader has written its batch, so an uncommitted batch comes again."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from confluent_kafka import Consumer
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.config import EventsConfig, KafkaConfig, Settings
from mailsched.domain.events import Event
from mailsched.queue.kafka_events import (
    KafkaEventConsumer,
    KafkaEventSink,
    ReceivedEvent,
    decode,
    encode,
    ensure_events_topic,
)
from tests.conftest import Stack

T0 = datetime(2026, 12, 1, 9, 0, 0, 123000, tzinfo=UTC)
NO_CONNECTION = cast(AsyncConnection, None)  # the Kafka sink never uses the relay's


def sample(count: int) -> list[Event]:
    return [
        Event(
            i,
            7 + i % 2,
            "delivery.sent" if i % 3 else "recipient.unsubscribed",
            T0,
            None if i % 3 == 0 else 40 + i % 4,
            {"recipient": f"jörg{i}@example.com", "attempt": 1}
            | ({} if i % 3 == 0 else {"campaignId": 40 + i % 4, "deliveryId": 1000 + i}),
        )
        for i in range(1, count + 1)
    ]


def configs(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> tuple[KafkaConfig, EventsConfig]:
    for name, value in stack.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MAILSCHED_KAFKA_EVENTS_TOPIC", f"{stack.kafka_topic}.events")
    settings = Settings.load()
    kafka = settings.kafka()
    assert kafka is not None
    return kafka, settings.events()


async def read(consumer: KafkaEventConsumer, count: int) -> list[ReceivedEvent]:
    received: list[ReceivedEvent] = []
    for _ in range(60):
        received += await consumer.receive(count - len(received), 1.0)
        if len(received) >= count:
            return received
    raise AssertionError(f"{len(received)} of {count} events arrived")


def test_the_record_is_the_documented_json() -> None:
    event = sample(1)[0]
    assert json.loads(encode(event)) == {
        "eventId": 1,
        "userId": 8,
        "type": "delivery.sent",
        "timestamp": "2026-12-01T09:00:00.123Z",
        "data": {
            "recipient": "jörg1@example.com",
            "attempt": 1,
            "campaignId": 41,
            "deliveryId": 1001,
        },
    }
    assert decode(encode(event)) == event
    for bad in (None, b"", b"[]", b"{}", b'{"eventId": true}', "é".encode("latin-1")):
        assert decode(bad) is None


async def test_what_the_sink_publishes_the_consumer_reads_back(
    real_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    kafka, events = configs(real_stack, monkeypatch)
    await ensure_events_topic(kafka, events, "test")
    sink = KafkaEventSink(kafka, events, "test-sink")
    group = f"{real_stack.kafka_topic}.webhooks"
    first = KafkaEventConsumer(kafka, events, group, "test-1")
    published = sample(30)
    try:
        await sink.publish(NO_CONNECTION, published[:20])
        await sink.publish(NO_CONNECTION, published[20:])
        got = await read(first, 30)
        assert sorted((r.event for r in got), key=lambda e: e.id) == published
        # Keyed by campaign: each campaign's events on one partition, in order.
        partitions: dict[Any, set[int]] = {}
        for r in got:
            partitions.setdefault(r.event.campaign_id or f"user-{r.event.user_id}", set()).add(
                r.partition
            )
            same = [x.event.id for x in got if x.partition == r.partition]
            assert same == sorted(same)
        assert all(len(p) == 1 for p in partitions.values())
    finally:
        await first.close()  # nothing committed: the next member reads it all again

    second = KafkaEventConsumer(kafka, events, group, "test-2")
    try:
        again = await read(second, 30)
        assert sorted(r.event.id for r in again) == [e.id for e in published]
        await second.commit(again)
    finally:
        await second.close()

    third = KafkaEventConsumer(kafka, events, group, "test-3")
    try:
        assert await third.receive(100, 5.0) == []  # all committed
        await sink.publish(NO_CONNECTION, sample(31)[30:])
        assert [r.event.id for r in await read(third, 1)] == [31]
    finally:
        await third.close()
        await sink.close()


async def test_the_record_keys_name_the_campaign_or_the_user(
    real_stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    kafka, events = configs(real_stack, monkeypatch)
    await ensure_events_topic(kafka, events, "test")
    sink = KafkaEventSink(kafka, events, "test-sink")
    try:
        await sink.publish(NO_CONNECTION, sample(3))
    finally:
        await sink.close()
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": f"{real_stack.kafka_topic}.keys",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.subscribe([events.topic])
        keys: dict[int, bytes | None] = {}
        for _ in range(30):
            for message in consumer.consume(10, 1.0):
                if message.error() is None:
                    keys[json.loads(cast(bytes, message.value()))["eventId"]] = message.key()
            if len(keys) == 3:
                break
    finally:
        consumer.close()
    assert keys == {1: b"41", 2: b"42", 3: b"user-8"}
