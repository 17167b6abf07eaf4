"""Which Kafka offsets may be committed when messages finish out of order.

A worker handles several batches at once and they finish in any order, but a
Kafka commit is one position per partition: everything before it counts as
done. So a partition's commit may only move up to its first message that is
still unacknowledged. This module is that bookkeeping and nothing else: no
Kafka client, no I/O, no threads (the consumer calls it from its one thread).

Only offsets that were actually received are tracked, so gaps in a partition's
offsets (transaction markers, compaction) never hold a commit back.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

Partition = tuple[str, int]
"""A topic and a partition number."""


@dataclass(slots=True)
class _PartitionState:
    received: deque[int] = field(default_factory=deque)  # in order, not yet committable
    pending: set[int] = field(default_factory=set)  # the same offsets, for lookups
    done: set[int] = field(default_factory=set)  # acknowledged, waiting for earlier ones
    # The position (next offset to read) up to which everything is done, and
    # the last one the broker confirmed; a commit is due while they differ.
    done_up_to: int | None = None
    committed: int | None = None


class OffsetTracker:
    """Per-partition received and acknowledged offsets; yields committable positions."""

    def __init__(self) -> None:
        self._partitions: dict[Partition, _PartitionState] = {}

    def received(self, partition: Partition, offset: int) -> None:
        """Note a message handed out.

        Offsets of a partition normally come in increasing order. If the
        client rewinds (a seek, a log truncation), the partition's tracking
        starts over from there: earlier unacknowledged offsets are read again,
        and nothing is committed past them.
        """
        state = self._partitions.setdefault(partition, _PartitionState())
        if state.received and offset <= state.received[-1]:
            state = self._partitions[partition] = _PartitionState(committed=state.committed)
        state.received.append(offset)
        state.pending.add(offset)

    def ack(self, partition: Partition, offset: int) -> None:
        """Note a message as handled; unknown partitions and offsets are ignored.

        An acknowledgement may arrive for a partition that was revoked (or
        revoked and assigned again) since the message was received: the new
        owner reads it again, so there is nothing left to record.
        """
        state = self._partitions.get(partition)
        if state is None or offset not in state.pending:
            return
        state.done.add(offset)
        while state.received and state.received[0] in state.done:
            head = state.received.popleft()
            state.pending.remove(head)
            state.done.remove(head)
            state.done_up_to = head + 1

    def committable(self) -> dict[Partition, int]:
        """Positions to commit: per partition, the offset after its done prefix, if it moved."""
        return {
            partition: state.done_up_to
            for partition, state in self._partitions.items()
            if state.done_up_to is not None and state.done_up_to != state.committed
        }

    def committed(self, positions: Mapping[Partition, int]) -> None:
        """Record positions the broker has confirmed."""
        for partition, position in positions.items():
            state = self._partitions.get(partition)
            if state is not None:
                state.committed = position

    def forget(self, partitions: Iterable[Partition]) -> None:
        """Drop all tracking of partitions this consumer no longer owns."""
        for partition in partitions:
            self._partitions.pop(partition, None)

    def outstanding(self) -> int:
        """How many received messages are not acknowledged yet."""
        return sum(len(s.pending) - len(s.done) for s in self._partitions.values())
