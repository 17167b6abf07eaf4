"""The producer's view of an outage: failed sends make it not ready; a long one is an error.

No broker: the send underneath is replaced, and the clock is a counter the test moves.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

import pytest

from mailsched.errors import QueueUnavailable
from mailsched.queue import kafka_producer
from mailsched.queue.kafka_producer import Publisher, Record


class Scripted:
    """The send underneath: fails while :attr:`down` is set."""

    def __init__(self) -> None:
        self.down = True

    async def __call__(self, topic: str, records: Sequence[Record]) -> None:
        if self.down:
            raise QueueUnavailable("kafka _MSG_TIMED_OUT: Local: Message timed out")


@pytest.fixture
def now(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    clock = [1000.0]
    monkeypatch.setattr(kafka_producer.time, "monotonic", lambda: clock[0])
    return clock


async def _send(publisher: Publisher) -> None:
    with contextlib.suppress(QueueUnavailable):
        await publisher.send("mailsched.deliveries", [(b"1", b"{}")])


async def test_failed_sends_are_an_outage_until_one_is_confirmed(
    now: list[float], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = Publisher({}, timeout=1.0)
    underneath = Scripted()
    monkeypatch.setattr(publisher, "_send", underneath)
    assert not publisher.failed_within(60)

    await _send(publisher)
    assert publisher.failed_within(60)
    now[0] += 61
    assert not publisher.failed_within(60)  # nothing was tried since: no news

    await _send(publisher)  # 61 s of failing, nothing confirmed: an outage
    now[0] += 1
    await _send(publisher)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["Kafka has confirmed no send for 61 s"]

    underneath.down = False
    await _send(publisher)
    assert not publisher.failed_within(60)

    underneath.down = True
    now[0] += 1000
    await _send(publisher)  # a new streak: a warning where it is retried, not an error
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
    assert publisher.failed_within(60)
