"""The campaign page's "Sending limits": each shaping group's limits in force, its
warm-up day and cap, and whether replies slowed or suspended it, so that a person
sees why a campaign goes slower than its own hourly limit. Pure formatting."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailsched.domain.shaping import GroupState, Limit, Shaping
from mailsched.store.shaping import GroupRow

_WINDOWS = {
    timedelta(seconds=1): "a second",
    timedelta(minutes=1): "a minute",
    timedelta(hours=1): "an hour",
    timedelta(days=1): "a day",
}


@dataclass(frozen=True, slots=True)
class GroupLine:
    """One group, in words."""

    name: str
    applies_to: str
    limits: str
    warmup: str
    state: str
    #: The group applies to one of the campaign's next sends.
    concerns_campaign: bool


def group_lines(
    shaping: Shaping,
    rows: Mapping[str, GroupRow],
    next_recipients: Iterable[str],
    now: datetime,
) -> list[GroupLine]:
    """A line per group of ``shaping``, in file order."""
    touched = {g.name for r in next_recipients for g in shaping.groups_for(r)}
    lines = []
    for group in shaping.groups:
        row = rows.get(group.name)
        state = row.state if row is not None else GroupState()
        # The warm-up's cap is shown beside the warm-up, not among the file's limits.
        shown = list(group.limits_at(now, state, warmup=False))
        warmup = ""
        if group.warmup is not None:
            cap = group.warmup.cap(now)
            day = group.warmup.day(now)
            warmup = (
                f"day {day}: at most {cap:,} a day"
                if cap is not None
                else "warmed up (the ceiling is reached)"
            )
        targets = sorted(group.domains) + [f"from {d}" for d in sorted(group.senders)]
        lines.append(
            GroupLine(
                name=group.name,
                applies_to=_abridged(targets),
                limits=_limits(shown, group.max_connections),
                warmup=warmup,
                state=_state(state, now),
                concerns_campaign=group.name in touched,
            )
        )
    return lines


def _limits(limits: list[Limit], connections: int | None) -> str:
    parts = [f"{lim.count:,} {_WINDOWS.get(lim.window, str(lim.window))}" for lim in limits]
    if connections is not None:
        parts.append(f"{connections} at once per worker")
    return ", ".join(parts) or "none"


def _state(state: GroupState, now: datetime) -> str:
    if state.suspended(now):
        assert state.suspended_until is not None
        return f"suspended until {_at(state.suspended_until)}" + _why(state)
    if state.slowed(now):
        assert state.slowed_until is not None
        until = _at(state.slowed_until)
        return f"slowed to {state.factor:g} of its rates until {until}" + _why(state)
    return "normal"


def _why(state: GroupState) -> str:
    return f" (the reply: {state.reason})" if state.reason else ""


def _at(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _abridged(names: list[str], most: int = 4) -> str:
    if len(names) <= most:
        return ", ".join(names)
    return ", ".join(names[:most]) + f" and {len(names) - most} more"
