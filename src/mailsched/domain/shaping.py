"""Traffic shaping: limits per destination (or sender) group, across every campaign.

A shaping file (``MAILSCHED_SHAPING_FILE``, TOML) names groups of domains. Each
group's limits hold over every campaign and every worker, measured like a
campaign's own rules on real send times: "at most ``count`` sends in any rolling
``window``" is "send ``i`` of the group starts no earlier than ``window`` after send
``i - count`` ended". A group may also

* ramp up: a daily cap (over any 24 hours) that starts at ``start`` and grows by
  ``factor`` each day since ``since``, up to ``ceiling``;
* react to replies: a rule whose regular expression matches a reply slows the group
  (its rates times ``factor``) or suspends it, for ``for_seconds``.

Pure: the file's text, time and the group's state are arguments.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

#: The rolling windows a group's limits may use, by key.
WINDOWS: dict[str, timedelta] = {
    "max_per_second": timedelta(seconds=1),
    "max_per_minute": timedelta(minutes=1),
    "max_per_hour": timedelta(hours=1),
    "max_per_day": timedelta(days=1),
}
DAY = timedelta(days=1)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")
_GROUP_KEYS = {"name", "domains", "senders", "max_connections", "rule", "warmup", *WINDOWS}
_RULE_KEYS = {"match", "action", "factor", "for_seconds"}
_WARMUP_KEYS = {"start", "factor", "since", "ceiling"}


class ShapingError(ValueError):
    """A shaping file that cannot be used; the message names the line or the key."""


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``count`` sends in any rolling ``window``."""

    count: int
    window: timedelta


@dataclass(frozen=True, slots=True)
class Rule:
    """When a reply matches ``pattern``: slow the group (rates times ``factor``) or
    suspend it, for ``duration``."""

    pattern: re.Pattern[str]
    action: Literal["slow", "suspend"]
    factor: float
    duration: timedelta


@dataclass(frozen=True, slots=True)
class Warmup:
    """A daily cap of ``start`` on the day of ``since``, times ``factor`` each day after,
    up to ``ceiling`` (``None``: it grows for ever, so it ends only when the file
    changes)."""

    start: int
    factor: float
    since: date
    ceiling: int | None = None

    def cap(self, now: datetime) -> int | None:
        """The cap on the day of ``now`` (UTC), or ``None`` once it reached ``ceiling``."""
        days = (now.astimezone(UTC).date() - self.since).days
        if days <= 0:
            return self.start
        try:
            grown = self.start * self.factor**days
        except OverflowError:
            grown = math.inf
        if self.ceiling is not None and grown >= self.ceiling:
            return None
        return int(min(grown, 2**62))

    def day(self, now: datetime) -> int:
        """Which day of the ramp ``now`` falls on, the first being day 1."""
        return max(0, (now.astimezone(UTC).date() - self.since).days) + 1


@dataclass(frozen=True, slots=True)
class GroupState:
    """What replies did to a group: slowed (rates times ``factor``) or suspended, until."""

    factor: float | None = None
    slowed_until: datetime | None = None
    suspended_until: datetime | None = None
    reason: str | None = None

    def suspended(self, now: datetime) -> bool:
        return self.suspended_until is not None and self.suspended_until > now

    def slowed(self, now: datetime) -> bool:
        return self.factor is not None and self.slowed_until is not None and self.slowed_until > now


@dataclass(frozen=True, slots=True)
class Group:
    """Domains (recipients' or senders') sharing limits."""

    name: str
    domains: frozenset[str] = frozenset()
    senders: frozenset[str] = frozenset()
    limits: tuple[Limit, ...] = ()
    max_connections: int | None = None
    rules: tuple[Rule, ...] = ()
    warmup: Warmup | None = None

    def limits_at(
        self, now: datetime, state: GroupState, *, warmup: bool = True
    ) -> tuple[Limit, ...]:
        """The limits in force at ``now``: the file's, slowed when the group is, with the
        warm-up's cap of the day (unless ``warmup`` is false)."""
        found = list(self.limits)
        if state.slowed(now):
            factor = state.factor or 1.0
            found = [Limit(max(1, math.floor(lim.count * factor)), lim.window) for lim in found]
        if warmup and self.warmup is not None and (cap := self.warmup.cap(now)) is not None:
            found.append(Limit(cap, DAY))
        return tuple(found)

    def rule_for(self, reply: str) -> Rule | None:
        """The first rule whose pattern matches ``reply`` (``"<code> <text>"``)."""
        return next((rule for rule in self.rules if rule.pattern.search(reply)), None)

    @property
    def widest(self) -> timedelta:
        """The longest window among the group's limits (a day under warm-up)."""
        windows = [lim.window for lim in self.limits]
        if self.warmup is not None:
            windows.append(DAY)
        return max(windows, default=timedelta(0))


@dataclass(frozen=True, slots=True)
class Shaping:
    """Every group of a shaping file, bound to the deployment's From domain."""

    groups: tuple[Group, ...] = ()
    sender_domain: str = ""
    _by_domain: Mapping[str, Group] = field(default_factory=dict, repr=False, compare=False)
    _always: tuple[Group, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def of(cls, groups: Sequence[Group], sender_domain: str) -> Shaping:
        by_domain: dict[str, Group] = {}
        for group in groups:
            for domain in group.domains:
                by_domain.setdefault(domain, group)
        sender = sender_domain.lower()
        always = tuple(g for g in groups if sender in g.senders)
        return cls(tuple(groups), sender, by_domain, always)

    def __bool__(self) -> bool:
        return bool(self.groups)

    def groups_for(self, recipient: str) -> tuple[Group, ...]:
        """The groups a send to ``recipient`` counts in: the destination group of its
        domain (the first in the file that lists it), and every group of the From domain."""
        domain = recipient.rpartition("@")[2].lower()
        found = self._by_domain.get(domain)
        if found is None:
            return self._always
        # A group may list both the domain and the sender: it counts the send once.
        return (found, *(g for g in self._always if g is not found))

    def destination(self, recipient: str) -> Group | None:
        """The group of ``recipient``'s domain, if the file names one."""
        return self._by_domain.get(recipient.rpartition("@")[2].lower())

    def group(self, name: str) -> Group | None:
        return next((g for g in self.groups if g.name == name), None)


@dataclass(frozen=True, slots=True)
class Room:
    """How many sends a group takes now, and when it takes the next one after those."""

    admits: int
    next_at: datetime | None
    #: Seconds between sends at the group's tightest rate: how to spread what waits.
    spacing: timedelta = timedelta(0)


def room(
    now: datetime,
    wanted: int,
    limits: Sequence[Limit],
    refs: Sequence[Sequence[datetime | None]],
    state: GroupState,
) -> Room:
    """How many of ``wanted`` new sends of a group may start at ``now``.

    ``refs[i][j]`` is when the group's send ``limits[i].count`` places before new send
    ``j`` ended (``None`` when there is none), for ``j < min(wanted, count)``; a send in
    flight counts as ending now.
    """
    spacing = max((lim.window / lim.count for lim in limits), default=timedelta(0))
    if state.suspended(now):
        return Room(0, state.suspended_until, spacing)
    admits = wanted
    for limit, found in zip(limits, refs, strict=True):
        admits = min(admits, _fits(now, limit, found))
    if admits == wanted:
        return Room(admits, None, spacing)
    opens = now
    for limit, found in zip(limits, refs, strict=True):
        if admits >= limit.count:
            # The reference is a send starting now.
            opens = max(opens, now + limit.window)
        elif (ref := found[admits]) is not None:
            opens = max(opens, ref + limit.window)
    return Room(admits, opens, spacing)


def _fits(now: datetime, limit: Limit, refs: Sequence[datetime | None]) -> int:
    for j, ref in enumerate(refs):
        if ref is not None and ref + limit.window > now:
            return j
    return len(refs) if len(refs) < limit.count else limit.count


def parse(text: str, sender_domain: str) -> Shaping:
    """A shaping file's groups; raises :class:`ShapingError` naming the line (for TOML
    syntax) or the key (``group[2].max_per_hour``) of the first problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ShapingError(str(exc)) from None
    unknown = set(data) - {"group"}
    if unknown:
        raise ShapingError(f"unknown top-level key {sorted(unknown)[0]!r} (known: group)")
    raw = data.get("group", [])
    if not isinstance(raw, list):
        raise ShapingError("group: must be an array of tables, [[group]]")
    try:
        groups = [_group(f"group[{i}]", item) for i, item in enumerate(raw, 1)]
        names = [g.name for g in groups]
        for i, name in enumerate(names, 1):
            if names.index(name) != i - 1:
                raise ShapingError(f"group[{i}].name: {name!r} is the name of an earlier group")
    except ShapingError as exc:
        line = _line_of(text, str(exc).split(":", 1)[0])
        raise ShapingError(str(exc) if line is None else f"line {line}: {exc}") from None
    return Shaping.of(groups, sender_domain)


_PATH = re.compile(r"group\[(\d+)\](?:\.rule\[(\d+)\])?(?:\.(\w+))?(?:\.(\w+))?")
#: Table headers as TOML allows them: spaces inside the brackets, a comment after.
_GROUP_HEADER = re.compile(r"\s*\[\[\s*group\s*\]\]\s*(?:#.*)?")
_RULE_HEADER = re.compile(r"\s*\[\[\s*group\s*\.\s*rule\s*\]\]\s*(?:#.*)?")


def _line_of(text: str, path: str) -> int | None:
    """The line of ``text`` that ``path`` (``group[2].rule[1].match``,
    ``group[1].warmup.start``) names, when the file uses ``[[group]]`` and
    ``[[group.rule]]`` headers (best effort)."""
    found = _PATH.fullmatch(path)
    if found is None:
        return None
    group, rule, key, sub = int(found[1]), found[2], found[3], found[4]
    lines = text.splitlines()
    headers = [n for n, line in enumerate(lines) if _GROUP_HEADER.fullmatch(line)]
    if len(headers) < group:
        return None
    start = headers[group - 1]
    end = headers[group] if group < len(headers) else len(lines)
    if rule is not None:
        rules = [n for n in range(start, end) if _RULE_HEADER.fullmatch(lines[n])]
        if len(rules) < int(rule):
            return None
        start = rules[int(rule) - 1]
        later = [n for n in rules if n > start]
        end = later[0] if later else end
    if key is None:
        return start + 1
    if sub is not None:
        # A sub-table, [group.warmup], or an inline table, warmup = { ... }.
        table = re.compile(rf"\s*\[\s*group\s*\.\s*{key}\s*\]\s*(?:#.*)?")
        for n in range(start + 1, end):
            if table.fullmatch(lines[n]):
                return _assignment(lines, sub, n + 1, end) or n + 1
    return _assignment(lines, key, start + 1, end) or start + 1


def _assignment(lines: list[str], key: str, start: int, end: int) -> int | None:
    assignment = re.compile(rf"\s*{key}\s*=")
    for n in range(start, end):
        if assignment.match(lines[n]):
            return n + 1
    return None


def _group(where: str, item: Any) -> Group:
    if not isinstance(item, dict):
        raise ShapingError(f"{where}: must be a table")
    _known(where, item, _GROUP_KEYS)
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ShapingError(
            f"{where}.name: required, 1-64 letters, digits, '.', '_' or '-', such as \"google\""
        )
    domains = _domains(f"{where}.domains", item.get("domains", []))
    senders = _domains(f"{where}.senders", item.get("senders", []))
    if not domains and not senders:
        raise ShapingError(f"{where}: names no domains (or senders) to apply to")
    limits = tuple(
        Limit(_whole(f"{where}.{key}", item[key], 1), window)
        for key, window in WINDOWS.items()
        if key in item
    )
    connections = item.get("max_connections")
    if connections is not None:
        connections = _whole(f"{where}.max_connections", connections, 1, 10_000)
    rules = item.get("rule", [])
    if not isinstance(rules, list):
        raise ShapingError(f"{where}.rule: must be an array of tables, [[group.rule]]")
    warmup = item.get("warmup")
    group = Group(
        name=name,
        domains=domains,
        senders=senders,
        limits=limits,
        max_connections=connections,
        rules=tuple(_rule(f"{where}.rule[{j}]", r) for j, r in enumerate(rules, 1)),
        warmup=None if warmup is None else _warmup(f"{where}.warmup", warmup),
    )
    if not (group.limits or group.warmup or group.max_connections or group.rules):
        raise ShapingError(
            f"{where}: sets no limit (max_per_second, max_per_minute, max_per_hour, "
            "max_per_day, max_connections, warmup) and no rule"
        )
    return group


def _rule(where: str, item: Any) -> Rule:
    if not isinstance(item, dict):
        raise ShapingError(f"{where}: must be a table")
    _known(where, item, _RULE_KEYS)
    match = item.get("match")
    if not isinstance(match, str) or not match:
        raise ShapingError(f"{where}.match: required, a regular expression on the reply")
    try:
        pattern = re.compile(match, re.IGNORECASE)
    except re.error as exc:
        raise ShapingError(f"{where}.match: not a regular expression: {exc}") from None
    action = item.get("action")
    if action not in ("slow", "suspend"):
        raise ShapingError(f'{where}.action: must be "slow" or "suspend"')
    factor = item.get("factor", 0.5)
    if action == "slow":
        if isinstance(factor, bool) or not isinstance(factor, int | float) or not 0 < factor < 1:
            raise ShapingError(f"{where}.factor: must be a number above 0 and below 1")
    elif "factor" in item:
        raise ShapingError(f'{where}.factor: only a "slow" rule has a factor')
    seconds = item.get("for_seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ShapingError(f"{where}.for_seconds: required, a number of seconds")
    if not 1 <= seconds <= 7 * 86_400:
        raise ShapingError(f"{where}.for_seconds: must be between 1 and 604800 (a week)")
    return Rule(pattern, action, float(factor), timedelta(seconds=seconds))


def _warmup(where: str, item: Any) -> Warmup:
    if not isinstance(item, dict):
        raise ShapingError(f"{where}: must be a table, such as {{ start = 500, factor = 1.5 }}")
    _known(where, item, _WARMUP_KEYS)
    if "start" not in item:
        raise ShapingError(f"{where}.start: required, the first day's cap")
    start = _whole(f"{where}.start", item["start"], 1)
    factor = item.get("factor", 1.5)
    if isinstance(factor, bool) or not isinstance(factor, int | float) or not 1 <= factor <= 10:
        raise ShapingError(f"{where}.factor: must be a number from 1 to 10")
    since = item.get("since")
    if isinstance(since, datetime):
        since = since.date()
    if not isinstance(since, date):
        raise ShapingError(f"{where}.since: required, the ramp's first day, such as 2026-12-01")
    ceiling = item.get("ceiling")
    if ceiling is not None:
        ceiling = _whole(f"{where}.ceiling", ceiling, start)
    return Warmup(start, float(factor), since, ceiling)


def _domains(where: str, value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ShapingError(f'{where}: must be a list of domains, such as ["gmail.com"]')
    found = set()
    for v in value:
        domain = v.strip().lower().rstrip(".")
        if not _DOMAIN.fullmatch(domain):
            raise ShapingError(f"{where}: {v!r} is not a domain name")
        found.add(domain)
    return frozenset(found)


def _whole(where: str, value: Any, low: int, high: int = 1_000_000_000) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ShapingError(f"{where}: must be a whole number from {low} to {high}")
    return value


def _known(where: str, item: Mapping[str, Any], keys: set[str]) -> None:
    unknown = sorted(set(item) - keys)
    if unknown:
        raise ShapingError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(sorted(keys))})")
