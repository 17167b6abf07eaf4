"""Whether a topic's metadata lets an ``acks=all`` write through: a table of cases."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError
from confluent_kafka.admin._metadata import PartitionMetadata, TopicMetadata

from mailsched.queue.kafka_topics import min_insync, unwritable


def topic_metadata(
    *partitions: tuple[int, list[int]], error: KafkaError | None = None
) -> TopicMetadata:
    """A topic whose partition ``i`` has the ``(leader, in-sync replicas)`` given."""
    topic = TopicMetadata()
    topic.topic = "mailsched.deliveries"
    topic.error = error
    for number, (leader, isrs) in enumerate(partitions):
        partition = PartitionMetadata()
        partition.id, partition.leader, partition.isrs = number, leader, isrs
        partition.replicas = [1, 2, 3]
        topic.partitions[number] = partition
    return topic


@pytest.mark.parametrize(
    ("topic", "min_isr", "writable"),
    [
        (topic_metadata((1, [1, 2, 3]), (2, [2, 3, 1])), 2, True),
        (topic_metadata((1, [1, 2]), (2, [2, 3])), 2, True),  # one broker of three down
        (topic_metadata((1, [1]), (1, [1])), 2, False),  # two of three down: leaders, no quorum
        (topic_metadata((1, [1, 2]), (-1, [])), 2, False),  # a partition without a leader
        (
            topic_metadata(
                (1, [1]),
            ),
            1,
            True,
        ),  # a single-broker development cluster
        (topic_metadata(), 1, False),
        (topic_metadata(error=KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)), 1, False),
        (None, 1, False),
    ],
)
def test_unwritable(topic: TopicMetadata | None, min_isr: int, writable: bool) -> None:
    assert (unwritable(topic, min_isr) is None) == writable


@pytest.mark.parametrize(("replicas", "needed"), [(1, 1), (2, 1), (3, 2), (5, 4)])
def test_min_insync_survives_one_replica_down(replicas: int, needed: int) -> None:
    assert min_insync(replicas) == needed
