"""The pure figures of the fault suite."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.faults.harness import (
    Figures,
    Receipt,
    Slot,
    duplicates,
    failures,
    figures,
    lost,
    markdown,
    recovery,
    stall,
    unexplained,
)
from tests.faults.harness import window_ratio as ratio


def test_lost_counts_neither_received_nor_failed_case_insensitively() -> None:
    received = Counter({"a@x.org": 1, "B@x.org": 2})
    assert lost(["A@x.org", "b@x.org", "c@x.org", "d@x.org"], received, ["D@X.org"]) == ["c@x.org"]


@pytest.mark.parametrize(
    ("counts", "extra"), [({}, 0), ({"a": 1}, 0), ({"a": 2, "b": 1}, 1), ({"a": 3, "b": 2}, 3)]
)
def test_duplicates_are_receipts_beyond_the_first(counts: dict[str, int], extra: int) -> None:
    assert duplicates(counts) == extra


@pytest.mark.parametrize(
    ("times", "window", "limit", "expected"),
    [
        ([], 4.0, 2, None),
        ([0.0, 1.0, 4.0, 5.0], 4.0, 2, 1.0),  # [0, 4) holds 2: the window is half-open
        ([0.0, 1.0, 3.9], 4.0, 2, 1.5),
        ([0.0, 0.0, 0.0, 0.0], 4.0, 4, 1.0),
    ],
)
def test_window_ratio(
    times: list[float], window: float, limit: int, expected: float | None
) -> None:
    assert ratio(times, window, limit) == expected


@pytest.mark.parametrize(
    ("arrivals", "completed", "expected"),
    [
        ([1.0, 12.5, 14.0], 20.0, (2.5, "first send")),
        ([1.0, 9.0], 11.0, (1.0, "completed")),
        ([1.0], None, (None, "never")),
    ],
)
def test_recovery_is_the_first_send_after_the_fault_else_completion(
    arrivals: list[float], completed: float | None, expected: tuple[float | None, str]
) -> None:
    assert recovery(10.0, arrivals, completed) == expected


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        # Arrivals every second, 6 s without any across the fault at 10-11.
        ([7.0, 8.0, 9.0, 15.0, 16.0], 6.0),
        # The longest gap is before the fault: only those touching it count.
        ([0.0, 8.0, 9.5, 11.5, 12.0], 2.0),
        # A gap spanning the whole fault counts whole.
        ([9.0, 13.0], 4.0),
        # Nothing arrived once the fault began: no stall to tell.
        ([1.0, 2.0], None),
        ([], None),
    ],
)
def test_stall_is_the_longest_gap_touching_the_fault(
    times: list[float], expected: float | None
) -> None:
    assert stall(times, 10.0, 11.0) == expected


# The SIGSTOP scenario's times: the stalled worker (pid 1) stops at 10, the reaper
# takes its leases back at 20, it resumes at 30; pid 2 is the worker that took over.
HELD = Slot("r@x", 1, 9.0, 20.0, "ORPHANED")
TAKEN_OVER = Slot("r@x", 2, 21.0, 22.0, "SENT")
FRESH = Slot("r@x", 1, 31.0, 33.0, "SENT")


@pytest.mark.parametrize(
    ("receipts", "slots", "stale"),
    [
        pytest.param([], [HELD], [], id="nothing arrived"),
        pytest.param([Receipt("r@x", 2, 21.5)], [HELD, TAKEN_OVER], [], id="taken over"),
        pytest.param(
            [Receipt("r@x", 1, 9.5), Receipt("R@x", 2, 21.5)],
            [HELD, TAKEN_OVER],
            [],
            id="arrived before the stop, then again: the counted window event",
        ),
        pytest.param(
            [Receipt("r@x", 2, 21.5), Receipt("r@x", 1, 30.5)],
            [HELD, TAKEN_OVER],
            [Receipt("r@x", 1, 30.5)],
            id="stale send after SIGCONT",
        ),
        pytest.param(
            [Receipt("r@x", 1, 32.0)], [HELD, FRESH], [], id="claimed afresh after SIGCONT"
        ),
        pytest.param(
            [Receipt("r@x", 1, 31.5), Receipt("r@x", 1, 32.0)],
            [HELD, FRESH],
            [Receipt("r@x", 1, 32.0)],
            id="stale send plus a fresh claim of the same recipient",
        ),
        pytest.param(
            [Receipt("r@x", 2, 21.5), Receipt("r@x", 1, 31.5), Receipt("r@x", 1, 32.0)],
            [HELD, TAKEN_OVER, FRESH],
            [Receipt("r@x", 1, 32.0)],
            id="taken over, claimed afresh, and a stale send",
        ),
        pytest.param(
            [Receipt("r@x", 1, 21.5)],
            [HELD, TAKEN_OVER],
            [Receipt("r@x", 1, 21.5)],
            id="another worker's slot accounts for nothing the stalled one sent",
        ),
        pytest.param([Receipt("r@x", None, 21.5)], [HELD, TAKEN_OVER], [], id="sender unknown"),
        pytest.param(
            [Receipt("r@x", 2, 21.5)],
            [HELD, Slot("r@x", 2, 21.0, 22.0, "RETRY")],
            [Receipt("r@x", 2, 21.5)],
            id="a refused send accounts for nothing",
        ),
        pytest.param(
            [Receipt("r@x", 2, 21.5)],
            [HELD, Slot("r@x", 2, 21.0, 22.0, "AMBIGUOUS")],
            [],
            id="a send in doubt may have arrived",
        ),
        pytest.param(
            [Receipt("s@x", 2, 21.5)],
            [HELD, TAKEN_OVER],
            [Receipt("s@x", 2, 21.5)],
            id="another recipient's slot",
        ),
    ],
)
def test_unexplained_arrivals_are_stale_sends(
    receipts: list[Receipt], slots: list[Slot], stale: list[Receipt]
) -> None:
    assert unexplained(receipts, slots) == stale


def test_unexplained_matches_rather_than_pairs_greedily() -> None:
    # The receipt at 21.5 fits both slots and comes first; only the wide one also
    # fits the receipt at 25: a greedy pairing would leave that one out.
    wide = Slot("r@x", 2, 21.0, 26.0, "SENT")
    narrow = Slot("r@x", 2, 21.0, 22.0, "SENT")
    receipts = [Receipt("r@x", 2, 21.5), Receipt("r@x", 2, 25.0)]
    assert unexplained(receipts, [wide, narrow]) == []


def test_figures_and_criteria() -> None:
    f = figures(
        "s",
        1,
        expected=["a@x", "b@x", "c@x"],
        arrivals=[("a@x", 0.0), ("a@x", 0.5), ("b@x", 1.0)],
        failed=["c@x"],
        window_events=1,
        window=4.0,
        limit=3,
        delay=0,
    )
    assert (f.delivered, f.failed, f.lost, f.duplicates) == (2, 1, 0, 1)
    assert f.window_ratio == 1.0 and f.min_gap == 0.5
    assert failures(f) == []
    f.window_events = 0
    f.recovery, f.recovery_kind = 31.0, "first send"
    assert failures(f) == ["1 duplicates > 0 counted window events", "recovery 31.0 s > 30 s"]


def test_figures_flag_lost_window_and_gap() -> None:
    f = Figures("s", 1, 3, lost=1, window_ratio=1.25, min_gap=0.5, delay=1, recovery_kind="x")
    assert failures(f) == [
        "1 recipients lost",
        "window ratio 1.25 > 1.00",
        "min gap 0.500 s < delay 1 s",
        "did not recover",
    ]


def test_markdown_has_a_row_per_run() -> None:
    f = Figures("kill", 2, 30, delivered=30, window_ratio=0.5, recovery=3.25)
    f.recovery_kind = "first send"
    row = {**f.__dict__, "passed": True}
    table = markdown([row])
    assert table.splitlines()[2] == (
        "| kill | 2 | 30 | 30 | 0 | 0 | 0 | 0 | 0.50 | - / 0.0 | 3.2 (first send) | - | pass |"
    )
    row["stall"] = 4.25
    assert "| 3.2 (first send) | 4.2 | pass |" in markdown([row])
