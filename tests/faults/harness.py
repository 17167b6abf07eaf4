"""The figures of a fault scenario, and the report the suite writes.

The pure part (``figures``, ``failures``, ``stall``, ``unexplained``, ``markdown``) is
unit-tested in ``test_harness.py``. :class:`Results` collects one :class:`Figures` per
scenario run and writes them as JSON (``MAILSCHED_FAULTS_REPORT``, default
``tests/faults/.results.json``) with a markdown table beside it
(``.md``). ``python -m tests.faults.harness [REPORT]`` prints the table.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mailsched.domain.model import POSSIBLE_DUPLICATE_OUTCOMES, SendOutcome
from tests.support.rules import max_in_window, min_gap

#: The pass criteria of the issue "Guarantees under faults".
MAX_RECOVERY_SECONDS = 30.0
MAX_WINDOW_RATIO = 1.0

DEFAULT_REPORT = Path(__file__).parent / ".results.json"


@dataclass
class Figures:
    """What one run of one scenario measured."""

    scenario: str
    run: int
    recipients: int
    delivered: int = 0
    failed: int = 0
    lost: int = 0
    duplicates: int = 0
    #: Sends the database says may have gone twice ('orphaned' + 'ambiguous' slots).
    window_events: int = 0
    window_ratio: float | None = None
    min_gap: float | None = None
    delay: float = 0.0
    recovery: float | None = None
    #: What ``recovery`` measures up to: "first send", "completed", "api ready", ...
    recovery_kind: str = ""
    #: The longest gap between arrivals at the sink around the fault (see ``stall``).
    stall: float | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


def lost(expected: Iterable[str], received: Mapping[str, int], failed: Iterable[str]) -> list[str]:
    """Recipients neither received nor FAILED with a reason (addresses compared lower-case)."""
    got = {r.lower() for r, n in received.items() if n > 0}
    gave_up = {r.lower() for r in failed}
    return sorted({r.lower() for r in expected} - got - gave_up)


def duplicates(received: Mapping[str, int]) -> int:
    """Receipts beyond the first, over all recipients."""
    return sum(n - 1 for n in received.values() if n > 1)


def window_ratio(times: Sequence[float], window: float, limit: int) -> float | None:
    """The most arrivals in any rolling ``window``, over ``limit``; ``None`` without arrivals."""
    if not times:
        return None
    return max_in_window(times, window) / limit


def recovery(
    fault_end: float, arrivals: Sequence[float], completed_at: float | None
) -> tuple[float | None, str]:
    """Seconds from the fault's end to the first send after it, else to completion."""
    after = [t for t in arrivals if t >= fault_end]
    if after:
        return max(0.0, min(after) - fault_end), "first send"
    if completed_at is not None:
        return max(0.0, completed_at - fault_end), "completed"
    return None, "never"


def stall(times: Sequence[float], start: float, end: float) -> float | None:
    """The longest gap between consecutive arrivals that overlaps the fault ``[start, end]``.

    A gap that begins before the fault and ends after it counts whole: it is how long
    the recipients waited. ``None`` when no gap touches the fault (nothing arrived
    after it began).
    """
    gaps = [b - a for a, b in itertools.pairwise(sorted(times)) if b >= start and a <= end]
    return max(gaps, default=None)


def figures(
    scenario: str,
    run: int,
    *,
    expected: Sequence[str],
    arrivals: Sequence[tuple[str, float]],
    failed: Iterable[str],
    window_events: int,
    window: float,
    limit: int,
    delay: float,
) -> Figures:
    """The figures of a campaign from what the sink received: ``(recipient, time)`` pairs."""
    counts = Counter(r.lower() for r, _ in arrivals)
    failed = list(failed)
    times = [t for _, t in arrivals]
    gap = min_gap(times)
    return Figures(
        scenario=scenario,
        run=run,
        recipients=len({r.lower() for r in expected}),
        delivered=len(counts),
        failed=len(failed),
        lost=len(lost(expected, counts, failed)),
        duplicates=duplicates(counts),
        window_events=window_events,
        window_ratio=window_ratio(times, window, limit),
        min_gap=None if gap == float("inf") else gap,
        delay=delay,
    )


#: Outcomes of a send slot after which the server may hold the message.
MAY_HAVE_ARRIVED = POSSIBLE_DUPLICATE_OUTCOMES | {SendOutcome.SENT}


@dataclass(frozen=True)
class Receipt:
    """One message the sink accepted: for whom, from which process, when (``time.time()``)."""

    recipient: str
    pid: int | None
    at: float


@dataclass(frozen=True)
class Slot:
    """One send attempt as ``send_slots`` recorded it; ``finished`` is ``None`` in flight."""

    recipient: str
    pid: int | None
    started: float
    finished: float | None
    outcome: str | None


def unexplained(receipts: Sequence[Receipt], slots: Sequence[Slot]) -> list[Receipt]:
    """The receipts no send slot accounts for: sends made without a lease (stale sends).

    Every receipt needs a slot of its own: the recipient's, made by the process that
    sent it (when the sink could tell), that may have reached the server (SENT,
    AMBIGUOUS, ORPHANED, or still in flight), and open when the message arrived.
    Counting is not enough: an ORPHANED slot may account for a message that arrived
    before its worker stopped (the counted window event), but it was closed when the
    reaper took its delivery back, and what arrives after that was sent without a
    lease. A stale send plus a fresh claim of the same recipient is two receipts with
    one slot open for them.
    """
    # A bipartite matching (Kuhn's augmenting paths) over a few dozen of each: a
    # greedy pairing could give a receipt the one slot another receipt needed.
    holder: dict[int, int] = {}

    def fits(slot: Slot, receipt: Receipt) -> bool:
        open_until = float("inf") if slot.finished is None else slot.finished
        same_process = None in (slot.pid, receipt.pid) or slot.pid == receipt.pid
        return (
            slot.recipient.lower() == receipt.recipient.lower()
            and (slot.outcome is None or slot.outcome in MAY_HAVE_ARRIVED)
            and same_process
            and slot.started <= receipt.at <= open_until
        )

    def place(r: int, seen: set[int]) -> bool:
        for s, slot in enumerate(slots):
            if s in seen or not fits(slot, receipts[r]):
                continue
            seen.add(s)
            if s not in holder or place(holder[s], seen):
                holder[s] = r
                return True
        return False

    return [receipt for r, receipt in enumerate(receipts) if not place(r, set())]


def failures(f: Figures) -> list[str]:
    """Which pass criteria ``f`` breaks (empty: it passes)."""
    problems = []
    if f.lost:
        problems.append(f"{f.lost} recipients lost")
    if f.duplicates > f.window_events:
        problems.append(f"{f.duplicates} duplicates > {f.window_events} counted window events")
    if f.window_ratio is not None and f.window_ratio > MAX_WINDOW_RATIO:
        problems.append(f"window ratio {f.window_ratio:.2f} > {MAX_WINDOW_RATIO:.2f}")
    if f.min_gap is not None and f.delay and f.min_gap < f.delay:
        problems.append(f"min gap {f.min_gap:.3f} s < delay {f.delay} s")
    if f.recovery is None and f.recovery_kind:
        problems.append("did not recover")
    if f.recovery is not None and f.recovery > MAX_RECOVERY_SECONDS:
        problems.append(f"recovery {f.recovery:.1f} s > {MAX_RECOVERY_SECONDS:.0f} s")
    return problems


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(rows: Sequence[Mapping[str, object]]) -> str:
    """The results as a markdown table (rows as written to the JSON report)."""
    lines = [
        "| scenario | run | recipients | delivered | failed | lost | duplicates | window events "
        "| window ratio | min gap / delay (s) | recovery (s) | stall (s) | result |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---|",
    ]
    for row in rows:
        ratio = row.get("window_ratio")
        gap = row.get("min_gap")
        rec = row.get("recovery")
        longest = row.get("stall")
        kind = row.get("recovery_kind") or ""
        problems = row.get("problems") or []
        assert isinstance(problems, list)
        result = "pass" if not problems else "FAIL: " + "; ".join(str(p) for p in problems)
        gap_text = f"{_fmt(gap, '.2f')} / {row.get('delay')}"  # type: ignore[arg-type]
        recovery_text = f"{_fmt(rec, '.1f')} ({kind})" if kind else "-"  # type: ignore[arg-type]
        lines.append(
            f"| {row['scenario']} | {row['run']} | {row['recipients']} | {row['delivered']} "
            f"| {row['failed']} | {row['lost']} | {row['duplicates']} | {row['window_events']} "
            f"| {_fmt(ratio, '.2f')} | {gap_text} | {recovery_text} "  # type: ignore[arg-type]
            f"| {_fmt(longest, '.1f')} | {result} |"  # type: ignore[arg-type]
        )
    return "\n".join(lines) + "\n"


class Results:
    """Collects the figures of a pytest session and writes the report."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, object]] = []

    @classmethod
    def from_env(cls) -> Results:
        return cls(Path(os.environ.get("MAILSCHED_FAULTS_REPORT") or DEFAULT_REPORT))

    def add(self, f: Figures) -> None:
        row = asdict(f)
        row["passed"] = f.passed
        self.rows.append(row)

    def write(self) -> None:
        if not self.rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.rows, indent=2) + "\n")
        self.path.with_suffix(".md").write_text(markdown(self.rows))


def main(argv: Sequence[str]) -> int:
    path = (
        Path(argv[0]) if argv else Path(os.environ.get("MAILSCHED_FAULTS_REPORT") or DEFAULT_REPORT)
    )
    if not path.exists():
        print(f"no fault report at {path}", file=sys.stderr)
        return 1
    sys.stdout.write(markdown(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
