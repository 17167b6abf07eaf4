"""Edges of the sending calendar found in review: each of these failed before its fix."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from mailsched.config import WorkerConfig
from mailsched.consumer.outcomes import Attempt, SendResult, sort_results
from mailsched.domain.calendar import DAY, RECIPIENT, Schedule, Window, long_gap
from mailsched.domain.model import Campaign, CampaignStatus
from mailsched.errors import SlowDown
from mailsched.producer.campaigns import _fingerprint
from mailsched.producer.schemas import CampaignRequest, ScheduleSpec
from mailsched.store.sending import Claimable

HOUR = 3600
CONFIG = WorkerConfig(
    batch_size=100,
    inflight_batches=1,
    lease=timedelta(seconds=120),
    hold=timedelta(seconds=2),
    max_attempts=5,
    retry_base=timedelta(seconds=10),
    retry_cap=timedelta(seconds=60),
    shutdown_grace=1.0,
)


def test_a_window_ending_at_midnight_ends_at_24_00() -> None:
    spec = ScheduleSpec.model_validate(
        {"timezone": "Europe/Berlin", "windows": [{"start": "22:00", "end": "00:00"}]}
    )
    assert spec.domain().windows == (Window(22 * HOUR, DAY),)


def test_a_slow_down_waits_for_the_server_not_for_one_recipients_window() -> None:
    """A slowed Tokyo send near its window's close: the retry waits for Tokyo's next
    opening, but the campaign (every other zone) only for the server's backoff."""
    office = Schedule(RECIPIENT, (Window(9 * HOUR, 17 * HOUR),), fallback="Europe/Berlin")
    campaign = Campaign(
        id=1,
        user_id=1,
        subject="s",
        body="b",
        start_time=datetime(2027, 1, 4, tzinfo=UTC),
        delay_seconds=60,
        hourly_limit=100,
        status=CampaignStatus.RUNNING,
        recipient_count=3,
        slot_seq=1,
        created_at=datetime(2027, 1, 1, tzinfo=UTC),
        completed_at=None,
        schedule=office,
    )
    now = datetime(2027, 1, 4, 7, 59, 50, tzinfo=UTC)  # 16:59:50 in Tokyo
    row = Claimable(7, "a@example.jp", now, 0, timezone="Asia/Tokyo")
    slowed = SendResult(now, SlowDown("try later", 421))
    verdict = sort_results([Attempt(1, row, slowed, campaign)], CONFIG, now, lambda: 1.0)
    assert verdict.slow_down_until == now + CONFIG.retry_base
    (retry,) = verdict.outcomes.retry
    assert retry.at == datetime(2027, 1, 5, 0, 0, tzinfo=UTC)  # 09:00 in Tokyo


@pytest.mark.parametrize(
    ("excluded", "expected"),
    [
        # Every Monday for 1,000 weeks, Mondays only: from the last open Monday to 2046.
        (
            [date(2027, 1, 4) + timedelta(weeks=i) for i in range(1000)],
            (date(2026, 12, 28), date(2046, 3, 5)),
        ),
        ([date(2027, 1, 4) + timedelta(weeks=i) for i in range(50)], None),
    ],
)
def test_long_gaps_made_by_excluded_dates(
    excluded: list[date], expected: tuple[date, date] | None
) -> None:
    schedule = Schedule("UTC", (Window(0, HOUR),), days=frozenset({0}), exclude=frozenset(excluded))
    assert long_gap(schedule, date(2026, 12, 1)) == expected


@pytest.mark.parametrize(
    ("days", "gap"), [(399, None), (401, (date(2026, 12, 31), date(2028, 2, 6)))]
)
def test_the_longest_allowed_gap_is_400_days(days: int, gap: tuple[date, date] | None) -> None:
    excluded = frozenset(date(2027, 1, 1) + timedelta(days=i) for i in range(days))
    schedule = Schedule("UTC", (Window(0, HOUR),), exclude=excluded)
    assert long_gap(schedule, date(2026, 12, 1)) == gap


def test_a_gap_before_the_start_does_not_count() -> None:
    excluded = frozenset(date(2027, 1, 1) + timedelta(days=i) for i in range(500))
    schedule = Schedule("UTC", (Window(0, HOUR),), exclude=excluded)
    assert long_gap(schedule, date(2028, 5, 1)) is None


BODY: dict[str, Any] = {
    "userId": 1,
    "subject": "Hi",
    "body": "Hello",
    "startTime": "2027-01-04T09:00:00Z",
    "delaySeconds": 60,
    "hourlyLimit": 100,
    "recipients": ["a@example.com", {"email": "b@example.com", "name": "B"}],
}


def test_an_idempotency_fingerprint_without_a_schedule_is_as_before_schedules() -> None:
    """The hash mailsched 2908da1 (before schedules) gave this body: a client retrying
    with the same key across the upgrade still gets its stored answer, not a 409."""
    request = CampaignRequest.model_validate(BODY)
    assert _fingerprint(request) == (
        "1607dfbbd3b73a876b1eecce5e4cb571505ed80cb1d4286f9f777080d15d6185"
    )
