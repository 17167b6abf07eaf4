"""The hand-off of due deliveries from the dispatcher to the workers.

The queue carries due work only: future deliveries live in the database. It is
at-least-once: a message may come twice, and the worker's claim in the database
makes that harmless.

It has two lanes. Deliveries still on their plan travel on the on-time lane;
those already behind it (a backlog: a big campaign due at once, work that piled
up while workers were down) travel on the behind lane. A worker takes from the
on-time lane first, so a backlog never delays work that can still be on time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Lane(StrEnum):
    """Which way a due delivery travels to the workers."""

    #: Still on its plan: taken before anything behind.
    ON_TIME = "on_time"
    #: Already behind its plan, or one of a crowd due at once: taken when nothing
    #: is on time.
    BEHIND = "behind"


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A delivery that has come due: what travels on the queue."""

    delivery_id: int
    campaign_id: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A delivery that failed for good, and why."""

    delivery: DueDelivery
    reason: str


class Received(Protocol):
    """A message taken from the queue, to be acknowledged once handled."""

    @property
    def delivery(self) -> DueDelivery: ...

    @property
    def dispatched_at(self) -> float | None:
        """When the dispatcher published it (unix seconds), when known."""
        ...


class DeliveryQueue(Protocol):
    """What the dispatcher and the worker need from a queue."""

    async def publish(self, deliveries: Sequence[DueDelivery], lane: Lane = Lane.ON_TIME) -> None:
        """Put deliveries on the queue's ``lane``; return only once the queue holds them
        durably.

        Raises :class:`~mailsched.errors.QueueError` when it could not.
        """
        ...

    async def receive(
        self,
        max_items: int,
        timeout: float,  # noqa: ASYNC109 - a poll timeout, not a deadline for the caller
    ) -> Sequence[Received]:
        """Take up to ``max_items`` messages, waiting at most ``timeout`` seconds for the first.

        Messages of the on-time lane come before any of the behind lane; one call
        returns messages of one lane.
        """
        ...

    async def ack(self, messages: Sequence[Received]) -> None:
        """Acknowledge handled messages: their outcome is in the database.

        Messages handled out of order are remembered; a message is never
        considered done before every earlier message of its partition is.
        Raises :class:`~mailsched.errors.QueueError` when the queue could not
        confirm; the acknowledgements are kept and go with the next one.
        """
        ...

    async def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        """Record deliveries that failed for good, each with its reason, where operators
        can find them; return only once the queue holds them durably.

        Raises :class:`~mailsched.errors.QueueError` when it could not.
        """
        ...

    async def close(self) -> None:
        """Release the queue's resources; unacknowledged messages come again later."""
        ...
