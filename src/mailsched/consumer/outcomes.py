"""Sorting send results into what the database records. Pure: time and jitter are arguments."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from mailsched.config import WorkerConfig
from mailsched.domain.limits import backoff
from mailsched.domain.model import Campaign, SendOutcome
from mailsched.domain.shaping import GroupState, Shaping
from mailsched.errors import PermanentSendError, RelayUnavailable, SendError, SlowDown
from mailsched.store.sending import Claimable, Outcomes, Reply, Retry
from mailsched.store.transitions import Facts


@dataclass(frozen=True, slots=True)
class SendResult:
    """One send as the worker saw it: when it ended, and the error if it failed."""

    finished_at: datetime
    error: Exception | None = None
    #: The server's reply text to an accepted send (after its 250), when it gave one.
    reply: str | None = None
    #: The relay that answered, by name.
    relay: str | None = None


@dataclass(frozen=True, slots=True)
class Sorted:
    """The outcomes to record, when the campaign may send again after a slow-down, and
    what replies did to shaping groups."""

    outcomes: Outcomes
    slow_down_until: datetime | None = None
    possible_duplicates: int = 0
    results: dict[SendOutcome, int] = field(default_factory=dict)
    groups: dict[str, GroupState] = field(default_factory=dict)


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
    shaping: Shaping | None = None,
) -> Sorted:
    """Decide each claimed delivery's fate.

    A reply that matches a rule of one of the delivery's shaping groups slows or
    suspends that group. A slow-down (421, 45x) from the destination (not from a
    relay that took nothing) suspends the delivery's destination group, when it has
    one, until the retry: the campaign's other destinations keep their pace.
    """
    sent: list[tuple[int, datetime]] = []
    retry: list[Retry] = []
    failed: list[tuple[int, str]] = []
    released: list[int] = []
    ends: list[tuple[int, datetime, SendOutcome]] = []
    replies: dict[int, Reply] = {}
    in_doubt: list[tuple[int, int]] = []
    facts: dict[int, Facts] = {}
    groups: dict[str, GroupState] = {}
    slow_down_until: datetime | None = None
    for attempt in attempts:
        seq, row, res = attempt.seq, attempt.row, attempt.result
        campaign = attempt.campaign
        # The claim counted this attempt: the row holds attempts + 1 now.
        facts[row.id] = Facts(campaign.id, campaign.user_id, row.recipient, row.attempts + 1)
        if res is None:
            released.append(row.id)
            ends.append((seq, now, SendOutcome.RELEASED))
            continue
        error = res.error
        if error is None:
            sent.append((row.id, res.finished_at))
            if res.reply is not None:
                replies[row.id] = (250, res.reply)
            ends.append((seq, res.finished_at, SendOutcome.SENT))
            continue
        outcome, again = _failure(error, row, config, now, jitter)
        if again is None:
            _react(shaping, row.recipient, error, None, now, groups)
            failed.append((row.id, _describe(error)))
        else:
            shaped = _react(shaping, row.recipient, error, again.at, now, groups)
            # The campaign waits for the server, not for this recipient's window: the
            # re-plan after a slow-down puts each zone's sends in its own windows.
            if outcome == SendOutcome.SLOWED and not shaped:
                slow_down_until = max(again.at, slow_down_until or again.at)
            retry.append(_in_window(again, campaign, row))
        if isinstance(error, SendError):
            if error.code is not None or error.reply is not None:
                replies[row.id] = (error.code, error.reply)
            if error.ambiguous:
                outcome = SendOutcome.AMBIGUOUS
                in_doubt.append((row.id, seq))
        ends.append((seq, res.finished_at, outcome))
    counts = Counter(outcome for _, _, outcome in ends)
    return Sorted(
        Outcomes(
            sent=sent,
            retry=retry,
            failed=failed,
            released=released,
            finished=ends,
            replies=replies,
            in_doubt=in_doubt,
            facts=facts,
            relays={a.seq: a.result.relay for a in attempts if a.result and a.result.relay},
        ),
        slow_down_until,
        counts.get(SendOutcome.AMBIGUOUS, 0),
        dict(counts),
        groups,
    )


def _react(
    shaping: Shaping | None,
    recipient: str,
    error: Exception,
    retry_at: datetime | None,
    now: datetime,
    groups: dict[str, GroupState],
) -> bool:
    """Apply the delivery's groups' rules to its error reply; true when a group took the
    slow-down on itself (the destination's group, suspended until ``retry_at``)."""
    if not shaping or not isinstance(error, SendError):
        return False
    said = f"{error.code} {error.reply}" if error.code is not None else str(error)
    for group in shaping.groups_for(recipient):
        rule = group.rule_for(said)
        if rule is None:
            continue
        until = now + rule.duration
        if rule.action == "suspend":
            change = GroupState(suspended_until=until, reason=said)
        else:
            change = GroupState(rule.factor, slowed_until=until, reason=said)
        groups[group.name] = merge_states(groups.get(group.name), change)
    destination = shaping.destination(recipient)
    if not isinstance(error, SlowDown) or isinstance(error, RelayUnavailable):
        return False  # a relay that took nothing slows its campaign, not a destination
    if destination is None or retry_at is None:
        return False
    pause = GroupState(suspended_until=retry_at, reason=said)
    groups[destination.name] = merge_states(groups.get(destination.name), pause)
    return True


def merge_states(old: GroupState | None, new: GroupState) -> GroupState:
    """Two changes to one group as one: the later ends, the smaller factor."""
    if old is None:
        return new

    def later(a: datetime | None, b: datetime | None) -> datetime | None:
        return b if a is None else a if b is None else max(a, b)

    factors = [f for f in (old.factor, new.factor) if f is not None]
    return GroupState(
        min(factors) if factors else None,
        later(old.slowed_until, new.slowed_until),
        later(old.suspended_until, new.suspended_until),
        new.reason or old.reason,
    )


def _failure(
    error: Exception,
    row: Claimable,
    config: WorkerConfig,
    now: datetime,
    jitter: Callable[[], float],
) -> tuple[SendOutcome, Retry | None]:
    """A failed send's outcome, and its retry (``None``: it failed for good)."""
    attempt = row.attempts + 1
    if isinstance(error, SlowDown):
        # A server's slow-down does not count as an attempt.
        pause = now + backoff(1, config.retry_base, config.retry_cap, jitter())
        return SendOutcome.SLOWED, Retry(row.id, pause, _describe(error), row.attempts)
    if isinstance(error, PermanentSendError) or attempt >= config.max_attempts:
        return SendOutcome.FAILED, None
    delay = backoff(attempt, config.retry_base, config.retry_cap, jitter())
    return SendOutcome.RETRY, Retry(row.id, now + delay, _describe(error), attempt)


def _in_window(retry: Retry, campaign: Campaign, row: Claimable) -> Retry:
    """A retry waits for its recipient's window to open, like every send."""
    opening = campaign.opening(row.timezone)
    return retry if opening is None else replace(retry, at=opening.next_open(retry.at))


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"
