"""Who leads what in the 3-node Kafka cluster, and waiting for its replicas to catch up.

Node ids are ``scripts/services kafka-node`` numbers (each node's ``node.id``).
"""

from __future__ import annotations

import time
from collections import Counter

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient


class Replicas:
    """Asks the cluster at ``bootstrap`` about its partitions."""

    def __init__(self, bootstrap: str) -> None:
        # Errors only: a node taken down on purpose is no news.
        self._config: dict[str, str | int | float | bool] = {
            "bootstrap.servers": bootstrap,
            "log_level": 3,
        }
        self._admin = AdminClient(self._config)

    def leaders(self, topic: str) -> dict[int, int]:
        """Each partition of ``topic`` and the node leading it (-1: none)."""
        found = self._admin.list_topics(topic, timeout=10).topics[topic]
        return {number: p.leader for number, p in found.partitions.items()}

    def used_partition(self, topic: str) -> int | None:
        """The one partition of ``topic`` holding records (a campaign keeps to one)."""
        consumer = Consumer({**self._config, "group.id": "faults-probe"})
        try:
            for number in sorted(self.leaders(topic)):
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, number), timeout=10
                )
                if high > low:
                    return number
            return None
        finally:
            consumer.close()

    def busiest_leader(self, topic: str, prefer: int | None) -> tuple[int, int]:
        """The node leading most of ``topic``'s partitions, and how many; of nodes leading
        as many, the leader of partition ``prefer`` (the campaign's)."""
        leaders = self.leaders(topic)
        counts = Counter(node for node in leaders.values() if node >= 0)
        top = max(counts.values())
        tied = sorted(node for node, n in counts.items() if n == top)
        favourite = leaders.get(prefer) if prefer is not None else None
        node = favourite if favourite in tied else tied[0]
        assert node is not None
        return node, top

    def wait_in_sync(self, within: float) -> float:
        """Wait until every partition of every topic has all its replicas in sync;
        return how long that took."""
        started = time.monotonic()
        while True:
            lagging = [
                f"{name}/{number}"
                for name, topic in self._admin.list_topics(timeout=10).topics.items()
                for number, p in topic.partitions.items()
                if p.leader < 0 or len(p.isrs) < len(p.replicas)
            ]
            if not lagging:
                return time.monotonic() - started
            waited = time.monotonic() - started
            assert waited < within, f"not in sync within {within:.0f} s: {lagging[:10]}"
            time.sleep(0.5)
