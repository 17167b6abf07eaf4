"""``/readyz`` names what is down and never why; Kafka is ready only when it takes writes.

Also: librdkafka's own lines go through mailsched's logging (never straight to
stderr), and a refused connection to a broker is a warning there, not an error.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import httpx
import pytest
from confluent_kafka.admin import AdminClient

from mailsched.config import KafkaConfig
from mailsched.errors import QueueUnavailable
from mailsched.producer.api import create_app
from mailsched.queue import DueDelivery
from mailsched.queue.kafka import KafkaQueue
from mailsched.store.db import Database
from tests.conftest import real_setting
from tests.support.api import client_for, make_app

LIBRDKAFKA = "mailsched.queue.librdkafka"


def _config(bootstrap_servers: str, topic: str) -> KafkaConfig:
    return KafkaConfig(
        bootstrap_servers=bootstrap_servers,
        topic=topic,
        partitions=1,
        dead_letter_topic=f"{topic}-dlq",
        group_id=topic,
        replication_factor=1,
    )


async def test_readyz_names_what_is_down_not_the_error(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    async def kafka() -> None:
        raise QueueUnavailable("kafka _TRANSPORT: kafka-3.corp.internal:9092: Connection refused")

    app = make_app(db, checks={"database": db.ping, "kafka": kafka})
    async with client_for(app, None) as client:
        response = await client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "kafka": "unavailable"},
    }
    assert "corp.internal" not in response.text
    # The operator finds the reason in the log.
    assert any("kafka-3.corp.internal" in r.getMessage() for r in caplog.records)


@pytest.mark.realstack
async def test_kafka_that_answers_but_times_out_writes_is_not_ready(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The outage of the issue: the brokers answer metadata requests, and every
    send ends in _MSG_TIMED_OUT (two brokers of three down, min.insync.replicas 2)."""
    servers = real_setting("MAILSCHED_TEST_KAFKA_BOOTSTRAP_SERVERS")
    config = _config(servers, f"mailsched-test-{uuid.uuid4().hex[:12]}")
    queue = KafkaQueue(config, client_id="mailsched-test", publish_timeout=5.0)
    app = create_app(
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        checks={"kafka": queue.check_writable},
    )
    try:
        await queue.ensure_topics()
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as client:
            assert (await client.get("/readyz")).status_code == 200

            async def timed_out(topic: str, records: object) -> None:
                raise QueueUnavailable("kafka _MSG_TIMED_OUT: Local: Message timed out")

            monkeypatch.setattr(queue._publisher, "_send", timed_out)
            with pytest.raises(QueueUnavailable):
                await queue.publish([DueDelivery(1, 1)])  # what the dispatcher saw
            response = await client.get("/readyz")
    finally:
        await queue.close()
        admin = AdminClient({"bootstrap.servers": servers})
        for future in admin.delete_topics(
            [config.topic, config.behind_topic, config.dead_letter_topic]
        ).values():
            await asyncio.to_thread(future.result, 15)

    assert response.status_code == 503
    assert response.json()["checks"] == {"kafka": "unavailable"}


async def test_librdkafka_logs_through_logging_and_a_refused_broker_is_a_warning(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger=LIBRDKAFKA)
    queue = KafkaQueue(
        _config("127.0.0.1:1", "mailsched-unreachable"),
        client_id="mailsched-test",
        publish_timeout=1.0,
    )
    try:
        with pytest.raises(QueueUnavailable):
            await queue.check_writable()
        with pytest.raises(QueueUnavailable):
            await queue.publish([DueDelivery(1, 1)])
    finally:
        await queue.close()

    lines = [r for r in caplog.records if r.name == LIBRDKAFKA]
    refused = [
        r for r in lines if "Connection refused" in r.getMessage() and r.levelno > logging.DEBUG
    ]
    assert refused, "librdkafka's lines did not reach logging"
    assert {r.levelno for r in refused} == {logging.WARNING}
    assert not [r for r in lines if r.levelno >= logging.ERROR]
    # Nothing went around logging, straight to the process's stderr.
    assert "Connection refused" not in capfd.readouterr().err
