"""The in-process delivery queue, for the single-process mode (``mailsched run``) and tests.

Nothing survives the process: a message lost with it is found again by the
dispatcher's requeue of deliveries that stayed queued too long.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from mailsched.errors import QueueError
from mailsched.queue import DeadLetter, DueDelivery, Lane, Received


@dataclass(frozen=True, slots=True)
class MemoryReceived:
    """A delivery taken from a :class:`MemoryQueue`."""

    delivery: DueDelivery
    sequence: int
    dispatched_at: float | None = None


class MemoryQueue:
    """A :class:`~mailsched.queue.DeliveryQueue` on an unbounded deque per lane."""

    def __init__(self) -> None:
        self._lanes: dict[Lane, deque[MemoryReceived]] = {lane: deque() for lane in Lane}
        self._arrived = asyncio.Event()
        self._sequence = itertools.count()
        self._unacked: set[int] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._dead_letters: list[DeadLetter] = []
        self._closed = False

    @property
    def pending(self) -> int:
        """Messages published and not acknowledged yet (queued or handed out)."""
        return len(self._unacked)

    @property
    def dead_letters(self) -> Sequence[DeadLetter]:
        """Every dead letter recorded so far, oldest first."""
        return tuple(self._dead_letters)

    async def join(self) -> None:
        """Wait until every published message has been acknowledged."""
        await self._idle.wait()

    async def publish(self, deliveries: Sequence[DueDelivery], lane: Lane = Lane.ON_TIME) -> None:
        """Queue the deliveries; they are "durable" for as long as the process lives."""
        self._check_open()
        now = time.time()
        queue = self._lanes[lane]
        for delivery in deliveries:
            message = MemoryReceived(delivery, next(self._sequence), now)
            self._unacked.add(message.sequence)
            queue.append(message)
        if deliveries:
            self._idle.clear()
            self._arrived.set()

    async def receive(
        self,
        max_items: int,
        timeout: float,  # noqa: ASYNC109 - the DeliveryQueue contract
    ) -> Sequence[MemoryReceived]:
        """Wait up to ``timeout`` seconds for a message, then take what else its lane has
        (the on-time lane first)."""
        self._check_open()
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        try:
            async with asyncio.timeout(timeout):
                while not any(self._lanes.values()):
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            return []
        queue = next(q for q in self._lanes.values() if q)
        return [queue.popleft() for _ in range(min(max_items, len(queue)))]

    async def ack(self, messages: Sequence[Received]) -> None:
        """Forget handled messages; acknowledging one twice is harmless."""
        for message in messages:
            if not isinstance(message, MemoryReceived):
                raise TypeError(f"not a message from a MemoryQueue: {message!r}")
            self._unacked.discard(message.sequence)
        if not self._unacked:
            self._idle.set()

    async def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        """Keep the dead letters, readable through :attr:`dead_letters`."""
        self._dead_letters.extend(letters)

    async def close(self) -> None:
        """Refuse further publishing and receiving; unacknowledged messages are lost."""
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise QueueError("the queue is closed")
