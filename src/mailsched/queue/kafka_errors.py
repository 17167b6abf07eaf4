"""Where confluent-kafka's errors become mailsched's, and the only place.

confluent-kafka reports failures three ways: a raised ``KafkaException``
wrapping a ``KafkaError``, a ``KafkaError`` handed to a delivery callback or
set on a consumed message, and ``BufferError`` when the producer's local queue
is full. All three go through :func:`map_kafka_exceptions`::

    KafkaException / KafkaError
    ├── the topic is unknown to the broker (deleted,    -> TopicMissing (a QueueUnavailable)
    │   or the cluster's data wiped)
    ├── broker unreachable, timed out, leader moving,   -> QueueUnavailable
    │   rebalancing, or marked retriable by the client
    └── anything else (authorization, bad topic, fatal) -> QueueError
    BufferError (local producer queue full)             -> QueueUnavailable
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

from confluent_kafka import KafkaError, KafkaException

from mailsched.errors import QueueError, QueueUnavailable

_MISSING_TOPIC = frozenset(
    {
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.UNKNOWN_TOPIC_ID,
    }
)

_UNAVAILABLE = frozenset(
    {
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TRANSPORT,
        KafkaError._RESOLVE,
        KafkaError._TIMED_OUT,
        KafkaError._TIMED_OUT_QUEUE,
        KafkaError._MSG_TIMED_OUT,
        KafkaError._WAIT_COORD,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.BROKER_NOT_AVAILABLE,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.NOT_COORDINATOR,
        KafkaError.REBALANCE_IN_PROGRESS,
    }
)


class TopicMissing(QueueUnavailable):
    """The broker does not know the topic: create it again, then retry."""


def translate(error: KafkaError) -> QueueError:
    """The mailsched error for one ``KafkaError`` (not raised)."""
    if error.code() in _MISSING_TOPIC:
        return TopicMissing(f"kafka {error.name()}: {error.str()}")
    unavailable = error.code() in _UNAVAILABLE or (error.retriable() and not error.fatal())
    kind = QueueUnavailable if unavailable else QueueError
    return kind(f"kafka {error.name()}: {error.str()}")


@contextmanager
def map_kafka_exceptions() -> Iterator[None]:
    """Re-raise confluent-kafka's exceptions inside the block as :class:`QueueError`."""
    try:
        yield
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError):
            raise translate(error) from exc
        raise QueueError(f"kafka: {exc}") from exc
    except BufferError as exc:
        raise QueueUnavailable(f"kafka producer queue is full: {exc}") from exc


def raise_kafka_error(error: KafkaError) -> NoReturn:
    """Raise a ``KafkaError`` that arrived as a value, translated like a raised one."""
    with map_kafka_exceptions():
        raise KafkaException(error)
    raise AssertionError("unreachable")  # pragma: no cover - the block always raises
