"""The plan's margin: the plan and the worker agree on when each gap and window opens.

The worker admits a send by :func:`~mailsched.domain.limits.permit`, measured from
when the server *answered* the campaign's earlier sends. Here a worker is simulated
that asks at each send's planned time (or, told to wait, at the moment it is told)
and whose sends are answered some latency after they start. With the plan made by
``rules.planned(margin)``, every send starts on its plan while the latencies stay
within the margin, and a slower send delays only as many later ones as its excess
takes to be absorbed; without the margin, the lateness adds up send after send.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailsched.domain.limits import permit
from mailsched.domain.plan import Rules, plan, steady_offset

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
MS = timedelta(milliseconds=1)


def simulate(
    planned: Sequence[datetime], rules: Rules, latencies: Sequence[timedelta]
) -> list[datetime]:
    """Each send's start, as a worker measuring ``rules`` from the answers makes it: it
    asks at the planned time, and again when told to wait; a send not yet answered
    counts as ending at the moment of asking."""
    starts: list[datetime] = []
    answers: list[datetime] = []
    for i, at in enumerate(planned):
        now = at
        while True:
            seen = [min(answer, now) for answer in answers]
            last = seen[-1] if seen else None
            refs = [seen[i - rules.limit] if i >= rules.limit else None]
            answer = permit(now, [at], rules, last, refs)
            if answer.admitted:
                break
            assert answer.next_at is not None and answer.next_at > now
            now = answer.next_at
        starts.append(now)
        answers.append(now + latencies[i])
    return starts


def lateness(planned: Sequence[datetime], starts: Sequence[datetime]) -> list[timedelta]:
    return [s - p for s, p in zip(starts, planned, strict=True)]


@pytest.mark.parametrize(
    "rules",
    [
        Rules(timedelta(seconds=1), 1_000, timedelta(hours=1)),  # the delay paces
        Rules(timedelta(0), 5, timedelta(seconds=1)),  # bursts of five a window
        Rules(timedelta(milliseconds=100), 3, timedelta(seconds=2)),  # both
    ],
    ids=["delay", "window", "both"],
)
def test_sends_answered_within_the_margin_all_start_on_plan(rules: Rules) -> None:
    margin = 80 * MS
    planned = plan(40, T0, rules.planned(margin))
    starts = simulate(planned, rules, [margin] * 40)
    assert lateness(planned, starts) == [timedelta(0)] * 40


@pytest.mark.parametrize(
    "rules",
    [
        Rules(timedelta(seconds=1), 1_000, timedelta(hours=1)),
        Rules(timedelta(0), 5, timedelta(seconds=1)),
    ],
    ids=["delay", "window"],
)
def test_without_a_margin_the_lag_adds_up(rules: Rules) -> None:
    """What the margin removes: each gap or window opens a send's latency late."""
    planned = plan(40, T0, rules)
    late = lateness(planned, simulate(planned, rules, [50 * MS] * 40))
    assert late[-1] >= 7 * 50 * MS
    assert late == sorted(late)


@given(
    st.integers(0, 3_000),
    st.lists(st.integers(0, 400), min_size=1, max_size=60),
    st.integers(0, 300),
)
def test_a_slow_send_is_absorbed_by_the_next_margins(
    delay_ms: int, latencies_ms: list[int], margin_ms: int
) -> None:
    """Under a delay alone, a send starts ``max(0, lateness + latency - margin)`` after its
    plan, counting the send before it: a queue's waiting time (Lindley's recurrence),
    which never grows while sends take no longer than the margin."""
    rules = Rules(delay_ms * MS, 10_000, timedelta(hours=1))
    margin = margin_ms * MS
    latencies = [ms * MS for ms in latencies_ms]
    planned = plan(len(latencies), T0, rules.planned(margin))
    late = lateness(planned, simulate(planned, rules, latencies))
    expected = [timedelta(0)]
    for i in range(1, len(latencies)):
        behind = expected[-1] + latencies[i - 1] - margin if delay_ms else timedelta(0)
        expected.append(max(timedelta(0), behind))
    assert late == expected


@given(st.integers(0, 5_000), st.integers(1, 50), st.integers(1, 7_200), st.integers(0, 1_000))
def test_the_closed_form_follows_the_margin(
    delay_ms: int, limit: int, window_s: int, margin_ms: int
) -> None:
    """A draft's schedule plans in SQL from :func:`steady_offset`: the margin changes it
    as it changes :func:`plan`."""
    rules = Rules(delay_ms * MS, limit, timedelta(seconds=window_s)).planned(margin_ms * MS)
    planned = plan(3 * limit + 2, T0, rules)
    assert [T0 + steady_offset(i, rules) for i in range(len(planned))] == planned


def test_the_margin_leaves_a_campaign_without_rules_alone() -> None:
    rules = Rules(timedelta(0), 10_000, timedelta(hours=1))
    assert rules.planned(100 * MS).delay == timedelta(0)
    assert plan(5, T0, rules.planned(100 * MS)) == [T0] * 5
    with pytest.raises(ValueError, match="margin"):
        rules.planned(-MS)
