"""A refused acknowledgement is the worker's to handle: a warning, never a lost task error."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Sequence
from typing import Any

import pytest

from mailsched.consumer.worker import Worker
from mailsched.errors import QueueUnavailable
from mailsched.queue import DueDelivery, Received
from mailsched.queue.memory import MemoryQueue
from tests.support.workers import loop_deps


class CommitRefusedOnce(MemoryQueue):
    """Refuses the first acknowledgement as Kafka does without a group coordinator,
    and, like Kafka, keeps it for the next commit."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = asyncio.Event()
        self._kept: list[Received] = []

    async def ack(self, messages: Sequence[Received]) -> None:
        if not self.refused.is_set():
            self.refused.set()
            self._kept.extend(messages)
            raise QueueUnavailable("kafka _WAIT_COORD: Commit failed: Waiting for coordinator")
        kept, self._kept = self._kept, []
        await super().ack([*kept, *messages])


class NoSendWorker(Worker):
    """A worker whose batches have nothing to do: only their acknowledgement is tested."""

    async def _work(self, deliveries: dict[int, list[int]]) -> None:
        return None


def _worker(queue: MemoryQueue) -> Worker:
    return NoSendWorker(loop_deps(queue))


async def test_a_failed_commit_is_a_warning_and_goes_with_the_next(
    caplog: pytest.LogCaptureFixture,
) -> None:
    unhandled: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    caplog.set_level(logging.WARNING, logger="mailsched.consumer.worker")
    queue = CommitRefusedOnce()
    stop = asyncio.Event()
    running = asyncio.create_task(_worker(queue).run(stop))
    try:
        await queue.publish([DueDelivery(1, 1)])
        await queue.refused.wait()
        await queue.publish([DueDelivery(2, 1)])
        await queue.join()  # the second commit took the first one's messages along
    finally:
        stop.set()
        await running
        gc.collect()  # "Task exception was never retrieved" is reported on collection
        loop.set_exception_handler(None)

    assert unhandled == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("left for the next commit" in r.getMessage() for r in warnings), caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
