"""SMTP errors a relay gives, as failover needs them, against real aiosmtpd servers.

:class:`~mailsched.mail.smtp.SmtpMailer` must tell "this relay takes nothing now"
(:class:`~mailsched.errors.RelayUnavailable`: the letter may go to the next relay at
once) from the letter's own trouble (raised as it is), and name the relay in every
error. Then :class:`~mailsched.mail.relays.Relays` over two real SMTP mailers, and
the wiring of ``bootstrap`` with its metrics. Every test runs on asyncio's own loop
and on uvloop (see conftest.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mailsched.bootstrap import build
from mailsched.config import Settings, SmtpConfig
from mailsched.errors import (
    PermanentSendError,
    RelayBusy,
    RelayDown,
    RelayUnavailable,
    SendError,
    SlowDown,
    TransientSendError,
)
from mailsched.mail import Accepted, Letter
from mailsched.mail.relays import Relays
from mailsched.mail.smtp import SmtpMailer
from tests.support.smtp_sink import free_port
from tests.support.switch_sink import SwitchSink

SENDER = "news@example.com"


def letter(delivery_id: int, recipient: str = "bob@example.org") -> Letter:
    return Letter(
        campaign_id=1,
        delivery_id=delivery_id,
        sender=SENDER,
        recipient=recipient,
        data=f"Subject: {delivery_id}\r\nFrom: {SENDER}\r\n\r\nHello\r\n".encode(),
    )


@pytest.fixture
def sinks() -> Iterator[tuple[SwitchSink, SwitchSink]]:
    """Two relays, both taking mail."""
    first, second = SwitchSink().start(), SwitchSink().start()
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


@pytest.fixture
def sink(sinks: tuple[SwitchSink, SwitchSink]) -> SwitchSink:
    return sinks[0]


class Mailers:
    """Builds SmtpMailers named as their URL says; closes them at the end."""

    def __init__(self) -> None:
        self._made: list[SmtpMailer] = []

    def __call__(self, url: str) -> SmtpMailer:
        mailer = SmtpMailer(
            SmtpConfig.from_url(url, timeout=5.0), local_hostname="client.test", fail_fast=True
        )
        self._made.append(mailer)
        return mailer

    async def aclose(self) -> None:
        for mailer in self._made:
            await mailer.close()


@pytest.fixture
async def mailers() -> AsyncIterator[Mailers]:
    made = Mailers()
    yield made
    await made.aclose()


async def refusal(mailer: SmtpMailer, sent: Letter | None = None) -> SendError:
    with pytest.raises(SendError) as caught:
        await mailer.send(sent or letter(1))
    return caught.value


# One relay's errors.


async def test_a_closed_port_is_relay_down_naming_the_relay(mailers: Mailers) -> None:
    port = free_port()  # bound and released: nothing listens there

    named = await refusal(mailers(f"smtp://127.0.0.1:{port}?name=primary"))
    unnamed = await refusal(mailers(f"smtp://127.0.0.1:{port}"))

    assert type(named) is RelayDown
    assert named.code is None
    assert not named.ambiguous
    assert named.relay == "primary"
    assert unnamed.relay == f"127.0.0.1:{port}"


async def test_a_relay_that_stopped_listening_is_relay_down(
    sink: SwitchSink, mailers: Mailers
) -> None:
    sink.refuse()

    error = await refusal(mailers(f"{sink.url}?name=primary"))

    assert type(error) is RelayDown
    assert error.relay == "primary"


async def test_421_at_the_greeting_is_relay_busy(sink: SwitchSink, mailers: Mailers) -> None:
    sink.busy()

    error = await refusal(mailers(f"{sink.url}?name=primary"))

    assert type(error) is RelayBusy
    assert isinstance(error, SlowDown)
    assert error.code == 421
    assert error.relay == "primary"
    assert sink.connections == 1
    assert sink.arrivals == []


async def test_454_to_mail_is_relay_busy(sink: SwitchSink, mailers: Mailers) -> None:
    sink.mail_reply = "454 4.7.0 Throttling failure: Maximum sending rate exceeded"
    mailer = mailers(f"{sink.url}?name=ses")

    error = await refusal(mailer)
    sink.mail_reply = None
    accepted = await mailer.send(letter(2))

    assert type(error) is RelayBusy
    assert error.code == 454
    assert error.relay == "ses"
    assert accepted.relay == "ses"
    assert [a.message["Subject"] for a in sink.arrivals] == ["2"]


async def test_550_to_rcpt_is_the_recipients_own_permanent_error(
    sink: SwitchSink, mailers: Mailers
) -> None:
    sink.rcpt_replies["gone@example.org"] = "550 5.1.1 no such user"

    error = await refusal(mailers(f"{sink.url}?name=primary"), letter(1, "gone@example.org"))

    assert type(error) is PermanentSendError
    assert not isinstance(error, RelayUnavailable)
    assert error.code == 550
    assert error.relay == "primary"


async def test_a_hang_up_after_the_final_dot_is_ambiguous_not_unavailable(
    sink: SwitchSink, mailers: Mailers
) -> None:
    sink.drop_after_data()

    error = await refusal(mailers(f"{sink.url}?name=primary"))

    assert type(error) is TransientSendError
    assert error.ambiguous
    assert error.relay == "primary"
    assert len(sink.arrivals) == 1


async def test_an_accepted_letter_names_its_relay(sink: SwitchSink, mailers: Mailers) -> None:
    accepted = await mailers(f"{sink.url}?name=primary").send(letter(1))

    assert accepted == Accepted("OK queued", "primary")


# Two real relays.


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def relays(
    mailers: Mailers, first: SwitchSink, second: SwitchSink, clock: Clock, probe_after: float = 30
) -> Relays:
    return Relays(
        [
            (mailers(f"{first.url}?name=primary"), None, None),
            (mailers(f"{second.url}?name=backup"), None, None),
        ],
        probe_after,
        clock=clock,
    )


@pytest.mark.parametrize("trouble", ["refuse", "busy"])
async def test_failover_delivers_each_letter_once_and_the_probe_brings_it_back(
    sinks: tuple[SwitchSink, SwitchSink], mailers: Mailers, trouble: str
) -> None:
    first, second = sinks
    clock = Clock()
    mailer = relays(mailers, first, second, clock)
    getattr(first, trouble)()

    during = [await mailer.send(letter(i, f"user{i}@example.org")) for i in range(1, 6)]
    first.accept()
    clock.now += 30
    after = [await mailer.send(letter(i, f"user{i}@example.org")) for i in range(6, 11)]

    assert [a.relay for a in during] == ["backup"] * 5
    assert [a.relay for a in after] == ["primary"] * 5
    arrived = first.per_recipient() + second.per_recipient()
    assert arrived == {f"user{i}@example.org": 1 for i in range(1, 11)}
    assert sorted(second.per_recipient()) == [f"user{i}@example.org" for i in range(1, 6)]


async def test_a_permanent_refusal_is_not_tried_at_the_backup(
    sinks: tuple[SwitchSink, SwitchSink], mailers: Mailers
) -> None:
    first, second = sinks
    first.rcpt_replies["gone@example.org"] = "550 5.1.1 no such user"
    mailer = relays(mailers, first, second, Clock())

    with pytest.raises(PermanentSendError) as caught:
        await mailer.send(letter(1, "gone@example.org"))

    assert caught.value.relay == "primary"
    assert second.connections == 0


async def test_a_letter_that_may_have_arrived_is_not_sent_again_through_the_backup(
    sinks: tuple[SwitchSink, SwitchSink], mailers: Mailers
) -> None:
    first, second = sinks
    first.drop_after_data()
    mailer = relays(mailers, first, second, Clock())

    with pytest.raises(TransientSendError) as caught:
        await mailer.send(letter(1))

    assert caught.value.ambiguous
    assert len(first.arrivals) == 1
    assert second.connections == 0


async def test_a_relay_that_dies_between_letters_fails_over(
    sinks: tuple[SwitchSink, SwitchSink], mailers: Mailers
) -> None:
    """The pool holds an idle connection to the first relay when it goes down; the next
    letter finds it cut before anything went out, so it may go to the backup at once
    (a retry later would cost the letter an attempt for nothing)."""
    first, second = sinks
    mailer = relays(mailers, first, second, Clock())
    await mailer.send(letter(1, "before@example.org"))

    # Blocking the test's loop while the relay goes down: the pool has not yet
    # noticed, as when the relay dies just as the letter leaves.
    first.refuse()
    accepted = await mailer.send(letter(2, "after@example.org"))

    assert accepted.relay == "backup"
    assert second.per_recipient() == {"after@example.org": 1}


async def test_letters_waiting_for_a_hung_relay_fail_over_once_it_is_known_down(
    sinks: tuple[SwitchSink, SwitchSink], mailers: Mailers
) -> None:
    """A relay that accepts connections and never greets costs a timeout per attempt.
    Letters waiting for one of its connections when the first attempt times out should
    go to the backup, not wait their turn for a timeout each: with one connection and
    four letters, one attempt, not four (a worker sends many letters at once through
    ``connections`` slots, so an outage would otherwise cost timeout x letters /
    connections, or the letters' leases)."""
    first, second = sinks
    first.silent()
    hung = SmtpMailer(
        SmtpConfig.from_url(f"{first.url}?name=primary&connections=1&timeout=0.3"),
        local_hostname="client.test",
        fail_fast=True,
    )
    mailer = Relays(
        [(hung, None, None), (mailers(f"{second.url}?name=backup"), None, None)],
        30,
        clock=Clock(),
    )
    try:
        accepted = await asyncio.gather(
            *(mailer.send(letter(i, f"user{i}@example.org")) for i in range(1, 5))
        )
    finally:
        await hung.close()

    assert [a.relay for a in accepted] == ["backup"] * 4
    assert first.connections == 1


# Wiring: bootstrap and its metrics.


async def test_bootstrap_makes_relays_with_metrics(
    sinks: tuple[SwitchSink, SwitchSink], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = sinks
    first.refuse()
    monkeypatch.setenv("MAILSCHED_DATABASE_URL", f"sqlite:///{tmp_path / 'mailsched.db'}")
    monkeypatch.setenv("MAILSCHED_SMTP_URL", f"{first.url}?name=primary\n{second.url}?name=backup")
    components = await build(Settings.load())
    try:
        mailer = components.mailer()
        accepted = await mailer.send(letter(1))
        registry = components.metrics.registry
    finally:
        await components.aclose()

    assert isinstance(mailer, Relays)
    assert accepted.relay == "backup"

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert sample("mailsched_relay_sends_total", relay="primary", result="unavailable") == 1
    assert sample("mailsched_relay_sends_total", relay="backup", result="accepted") == 1
    assert sample("mailsched_relay_up", relay="primary") == 0
    assert sample("mailsched_relay_up", relay="backup") == 1


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("smtp://127.0.0.1:2525", SmtpMailer),
        ("smtp://127.0.0.1:2525?name=only", SmtpMailer),
        ("smtp://127.0.0.1:2525?max_per_day=100", Relays),
        ("smtp://127.0.0.1:2525?max_per_second=5", Relays),
        ("smtp://127.0.0.1:2525 smtp://127.0.0.1:2526", Relays),
    ],
)
async def test_bootstrap_uses_relays_only_with_several_or_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, kind: type
) -> None:
    monkeypatch.setenv("MAILSCHED_DATABASE_URL", f"sqlite:///{tmp_path / 'mailsched.db'}")
    monkeypatch.setenv("MAILSCHED_SMTP_URL", url)
    components = await build(Settings.load())
    try:
        assert type(components.mailer()) is kind
    finally:
        await components.aclose()
