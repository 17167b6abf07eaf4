"""Several relays with failover (mail/relays.py), and how MAILSCHED_SMTP_URL names them.

The relays here are fakes that fail, or wait on an :class:`asyncio.Event`, on
request; the clock is a number the test moves. Concurrency is forced with events,
never with sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailsched.config import Settings, SmtpConfig, SmtpSecurity, relays_from
from mailsched.errors import (
    ConfigError,
    NoRelay,
    PermanentSendError,
    RelayBusy,
    RelayDown,
    RelayUnavailable,
    SendError,
    SendExpired,
    SlowDown,
    TransientSendError,
)
from mailsched.mail import Accepted, Letter
from mailsched.mail.relays import Relays
from tests.support.smtp_sink import free_port

PROBE_AFTER = 30.0
DAY = 86_400.0


class Clock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class FakeRelay:
    """A relay that takes every letter, or raises ``error()``; with ``gate`` set, each
    send waits for it first (after noting the letter in ``tried``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tried: list[int] = []
        #: The event loop's time of each send.
        self.times: list[float] = []
        self.accepted: list[int] = []
        self.error: Callable[[], SendError] | None = None
        self.gate: asyncio.Event | None = None
        self.closed = False

    async def send(self, letter: Letter) -> Accepted:
        self.tried.append(letter.delivery_id)
        self.times.append(asyncio.get_running_loop().time())
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            error = self.error()
            error.relay = self.name  # as SmtpMailer names it
            raise error
        self.accepted.append(letter.delivery_id)
        return Accepted("250 2.0.0 queued", self.name)

    async def close(self) -> None:
        self.closed = True


def letter(delivery_id: int) -> Letter:
    return Letter(
        campaign_id=1,
        delivery_id=delivery_id,
        sender="news@example.com",
        recipient=f"user{delivery_id}@example.org",
        data=b"Subject: hi\r\n\r\nHello\r\n",
    )


def down() -> SendError:
    return RelayDown("failed connecting to the SMTP server: connection refused")


def busy() -> SendError:
    return RelayBusy("the SMTP server replied 421 4.3.2 try later", 421)


@dataclass
class Rig:
    """Relays over fakes, with what ``observe`` and ``health`` were told."""

    mailer: Relays
    relays: list[FakeRelay]
    clock: Clock
    observed: list[tuple[str, str]]
    health: list[tuple[str, bool]]

    @property
    def primary(self) -> FakeRelay:
        return self.relays[0]

    @property
    def backup(self) -> FakeRelay:
        return self.relays[1]

    async def send(self, delivery_id: int) -> Accepted:
        return await self.mailer.send(letter(delivery_id))


def rig(
    *limits: tuple[float | None, int | None], names: tuple[str, ...] = ("primary", "backup")
) -> Rig:
    """Relays named ``names``, each with its ``(max_per_second, max_per_day)`` if given."""
    relays = [FakeRelay(name) for name in names]
    clock = Clock()
    observed: list[tuple[str, str]] = []
    health: list[tuple[str, bool]] = []
    limits = limits or tuple((None, None) for _ in names)
    mailer = Relays(
        [
            (relay, per_second, per_day)
            for relay, (per_second, per_day) in zip(relays, limits, strict=True)
        ],
        PROBE_AFTER,
        clock=clock,
        observe=lambda name, result: observed.append((name, result)),
        health=lambda name, up: health.append((name, up)),
    )
    return Rig(mailer, relays, clock, observed, health)


async def settle(done: Callable[[], bool], rounds: int = 1000) -> None:
    """Let the event loop run the tasks started until ``done()``; fail if it never is."""
    for _ in range(rounds):
        if done():
            return
        await asyncio.sleep(0)
    raise AssertionError("the tasks did not get there")


# Failover.


async def test_a_healthy_first_relay_takes_every_letter() -> None:
    r = rig()

    accepted = [await r.send(i) for i in (1, 2, 3)]

    assert [a.relay for a in accepted] == ["primary"] * 3
    assert r.primary.accepted == [1, 2, 3]
    assert r.backup.tried == []
    assert r.observed == [("primary", "accepted")] * 3
    assert r.health == []


@pytest.mark.parametrize("error", [down, busy], ids=["RelayDown", "RelayBusy"])
async def test_an_unavailable_relay_hands_the_same_letter_to_the_next(
    error: Callable[[], SendError],
) -> None:
    r = rig()
    r.primary.error = error

    accepted = await r.send(7)

    assert accepted == Accepted("250 2.0.0 queued", "backup")
    assert r.primary.tried == [7]
    assert r.backup.accepted == [7]
    assert r.observed == [("primary", "unavailable"), ("backup", "accepted")]
    assert r.health == [("primary", False)]


def permanent() -> SendError:
    return PermanentSendError("the SMTP server replied 550 5.1.1 no such user", 550)


def transient() -> SendError:
    return TransientSendError("the SMTP server replied 441 4.4.1 no answer", 441)


def slow_down() -> SendError:
    return SlowDown("the SMTP server replied 451 4.7.1 greylisted", 451)


def ambiguous() -> SendError:
    return TransientSendError("failed talking to the SMTP server: reset", ambiguous=True)


def expired() -> SendError:
    return SendExpired("not sent, its lease ends before a send could finish")


@pytest.mark.parametrize(
    "error",
    [permanent, transient, slow_down, ambiguous],
    ids=["permanent", "transient", "slow-down", "ambiguous"],
)
async def test_the_letters_own_error_is_raised_as_is_and_not_tried_elsewhere(
    error: Callable[[], SendError],
) -> None:
    r = rig()
    raised = error()
    r.primary.error = lambda: raised

    with pytest.raises(SendError) as caught:
        await r.send(7)
    r.primary.error = None
    await r.send(8)

    assert caught.value is raised
    # A send that may have been delivered must never go out a second time elsewhere.
    assert r.backup.tried == []
    # The relay answered: it is up, and keeps the traffic.
    assert r.primary.accepted == [8]
    assert r.observed == [("primary", "refused"), ("primary", "accepted")]
    assert r.health == []


async def test_a_letter_too_late_to_start_is_raised_as_is_and_says_nothing_of_the_relay() -> None:
    r = rig((None, 1), (None, None))
    raised = expired()
    r.primary.error = lambda: raised

    with pytest.raises(SendExpired) as caught:
        await r.send(7)
    r.primary.error = None
    accepted = await r.send(8)

    assert caught.value is raised
    assert r.backup.tried == []
    # It never reached the relay: no verdict on it, and no place taken under its cap.
    assert accepted.relay == "primary"
    assert r.observed == [("primary", "accepted")]
    assert r.health == []


async def test_a_refusal_at_the_backup_is_raised_as_is() -> None:
    r = rig()
    r.primary.error = down
    raised = permanent()
    r.backup.error = lambda: raised

    with pytest.raises(PermanentSendError) as caught:
        await r.send(7)

    assert caught.value is raised
    assert r.observed == [("primary", "unavailable"), ("backup", "refused")]


async def test_when_every_relay_is_unavailable_no_relay_is_raised_from_the_last_error() -> None:
    r = rig(names=("primary", "backup", "third"))
    r.primary.error = down
    r.backup.error = busy
    raised = RelayDown("failed connecting to the SMTP server: timed out")
    r.relays[2].error = lambda: raised

    with pytest.raises(NoRelay) as caught:
        await r.send(7)

    assert caught.value.__cause__ is raised
    assert caught.value.relay == "third"
    assert "timed out" in str(caught.value)
    # A slow-down: the attempt does not count and the campaign waits.
    assert isinstance(caught.value, SlowDown)
    assert isinstance(caught.value, RelayUnavailable)
    assert [relay.tried for relay in r.relays] == [[7], [7], [7]]
    assert r.observed == [
        ("primary", "unavailable"),
        ("backup", "unavailable"),
        ("third", "unavailable"),
    ]
    assert r.health == [("primary", False), ("backup", False), ("third", False)]


async def test_when_every_relay_waits_for_its_probe_none_is_tried() -> None:
    r = rig()
    r.primary.error = r.backup.error = down
    with pytest.raises(NoRelay):
        await r.send(1)
    r.clock.now += PROBE_AFTER - 0.1

    with pytest.raises(NoRelay) as caught:
        await r.send(2)

    assert r.primary.tried == r.backup.tried == [1]
    assert caught.value.__cause__ is None
    assert "primary, backup" in str(caught.value)


# The half-open probe.


async def test_a_down_relay_is_skipped_until_probe_after() -> None:
    r = rig()
    r.primary.error = down
    await r.send(1)
    r.primary.error = None  # it is back, but nobody knows yet

    r.clock.now += PROBE_AFTER - 0.001
    skipped = await r.send(2)
    r.clock.now += 0.001
    probe = await r.send(3)

    assert skipped.relay == "backup"
    assert probe.relay == "primary"
    assert r.primary.tried == [1, 3]
    assert r.backup.accepted == [1, 2]


async def test_a_successful_probe_brings_the_traffic_back_to_the_first_relay() -> None:
    r = rig()
    r.primary.error = down
    await r.send(1)
    r.primary.error = None
    r.clock.now += PROBE_AFTER

    accepted = [await r.send(i) for i in (2, 3, 4)]

    assert [a.relay for a in accepted] == ["primary"] * 3
    assert r.backup.accepted == [1]
    assert r.health == [("primary", False), ("primary", True)]


async def test_a_failed_probe_starts_the_wait_again() -> None:
    r = rig()
    r.primary.error = busy
    await r.send(1)
    r.clock.now += PROBE_AFTER
    await r.send(2)  # the probe, refused again

    r.clock.now += PROBE_AFTER - 0.001
    await r.send(3)
    r.clock.now += 0.001
    await r.send(4)  # the next probe

    assert r.primary.tried == [1, 2, 4]
    assert r.backup.accepted == [1, 2, 3, 4]
    assert r.observed.count(("primary", "unavailable")) == 3
    # Down once, not once per failed probe.
    assert r.health == [("primary", False)]


async def test_one_probe_at_a_time_while_the_others_go_to_the_next_relay() -> None:
    r = rig()
    r.primary.error = down
    await r.send(1)
    r.primary.error = None
    r.clock.now += PROBE_AFTER
    r.primary.gate = asyncio.Event()

    probe = asyncio.create_task(r.send(2))
    await settle(lambda: r.primary.tried == [1, 2])
    # The probe is in flight: these do not wait for it, and do not probe too.
    others = [await r.send(i) for i in (3, 4, 5)]
    r.primary.gate.set()
    probed = await probe
    after = await r.send(6)

    assert [a.relay for a in others] == ["backup"] * 3
    assert probed.relay == "primary"
    assert after.relay == "primary"
    assert r.primary.tried == [1, 2, 6]
    assert r.backup.accepted == [1, 3, 4, 5]


async def test_a_probe_that_is_cancelled_lets_the_next_letter_probe() -> None:
    r = rig()
    r.primary.error = down
    await r.send(1)
    r.primary.error = None
    r.clock.now += PROBE_AFTER
    r.primary.gate = asyncio.Event()
    probe = asyncio.create_task(r.send(2))
    await settle(lambda: r.primary.tried == [1, 2])

    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    r.primary.gate = None
    accepted = await r.send(3)

    assert accepted.relay == "primary"
    assert r.primary.tried == [1, 2, 3]


# Limits.


async def test_a_relay_at_its_daily_cap_is_skipped_until_a_day_has_passed() -> None:
    r = rig((None, 2), (None, None))

    first = [await r.send(i) for i in (1, 2, 3, 4)]
    r.clock.now += DAY - 1
    still = await r.send(5)
    r.clock.now += 1
    again = await r.send(6)

    assert [a.relay for a in first] == ["primary", "primary", "backup", "backup"]
    assert still.relay == "backup"
    assert again.relay == "primary"
    # A full relay is not a down one.
    assert r.health == []


async def test_letters_failed_over_do_not_count_against_the_daily_cap() -> None:
    r = rig((None, 1), (None, None))
    r.primary.error = down
    await r.send(1)
    r.primary.error = None
    r.clock.now += PROBE_AFTER

    probe = await r.send(2)
    full = await r.send(3)

    assert probe.relay == "primary"
    assert full.relay == "backup"


async def test_a_letter_refused_by_the_relay_counts_against_its_daily_cap() -> None:
    r = rig((None, 1), (None, None))
    r.primary.error = permanent
    with pytest.raises(PermanentSendError):
        await r.send(1)
    r.primary.error = None

    accepted = await r.send(2)

    assert accepted.relay == "backup"


async def test_the_daily_cap_holds_with_concurrent_sends() -> None:
    """Sends in flight count against the cap: with 4 letters sent at once through a
    relay capped at 2, 2 go to it and 2 to the next (the pool runs up to
    ``connections`` transactions at once, so this is what a worker does)."""
    r = rig((None, 2), (None, None))
    r.primary.gate = asyncio.Event()

    sends = [asyncio.create_task(r.send(i)) for i in (1, 2, 3, 4)]
    await settle(lambda: len(r.primary.tried) + len(r.backup.tried) == 4)
    r.primary.gate.set()
    accepted = await asyncio.gather(*sends)

    assert [a.relay for a in accepted].count("primary") == 2, r.primary.accepted


async def test_max_per_second_spaces_the_sends() -> None:
    r = rig((50.0, None), (None, None))

    await asyncio.gather(*(r.send(i) for i in (1, 2, 3)))

    # Three letters at the same moment: 1/50 s apart at the relay (a lower bound only).
    gaps = [later - earlier for earlier, later in itertools.pairwise(r.primary.times)]
    assert min(gaps) >= 0.019, gaps
    assert r.primary.accepted == [1, 2, 3]


async def test_a_relay_paced_past_the_letters_deadline_is_skipped() -> None:
    r = rig((10.0, None), (None, None))
    await r.send(1)  # the primary's next turn is 0.1 s away
    now = datetime.now(UTC)
    soon = letter(2).expiring(now + timedelta(seconds=0.05), now + timedelta(seconds=5))
    later = letter(3).expiring(now + timedelta(seconds=5), now + timedelta(seconds=10))

    hurried = await r.mailer.send(soon)
    waited = await r.mailer.send(later)

    assert hurried.relay == "backup"
    assert waited.relay == "primary"


async def test_letters_waiting_for_their_pace_skip_a_relay_that_went_down_meanwhile() -> None:
    """Letters paced behind a relay (``max_per_second``) that fails meanwhile go to the
    next relay, instead of each trying the relay known down once their paced turn
    comes (a campaign paced at 100 a second whose relay dies a quarter of the way
    would try it with every letter left, each in its booked turn)."""
    r = rig((10.0, None), (None, None))
    r.primary.error = down
    r.primary.gate = asyncio.Event()

    sends = [asyncio.create_task(r.send(i)) for i in (1, 2, 3)]
    # The first letter is at the primary; the others, started with it, wait for their
    # paced turns there (0.1 and 0.2 s away).
    await settle(lambda: r.primary.tried == [1])
    r.primary.gate.set()
    accepted = await asyncio.gather(*sends)

    assert [a.relay for a in accepted] == ["backup"] * 3
    assert r.primary.tried == [1]


# The rest of the Mailer.


async def test_close_closes_every_relay() -> None:
    r = rig(names=("a", "b", "c"))

    await r.mailer.close()

    assert [relay.closed for relay in r.relays] == [True, True, True]


def test_relays_needs_a_relay() -> None:
    with pytest.raises(ValueError, match="at least one relay"):
        Relays([], PROBE_AFTER)


# MAILSCHED_SMTP_URL.


def smtp(
    host: str,
    port: int,
    name: str,
    *,
    security: SmtpSecurity = "plain",
    username: str | None = None,
    password: str | None = None,
    connections: int = 8,
    timeout: float = 30.0,
    max_per_second: float | None = None,
    max_per_day: int | None = None,
) -> SmtpConfig:
    """A relay's configuration: the defaults, changed as asked."""
    return SmtpConfig(
        host,
        port,
        security,
        username,
        password,
        connections,
        timeout,
        name,
        max_per_second,
        max_per_day,
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mx.example.com", smtp("mx.example.com", 25, "mx.example.com:25")),
        ("smtp://mx.example.com/", smtp("mx.example.com", 25, "mx.example.com:25")),
        ("smtp://mx.example.com?", smtp("mx.example.com", 25, "mx.example.com:25")),
        (
            "smtp+starttls://u%40x:p%3Ass@mx:2587?name=ses",
            smtp("mx", 2587, "ses", security="starttls", username="u@x", password="p:ss"),
        ),
        ("smtps://mx", smtp("mx", 465, "mx:465", security="tls")),
        ("smtp://MX.Example.COM:2525", smtp("mx.example.com", 2525, "mx.example.com:2525")),
        ("smtp://[::1]:2525", smtp("::1", 2525, "::1:2525")),
        (
            "smtp://mx?connections=2&timeout=5.5&max_per_second=14&max_per_day=50000&name=ses-eu",
            smtp(
                "mx",
                25,
                "ses-eu",
                connections=2,
                timeout=5.5,
                max_per_second=14.0,
                max_per_day=50_000,
            ),
        ),
        # Each bound is allowed.
        ("smtp://mx?connections=1", smtp("mx", 25, "mx:25", connections=1)),
        ("smtp://mx?connections=256", smtp("mx", 25, "mx:25", connections=256)),
        ("smtp://mx?timeout=0.1", smtp("mx", 25, "mx:25", timeout=0.1)),
        ("smtp://mx?timeout=3600", smtp("mx", 25, "mx:25", timeout=3600.0)),
        ("smtp://mx?max_per_second=0.001", smtp("mx", 25, "mx:25", max_per_second=0.001)),
        ("smtp://mx?max_per_day=1", smtp("mx", 25, "mx:25", max_per_day=1)),
        ("smtp://mx?max_per_day=1000000000", smtp("mx", 25, "mx:25", max_per_day=10**9)),
        (f"smtp://mx?name={'n' * 64}", smtp("mx", 25, "n" * 64)),
        ("smtp://mx?name=a.b_c:d-9", smtp("mx", 25, "a.b_c:d-9")),
    ],
)
def test_smtp_url_parses(url: str, expected: SmtpConfig) -> None:
    assert SmtpConfig.from_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://mx", "scheme must be one of smtp, smtp+starttls, smtps"),
        ("mx.example.com", "scheme must be one of"),
        ("smtp://", "names no host"),
        ("smtp://:25", "names no host"),
        ("smtp://mx:x", "the port is not a number from 1 to 65535"),
        ("smtp://mx:65536", "the port is not a number from 1 to 65535"),
        ("smtp://mx/relay", "no path or fragment"),
        ("smtp://mx#top", "no path or fragment"),
        ("smtp://mx?conections=2", "unknown parameter 'conections' (known: name, connections,"),
        ("smtp://mx?connections=2&connections=3", "connections is given twice"),
        ("smtp://mx?name=a&name=b", "name is given twice"),
        ("smtp://mx?connections=", "connections must be a number"),
        ("smtp://mx?connections", "the query is not name=value pairs joined by &"),
        ("smtp://mx?connections=1.5", "connections must be a number"),
        ("smtp://mx?connections=0", "connections must be between 1 and 256"),
        ("smtp://mx?connections=257", "connections must be between 1 and 256"),
        ("smtp://mx?timeout=0.09", "timeout must be between 0.1 and 3600"),
        ("smtp://mx?timeout=3601", "timeout must be between 0.1 and 3600"),
        ("smtp://mx?timeout=nan", "timeout must be between"),
        ("smtp://mx?max_per_second=0", "max_per_second must be between 0.001 and 1e+06"),
        ("smtp://mx?max_per_second=-1", "max_per_second must be between"),
        ("smtp://mx?max_per_second=inf", "max_per_second must be between"),
        ("smtp://mx?max_per_second=fast", "max_per_second must be a number"),
        ("smtp://mx?max_per_day=0", "max_per_day must be between 1 and 1e+09"),
        ("smtp://mx?max_per_day=1000000001", "max_per_day must be between"),
        ("smtp://mx?max_per_day=1e3", "max_per_day must be a number"),
        ("smtp://mx?name=", "name must be 1-64 letters"),
        ("smtp://mx?name=-first", "name must be 1-64 letters"),
        ("smtp://mx?name=two%20words", "name must be 1-64 letters"),
        (f"smtp://mx?name={'n' * 65}", "name must be 1-64 letters"),
        ("smtp://mx?connections=2&", "the query is not name=value pairs"),
        ("smtp://u:p?ss@mx", "percent-encode @ : / ? #"),
        ("smtp://u:p#ss@mx", "percent-encode @ : / ? #"),
    ],
)
def test_bad_smtp_url_is_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        SmtpConfig.from_url(url)

    assert message in str(caught.value)


def test_port_zero_is_refused_not_read_as_the_default() -> None:
    """``:0`` is no port a relay listens on; taking it for "the default" sends to 25."""
    with pytest.raises(ValueError, match="port"):
        SmtpConfig.from_url("smtp://mx:0")


@pytest.mark.parametrize(
    "text",
    [
        "smtp://u:hunter2@a smtp://u:hunter2@b:port",
        "smtp://u:hunter2@a smtp://u:hunter2@b:99999",
        "smtp://u:hunter2@a smtp://u:hunter2@b?connections=hunter2",
        "smtp://u:hunter2@a smtp://u:hunter2@b?max_per_day=hunter2",
        "smtp://u:hunter2@a smtp://u:hun?ter2@b",
        "smtp://u:hunter2@a smtp://u:hun#ter2@b",
        "smtp://u:hunter2@a smtp://u:hun/ter2@b",
        "smtp://u:hunter2@a u:hunter2@b",
        "http://u:hunter2@a",
        "smtp://u:hunter2@a?name=x smtp://u:hunter2@b?name=x",
    ],
)
def test_the_error_never_shows_the_password(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        relays_from(text)

    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("", []),
        ("  \n ", []),
        ("smtp://a", ["a:25"]),
        ("smtp://a smtp://b", ["a:25", "b:25"]),
        ("  smtp://b\n\tsmtp://a  ", ["b:25", "a:25"]),
        ("smtp://a smtp://a:2525", ["a:25", "a:2525"]),
        ("smtp://a?name=primary smtp://a?name=backup", ["primary", "backup"]),
        ("smtp://a?name=x smtp://b?name=X", ["x", "X"]),
    ],
)
def test_relays_in_order_of_preference(text: str, names: list[str]) -> None:
    assert [relay.name for relay in relays_from(text)] == names


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("smtp://a http://b", "URL 2 of 2: scheme must be one of"),
        ("smtp://a:x smtp://b", "URL 1 of 2: the port is not a number"),
        ("mx.example.com", "the URL has no scheme such as smtp://"),
        ("smtp://a u:pw@b", "URL 2 of 2 has no scheme such as smtp://"),
        ("smtp://a smtp://b smtp://c?bad=1", "URL 3 of 3: unknown parameter 'bad'"),
        ("http://a", "the URL: scheme must be one of"),
        ("smtp://a smtp://a", "two relays have the same name; give each its own with ?name="),
        ("smtp://a?name=x smtp://b?name=x", "names: x, x"),
        ("smtp://b smtp://a?name=b:25", "names: b:25, b:25"),
    ],
)
def test_bad_relays_are_refused_naming_which(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        relays_from(text)

    assert message in str(caught.value)


def test_the_settings_defaults_apply_to_each_relay_unless_its_url_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAILSCHED_SMTP_URL", "smtp://a?name=one smtp://b?connections=2&timeout=3")
    monkeypatch.setenv("MAILSCHED_SMTP_CONNECTIONS", "5")
    monkeypatch.setenv("MAILSCHED_SMTP_TIMEOUT_SECONDS", "7")

    settings = Settings.load()

    assert [(r.name, r.connections, r.timeout) for r in settings.relays()] == [
        ("one", 5, 7.0),
        ("b:25", 2, 3.0),
    ]
    assert settings.smtp_probe_seconds == 30


def test_no_smtp_url_means_no_relay() -> None:
    assert Settings.load().relays() == ()


@pytest.mark.parametrize(
    ("value", "ok"), [("0.5", True), ("86400", True), ("0", False), ("86401", False)]
)
def test_probe_seconds_bounds(monkeypatch: pytest.MonkeyPatch, value: str, ok: bool) -> None:
    monkeypatch.setenv("MAILSCHED_SMTP_PROBE_SECONDS", value)

    if ok:
        assert Settings.load().smtp_probe_seconds == float(value)
    else:
        with pytest.raises(ConfigError, match="MAILSCHED_SMTP_PROBE_SECONDS"):
            Settings.load()


def test_a_bad_relay_url_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILSCHED_SMTP_URL", "smtp://a smtp://b?max_per_day=0")

    with pytest.raises(ConfigError) as caught:
        Settings.load()

    assert "MAILSCHED_SMTP_URL" in str(caught.value)
    assert "URL 2 of 2: max_per_day must be between" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("smtp://u:hunter2@a?name=x smtp://u:hunter2@b?name=x", "two relays have the same name"),
        ("smtp://u:hunter2@a smtp://b?connections=0", "URL 2 of 2: connections must be"),
    ],
    ids=["duplicate-names", "out-of-bounds"],
)
def test_mailsched_run_with_a_bad_smtp_url_exits_2_naming_the_variable(
    tmp_path: Path, url: str, message: str
) -> None:
    mailsched = Path(sys.executable).parent / "mailsched"
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MAILSCHED_")}
    env = inherited | {
        "MAILSCHED_DATABASE_URL": f"sqlite:///{tmp_path / 'mailsched.db'}",
        "MAILSCHED_PORT": str(free_port()),
        "MAILSCHED_SMTP_URL": url,
    }

    result = subprocess.run(
        [str(mailsched), "run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2, result.stderr
    assert "MAILSCHED_SMTP_URL" in result.stderr
    assert message in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    # It stopped before doing anything: no database was made.
    assert not (tmp_path / "mailsched.db").exists()
