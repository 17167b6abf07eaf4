"""The contiguous-prefix offset tracker: what may be committed after out-of-order acks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailsched.queue.kafka_offsets import OffsetTracker

P0 = ("deliveries", 0)
P1 = ("deliveries", 1)


def _tracker(partition: tuple[str, int], offsets: list[int]) -> OffsetTracker:
    tracker = OffsetTracker()
    for offset in offsets:
        tracker.received(partition, offset)
    return tracker


@pytest.mark.parametrize(
    ("received", "acked", "expected"),
    [
        ([0, 1, 2], [], None),
        ([0, 1, 2], [0], 1),
        ([0, 1, 2], [1, 2], None),  # the first is still out: nothing moves
        ([0, 1, 2], [2, 0], 1),
        ([0, 1, 2], [2, 1, 0], 3),
        ([5, 6, 7], [5, 7], 6),  # a consumer starting mid-partition
        ([0, 3, 4, 9], [0, 3, 4], 5),  # gaps (transaction markers) do not hold it back
        ([0, 3, 4, 9], [9, 4, 3, 0], 10),
        ([0, 1], [1, 1, 0, 0], 2),  # repeated acks are harmless
        ([0, 1], [7], None),  # an offset never received is ignored
    ],
)
def test_commit_position_is_after_the_done_prefix(
    received: list[int], acked: list[int], expected: int | None
) -> None:
    tracker = _tracker(P0, received)
    for offset in acked:
        tracker.ack(P0, offset)
    assert tracker.committable().get(P0) == expected


def test_partitions_are_independent() -> None:
    tracker = _tracker(P0, [0, 1])
    tracker.received(P1, 10)
    tracker.received(P1, 11)
    tracker.ack(P1, 10)
    tracker.ack(P0, 1)
    assert tracker.committable() == {P1: 11}
    assert tracker.outstanding() == 2


def test_confirmed_positions_are_not_offered_again() -> None:
    tracker = _tracker(P0, [0, 1, 2])
    tracker.ack(P0, 0)
    tracker.committed({P0: 1})
    assert tracker.committable() == {}
    tracker.ack(P0, 1)
    assert tracker.committable() == {P0: 2}


def test_an_unconfirmed_position_stays_due() -> None:
    tracker = _tracker(P0, [0, 1])
    tracker.ack(P0, 0)
    assert tracker.committable() == {P0: 1}
    tracker.committed({})  # the commit failed
    assert tracker.committable() == {P0: 1}


def test_a_forgotten_partition_ignores_late_acks() -> None:
    tracker = _tracker(P0, [0, 1])
    tracker.forget([P0])
    tracker.ack(P0, 0)
    assert tracker.committable() == {}
    assert tracker.outstanding() == 0


def test_a_rewind_starts_the_partition_over() -> None:
    tracker = _tracker(P0, [0, 1, 2, 3])
    tracker.ack(P0, 0)
    tracker.committed({P0: 1})
    tracker.received(P0, 1)  # read again after a rewind
    tracker.ack(P0, 2)  # an ack of the earlier read: not outstanding any more
    assert tracker.committable() == {}
    tracker.ack(P0, 1)
    assert tracker.committable() == {P0: 2}


@st.composite
def _received_and_acks(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    gaps = draw(st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=40))
    start = draw(st.integers(min_value=0, max_value=1000))
    offsets = [start + sum(gaps[:i]) for i in range(len(gaps))]
    acked = draw(st.lists(st.sampled_from(offsets), max_size=60))
    return offsets, acked


@given(_received_and_acks())
def test_the_commit_never_passes_an_unacknowledged_offset(
    case: tuple[list[int], list[int]],
) -> None:
    received, acked = case
    tracker = _tracker(P0, received)
    done: set[int] = set()
    for offset in acked:
        tracker.ack(P0, offset)
        done.add(offset)
        position = tracker.committable().get(P0)
        unacked = [o for o in received if o not in done]
        if position is not None:
            assert all(o >= position for o in unacked)
            # ...and it is as far as allowed: right after the last done offset
            # before the first unacknowledged one.
            before = [o for o in received if o < min(unacked, default=position + 1)]
            assert position == max(before) + 1
        else:
            assert received[0] not in done
        assert tracker.outstanding() == len(unacked)
