"""Creating mailsched's topics when they are missing.

Meant for start-up (``mailsched worker``/``dispatcher``) and tests; production
clusters may create the topics themselves, and an existing topic is left as
it is, whatever its partition count.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

# Where it is defined: the package re-exports it without declaring it public.
from confluent_kafka.admin._metadata import TopicMetadata
from confluent_kafka.cimpl import NewTopic

from mailsched.errors import QueueUnavailable
from mailsched.queue.kafka_errors import map_kafka_exceptions

logger = logging.getLogger(__name__)

_SETTLE_SECONDS = 0.2


def min_insync(replication_factor: int) -> int:
    """The in-sync replicas a write needs on mailsched's topics."""
    # acks=all only waits for the in-sync replicas; with three replicas,
    # requiring two keeps a write on two brokers and survives one failure.
    return max(1, replication_factor - 1)


def new_topic(name: str, partitions: int, replication_factor: int) -> NewTopic:
    """A topic that keeps acknowledged writes when one replica is down."""
    return NewTopic(
        name,
        num_partitions=partitions,
        replication_factor=replication_factor,
        config={"min.insync.replicas": str(min_insync(replication_factor))},
    )


def unwritable(topic: TopicMetadata | None, min_isr: int) -> str | None:
    """Why an ``acks=all`` write to ``topic`` would fail now, or ``None`` if it would not.

    Every partition needs a leader and ``min_isr`` in-sync replicas: a campaign's
    deliveries all go to one partition, so one partition that refuses stops it.
    """
    if topic is None or topic.error is not None:
        return f"topic unknown to the brokers ({getattr(topic, 'error', None)})"
    if not topic.partitions:
        return "topic has no partitions"
    for number, partition in sorted(topic.partitions.items()):
        if partition.error is not None or partition.leader < 0:
            return f"partition {number} has no leader ({partition.error})"
        if len(partition.isrs) < min_isr:
            return f"partition {number} has {len(partition.isrs)} in-sync replicas of {min_isr}"
    return None


AdminConfig = dict[str, Any]


async def ensure_topics(
    admin_config: AdminConfig, topics: Sequence[NewTopic], within: float
) -> None:
    """Create the topics that do not exist, then wait until every partition has a leader."""
    with map_kafka_exceptions():
        await asyncio.to_thread(_ensure, admin_config, topics, within)


def _ensure(admin_config: AdminConfig, topics: Sequence[NewTopic], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    admin = AdminClient(admin_config)
    futures = admin.create_topics(list(topics), request_timeout=timeout, operation_timeout=timeout)
    for name, future in futures.items():
        try:
            future.result(timeout=max(0.0, deadline - time.monotonic()))
            logger.info("created Kafka topic %s", name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        except TimeoutError as exc:
            raise QueueUnavailable(f"Kafka did not create topic {name} within {timeout} s") from exc
    for topic in topics:
        _wait_until_led(admin, topic.topic, deadline)


def _wait_until_led(admin: AdminClient, name: str, deadline: float) -> None:
    # A created topic appears in metadata before its partitions have leaders;
    # producing or consuming before then fails or stalls.
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise QueueUnavailable(f"Kafka topic {name} has no leader for every partition yet")
        metadata = admin.list_topics(name, timeout=remaining).topics.get(name)
        if (
            metadata is not None
            and metadata.error is None
            and metadata.partitions
            and all(p.error is None and p.leader >= 0 for p in metadata.partitions.values())
        ):
            return
        time.sleep(_SETTLE_SECONDS)
