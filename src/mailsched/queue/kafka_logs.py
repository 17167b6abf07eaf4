"""Where librdkafka's own reports go: mailsched's logging, at levels that mean something.

Every confluent-kafka client is configured with :func:`client_logging`
(``logger`` and ``error_cb``), so librdkafka never writes lines of its own to
stderr, which would be plain text in the middle of a JSON log.

librdkafka logs a refused connection to one broker at ERROR (facility FAIL).
In a cluster of three that is a broker down, which the cluster survives: a
warning. Whether writes still succeed is what matters, and that is reported
by the sends themselves and by ``/readyz``.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError

logger = logging.getLogger("mailsched.queue.librdkafka")

#: librdkafka facilities whose errors concern one broker connection, not the client.
_ONE_BROKER = frozenset({"FAIL", "BROKERFAIL", "REQTMOUT", "CONNECT"})


class LibrdkafkaLog:
    """What confluent-kafka calls for librdkafka's log lines (its ``logger`` setting)."""

    def log(self, level: int, msg: str, *args: Any) -> None:
        """Log one librdkafka line; ``args`` are its facility, client name and text."""
        facility = str(args[0]) if args else ""
        if level > logging.WARNING and facility in _ONE_BROKER:
            level = logging.WARNING
        logger.log(level, msg, *args)


def log_client_error(error: KafkaError) -> None:
    """confluent-kafka's ``error_cb``: client-wide conditions.

    The operations they affect fail on their own, and say so; a connection
    failure is in librdkafka's own log already.
    """
    if error.fatal():
        logger.error("fatal Kafka client error: %s", error)
    elif error.code() == KafkaError._ALL_BROKERS_DOWN:
        logger.warning("Kafka client error: %s", error)
    else:
        logger.debug("Kafka client error: %s", error)


def client_logging() -> dict[str, Any]:
    """The configuration that sends a client's reports to mailsched's logging."""
    return {"logger": LibrdkafkaLog(), "error_cb": log_client_error}
