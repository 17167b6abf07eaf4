"""Sorting send results into what the database records. Pure: time and jitter are arguments."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from mailsched.config import WorkerConfig
from mailsched.domain.limits import backoff
from mailsched.domain.model import Campaign, SendOutcome
from mailsched.errors import PermanentSendError, SendError, SlowDown
from mailsched.store.sending import Claimable, Outcomes, Retry


@dataclass(frozen=True, slots=True)
class SendResult:
    """One send as the worker saw it: when it ended, and the error if it failed."""

    finished_at: datetime
    error: Exception | None = None


@dataclass(frozen=True, slots=True)
class Sorted:
    """The outcomes to record, and when the campaign may send again after a slow-down."""

    outcomes: Outcomes
    slow_down_until: datetime | None = None
    possible_duplicates: int = 0
    results: dict[SendOutcome, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One claimed delivery, its send slot, and what came of it (``None``: not sent)."""

    seq: int
    row: Claimable
    result: SendResult | None
    campaign: Campaign


def sort_results(
    attempts: Sequence[Attempt],
    config: WorkerConfig,
    now: datetime,
    jitter: Callable[[], float],
) -> Sorted:
    """Decide each claimed delivery's fate."""
    sent: list[tuple[int, datetime]] = []
    retry: list[Retry] = []
    failed: list[tuple[int, str]] = []
    released: list[int] = []
    ends: list[tuple[int, datetime, SendOutcome]] = []
    slow_down_until: datetime | None = None
    for attempt_ in attempts:
        seq, row, res = attempt_.seq, attempt_.row, attempt_.result
        if res is None:
            released.append(row.id)
            ends.append((seq, now, SendOutcome.RELEASED))
            continue
        error = res.error
        attempt = row.attempts + 1
        if error is None:
            sent.append((row.id, res.finished_at))
            outcome = SendOutcome.SENT
        elif isinstance(error, SlowDown):
            pause = now + backoff(1, config.retry_base, config.retry_cap, jitter())
            slow_down_until = max(pause, slow_down_until or pause)
            retry.append(Retry(row.id, pause, _describe(error), row.attempts))
            outcome = SendOutcome.SLOWED
        elif isinstance(error, PermanentSendError) or attempt >= config.max_attempts:
            failed.append((row.id, _describe(error)))
            outcome = SendOutcome.FAILED
        else:
            delay = backoff(attempt, config.retry_base, config.retry_cap, jitter())
            retry.append(Retry(row.id, now + delay, _describe(error), attempt))
            outcome = SendOutcome.RETRY
        if isinstance(error, SendError) and error.ambiguous:
            outcome = SendOutcome.AMBIGUOUS
        ends.append((seq, res.finished_at, outcome))
    counts: dict[SendOutcome, int] = {}
    for _, _, outcome in ends:
        counts[outcome] = counts.get(outcome, 0) + 1
    return Sorted(
        Outcomes(sent=sent, retry=retry, failed=failed, released=released, finished=ends),
        slow_down_until,
        counts.get(SendOutcome.AMBIGUOUS, 0),
        counts,
    )


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"
