"""Several relays in order of preference, with failover and half-open probes.

Each letter goes to the first relay that is up. A relay that takes nothing
(:class:`~mailsched.errors.RelayUnavailable`: refused or timed-out connections, a
421 greeting, a 454 throttle) is marked down and the same letter goes to the next
relay at once: nothing went out, so nothing can arrive twice, and no attempt is
burned. Any other error is the letter's own and is raised as it is; in particular a
send that may have been delivered (the connection broke after the final dot) is
never handed to another relay.

A relay that is down is skipped until ``probe_after`` seconds have passed since it
failed; then the next letter that reaches it is its probe (one at a time, the
other letters still skipping it). The probe's success brings the relay's traffic
back; its failure starts the wait again. This is the half-open state of a circuit
breaker, with real letters as probes: a relay that recovers gets its traffic back
within ``probe_after`` seconds of the first letter after it did.

Each relay may be paced (``max_per_second``) and capped (``max_per_day``, over any
24 hours) in this process: a relay at its daily cap, or paced past the letter's
deadline, is skipped like one that is down.

When no relay takes the letter, :class:`~mailsched.errors.NoRelay` says so: a
slow-down, so the attempt does not count and the campaign waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from mailsched.errors import NoRelay, RelayUnavailable, SendError, SendExpired
from mailsched.mail import Accepted, Letter

log = logging.getLogger(__name__)

_DAY = 86_400.0

#: What became of one letter at one relay: ``accepted``, ``refused`` (the letter's
#: own error), or ``unavailable`` (the relay took nothing, the letter moved on).
Observe = Callable[[str, str], None]
#: Told when a relay goes down (``False``) or comes back (``True``).
Health = Callable[[str, bool], None]


class Relay(Protocol):
    """A mailer with a name: one relay."""

    @property
    def name(self) -> str: ...

    async def send(self, letter: Letter) -> Accepted: ...

    async def close(self) -> None: ...


class _Lane:
    """One relay and what this process knows about it."""

    def __init__(self, relay: Relay, max_per_second: float | None, max_per_day: int | None) -> None:
        self.relay = relay
        self.down_since: float | None = None
        self.probing = False
        #: Set when the relay fails, for the letters waiting for their paced turn.
        self.failed = asyncio.Event()
        self._interval = 1.0 / max_per_second if max_per_second else 0.0
        self._next_free = 0.0
        self._max_per_day = max_per_day
        self._today: deque[float] = deque()

    def open_to(self, now: float, probe_after: float) -> bool:
        """Whether a letter may go this way now (maybe as the probe)."""
        if self._max_per_day is not None:
            while self._today and self._today[0] <= now - _DAY:
                self._today.popleft()
            if len(self._today) >= self._max_per_day:
                return False
        if self.down_since is None:
            return True
        return not self.probing and now - self.down_since >= probe_after

    def pace(self, now: float, latest: float | None) -> float | None:
        """Reserve the next send slot under ``max_per_second``; how long to wait for it,
        or ``None`` (nothing reserved) when it comes after ``latest``."""
        if not self._interval:
            return 0.0
        start = max(now, self._next_free)
        if latest is not None and start > latest:
            return None
        self._next_free = start + self._interval
        return start - now

    def reserve(self, now: float) -> None:
        """Count a send against the daily cap as it starts (so sends in flight count)."""
        if self._max_per_day is not None:
            self._today.append(now)

    def give_back(self, now: float) -> None:
        """Uncount a send that never reached the relay."""
        if self._max_per_day is not None and now in self._today:
            self._today.remove(now)


class Relays:
    """A :class:`~mailsched.mail.Mailer` over several relays, in order of preference."""

    def __init__(
        self,
        relays: Sequence[tuple[Relay, float | None, int | None]],
        probe_after: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        observe: Observe | None = None,
        health: Health | None = None,
    ) -> None:
        """``relays`` are ``(relay, max_per_second, max_per_day)``, preferred first."""
        if not relays:
            raise ValueError("Relays needs at least one relay")
        self._lanes = [_Lane(relay, per_second, per_day) for relay, per_second, per_day in relays]
        self._probe_after = probe_after
        self._clock = clock
        self._observe = observe or (lambda _relay, _result: None)
        self._health = health or (lambda _relay, _up: None)

    async def send(self, letter: Letter) -> Accepted:
        """Send through the first relay that takes the letter; see the module docstring."""
        unavailable: list[RelayUnavailable] = []
        for lane in self._lanes:
            now = self._clock()
            if not lane.open_to(now, self._probe_after):
                continue
            wait = lane.pace(now, self._latest(letter, now))
            if wait is None:
                continue  # paced past the letter's deadline: the next relay may be free
            try:
                accepted = await self._through(lane, letter, now, wait)
            except RelayUnavailable as exc:
                unavailable.append(exc)
                continue
            if accepted is not None:
                return accepted
        names = ", ".join(lane.relay.name for lane in self._lanes)
        if unavailable:
            last = unavailable[-1]
            error = NoRelay(f"no relay took it ({names}); the last: {last}", last.code)
            error.reply, error.relay = last.reply, last.relay
            raise error from last
        raise NoRelay(f"no relay may take mail now (down, at its cap, or paced): {names}")

    async def close(self) -> None:
        await asyncio.gather(*(lane.relay.close() for lane in self._lanes))

    async def _through(
        self, lane: _Lane, letter: Letter, now: float, wait: float
    ) -> Accepted | None:
        """Send through one relay (maybe as its probe); its trouble marks it down.
        ``None``: the relay went down while the letter waited for its paced turn."""
        probe = lane.down_since is not None
        if probe:
            lane.probing = True
        lane.reserve(now)
        try:
            if wait and not probe:
                # Woken early when the relay fails meanwhile: skip it, as a down relay.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await lane.failed.wait()
                if lane.down_since is not None:
                    lane.give_back(now)
                    return None
            elif wait:
                await asyncio.sleep(wait)
            accepted = await lane.relay.send(letter)
        except RelayUnavailable as exc:
            lane.give_back(now)
            self._fail(lane, exc, probe)
            raise
        except SendExpired:
            lane.give_back(now)
            raise  # it never reached the relay: no verdict on it
        except SendError:
            # The letter's own trouble: the relay answered, so it is up.
            self._recover(lane)
            self._observe(lane.relay.name, "refused")
            raise
        finally:
            if probe:
                lane.probing = False
        self._recover(lane)
        self._observe(lane.relay.name, "accepted")
        return accepted

    def _latest(self, letter: Letter, now: float) -> float | None:
        """The letter's deadline to start, on this clock."""
        if letter.not_after is None:
            return None
        return now + (letter.not_after - datetime.now(UTC)).total_seconds()

    def _fail(self, lane: _Lane, exc: RelayUnavailable, probe: bool) -> None:
        self._observe(lane.relay.name, "unavailable")
        first = lane.down_since is None
        lane.down_since = self._clock()
        lane.failed.set()
        if first:
            log.warning("relay %s is down, failing over: %s", lane.relay.name, exc)
            self._health(lane.relay.name, False)
        elif probe:
            log.info("relay %s is still down: %s", lane.relay.name, exc)

    def _recover(self, lane: _Lane) -> None:
        if lane.down_since is not None:
            lane.down_since = None
            lane.failed = asyncio.Event()
            log.warning("relay %s is back", lane.relay.name)
            self._health(lane.relay.name, True)
