"""The bounce mailbox's SMTP server in this process, on an ephemeral port, on each
database, spoken to over real SMTP (smtplib in a thread)."""

from __future__ import annotations

import asyncio
import dataclasses
import smtplib
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.config import InboundConfig
from mailsched.domain.model import CampaignStatus, DeliveryStatus
from mailsched.errors import StoreUnavailable
from mailsched.inbound.feedback import Feedback
from mailsched.inbound.mailbox import Mailbox
from mailsched.inbound.server import InboundServer
from mailsched.mail.verp import ReturnPath
from mailsched.metrics import Metrics
from mailsched.store import suppressions
from mailsched.store.db import Database
from mailsched.store.tables import bounces, events, inbound_messages
from mailsched.store.tables import suppressions as suppression_rows
from tests.integration.test_feedback import CONFIG
from tests.integration.test_suppressions import NOW, campaign_status, seed, statuses
from tests.support.bounces import COMPLAINT, HARD, SOFT, UNRECOGNISED, Answered, dsn, submit
from tests.support.running import wait_until

S = DeliveryStatus
BOUNCES = "bounces@bounce.example.com"
KEY = b"k" * 32
INBOUND = InboundConfig(BOUNCES, "127.0.0.1", 0, max_message_bytes=64 * 1024, max_connections=3)


class Mailserver:
    """The running server, its return paths and its metrics."""

    def __init__(self, server: InboundServer, metrics: Metrics) -> None:
        self.server = server
        self.metrics = metrics
        self.return_path = ReturnPath(BOUNCES, KEY)

    async def send(self, rcpts: list[str], raw: bytes) -> Answered:
        return await asyncio.to_thread(submit, self.server.port, rcpts, raw)

    def count(self, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "mailsched_inbound_messages_total", {"outcome": outcome}
        )
        assert value is not None
        return value


@asynccontextmanager
async def serving(
    db: Database, feedback: Feedback | None = None, **config: Any
) -> AsyncIterator[Mailserver]:
    metrics = Metrics()
    inbound = dataclasses.replace(INBOUND, **config)
    feedback = feedback or Feedback(db, CONFIG, lambda: NOW)
    mailbox = Mailbox(inbound, ReturnPath(BOUNCES, KEY), feedback, metrics)
    server = InboundServer(inbound, mailbox, metrics)
    stop = asyncio.Event()
    await server.start()
    task = asyncio.create_task(server.run(stop))
    try:
        yield Mailserver(server, metrics)
    finally:
        stop.set()
        await task


async def kept(db: Database) -> list[tuple[str, str | None, str | None]]:
    """The kept messages' outcome, sender and recipient, in order."""

    async def work(conn: AsyncConnection) -> list[tuple[str, str | None, str | None]]:
        m = inbound_messages.c
        rows = await conn.execute(select(m.outcome, m.mail_from, m.rcpt_to).order_by(m.id))
        return [(r.outcome, r.mail_from, r.rcpt_to) for r in rows]

    return await db.run(work)


async def counts(db: Database) -> tuple[int, int, int]:
    """Rows of bounces, events and suppressions: what a report would change."""

    async def work(conn: AsyncConnection) -> tuple[int, int, int]:
        found = []
        for table in (bounces, events, suppression_rows):
            found.append(
                int((await conn.execute(select(func.count()).select_from(table))).scalar_one())
            )
        return found[0], found[1], found[2]

    return await db.run(work)


async def suppressed(db: Database, user_id: int = 1) -> dict[str, str]:
    async def work(conn: AsyncConnection) -> list[suppressions.Suppression]:
        return await suppressions.page(conn, user_id, None, 100, NOW)

    return {s.address: s.reason for s in await db.run(work)}


async def test_a_dsn_to_a_deliverys_return_path_bounces_it(db: Database) -> None:
    # Fails if the return path does not pick the delivery, if the null sender is
    # refused, or if the DSN (about another address: the VERP token decides) is not
    # applied.
    _, (sent, other) = await seed(db, 1, [("ann@example.com", S.SENT), ("bob@example.com", S.SENT)])
    async with serving(db) as mx:
        answered = await mx.send([mx.return_path.address(sent)], HARD)
        assert answered == Answered([250], 250)
        assert await statuses(db, [sent, other]) == [S.BOUNCED, S.SENT]
        assert await suppressed(db) == {"ann@example.com": "bounce"}
        assert mx.count("bounced") == 1
        assert await kept(db) == []


async def test_a_complaint_marks_the_delivery_complained(db: Database) -> None:
    _, (sent,) = await seed(db, 1, [("ann@example.com", S.SENT)])
    async with serving(db) as mx:
        # The case of an address may change on its way: the token ignores it.
        assert await mx.send([mx.return_path.address(sent).upper()], COMPLAINT) == Answered(
            [250], 250
        )
        assert await statuses(db, [sent]) == [S.COMPLAINED]
        assert await suppressed(db) == {"ann@example.com": "complaint"}
        assert mx.count("complained") == 1


async def test_the_third_soft_bounce_in_a_row_suppresses_the_address(db: Database) -> None:
    ids = [(await seed(db, 1, [("ann@example.com", S.SENT)]))[1][0] for _ in range(3)]
    async with serving(db) as mx:
        for i, delivery_id in enumerate(ids):
            assert await suppressed(db) == {}, f"suppressed after {i} soft bounces"
            assert await mx.send([mx.return_path.address(delivery_id)], SOFT) == Answered(
                [250], 250
            )
        assert await suppressed(db) == {"ann@example.com": "bounce"}
        assert await statuses(db, ids) == [S.SENT] * 3
        assert mx.count("soft") == 3


async def test_a_forged_token_changes_nothing_even_naming_a_real_delivery(db: Database) -> None:
    # Fails if a return path whose MAC does not verify is believed: the DSN names the
    # real recipient and Message-ID, and the id in the token is the real delivery's.
    campaign_id, (sent,) = await seed(db, 1, [("ann@example.com", S.SENT)])
    real = ReturnPath(BOUNCES, KEY).address(sent)
    forged = ReturnPath(BOUNCES, b"f" * 32).address(sent)
    assert forged.split("-")[0] == real.split("-")[0]
    raw = dsn("ann@example.com", f"<c{campaign_id}.d{sent}@example.com>")
    before = await counts(db)
    async with serving(db) as mx:
        assert await mx.send([forged], raw) == Answered([250], 250)
        assert await mx.send(["postmaster@bounce.example.com"], raw) == Answered([250], 250)
        assert await statuses(db, [sent]) == [S.SENT]
        assert await counts(db) == before
        assert await kept(db) == [
            ("forged", "<>", forged),
            ("no_token", "<>", "postmaster@bounce.example.com"),
        ]
        assert (mx.count("forged"), mx.count("no_token")) == (1, 1)


async def test_a_message_that_says_nothing_is_kept(db: Database) -> None:
    _, (sent,) = await seed(db, 1, [("ann@example.com", S.SENT)])
    before = await counts(db)
    async with serving(db) as mx:
        address = mx.return_path.address(sent)
        assert await mx.send([address], UNRECOGNISED) == Answered([250], 250)
        assert await kept(db) == [("unrecognised", "<>", address)]
        assert await counts(db) == before
        assert mx.count("unrecognised") == 1


async def test_a_valid_token_of_no_delivery_is_kept(db: Database) -> None:
    async with serving(db) as mx:
        address = mx.return_path.address(999_999)
        assert await mx.send([address], HARD) == Answered([250], 250)
        assert await kept(db) == [("unknown_delivery", "<>", address)]
        assert mx.count("unknown_delivery") == 1


@pytest.mark.parametrize(
    "raw",
    [
        bytes(range(256)) * 40,
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n"
        + b"--x\r\nContent-Type: message/delivery-status\r\n\r\n" * 300,
        b"Content-Type: text/plain; " + b"a*0*=x; " * 2000 + b"\r\n\r\nbody\r\n",
        b"X: " + b"y" * 20_000 + b"\r\n\r\n",
    ],
    ids=["binary", "nested-parts", "parameters", "long-line"],
)
async def test_a_garbage_message_is_taken_and_changes_nothing(db: Database, raw: bytes) -> None:
    _, (sent,) = await seed(db, 1, [("ann@example.com", S.SENT)])
    before = await counts(db)
    async with serving(db) as mx:
        address = mx.return_path.address(sent)
        assert (await mx.send([address], raw)).data == 250
        assert await statuses(db, [sent]) == [S.SENT]
        assert await counts(db) == before
        assert [outcome for outcome, _, _ in await kept(db)] == ["unrecognised"]
        # Still serving.
        assert await mx.send([address], HARD) == Answered([250], 250)
        assert await statuses(db, [sent]) == [S.BOUNCED]


async def test_only_the_bounce_domain_is_taken(db: Database) -> None:
    # Fails if the server relays: mail for any other domain is refused at RCPT.
    _, (sent,) = await seed(db, 1, [("ann@example.com", S.SENT)])
    async with serving(db) as mx:
        address = mx.return_path.address(sent)
        others = ["ann@example.com", "bounces@bounce.example.com.evil.example", "x@example"]
        assert await mx.send(others, HARD) == Answered([550, 550, 550], None)
        assert await mx.send(["ann@example.com", address], HARD) == Answered([550, 250], 250)
        assert mx.count("refused_relay") == 4
        assert await statuses(db, [sent]) == [S.BOUNCED]


async def test_too_many_recipients_are_refused_with_452(db: Database) -> None:
    async with serving(db) as mx:
        rcpts = [f"postmaster{i}@bounce.example.com" for i in range(101)]
        answered = await mx.send(rcpts, UNRECOGNISED)
        assert answered == Answered([250] * 100 + [452], 250)


async def test_a_message_over_the_limit_is_refused_with_552(db: Database) -> None:
    _, (sent,) = await seed(db, 1, [("ann@example.com", S.SENT)])
    async with serving(db, max_message_bytes=4096) as mx:
        address = mx.return_path.address(sent)
        big = HARD + (b"x" * 76 + b"\r\n") * 60
        assert len(big) > 4096
        assert await mx.send([address], big) == Answered([250], 552)
        assert await statuses(db, [sent]) == [S.SENT]
        assert mx.count("too_large") == 1
        assert await mx.send([address], HARD) == Answered([250], 250)


@contextmanager
def connected(port: int) -> Iterator[smtplib.SMTP]:
    client = smtplib.SMTP("127.0.0.1", port, timeout=30)
    try:
        yield client
    finally:
        client.close()


async def test_connections_beyond_the_limit_are_greeted_with_421(db: Database) -> None:
    # Fails if the limit is not held: three sessions are open (each greeted, so each
    # counted by the server) when the fourth connects.
    async with serving(db, max_connections=3) as mx:
        port = mx.server.port
        open_ = [
            await asyncio.to_thread(smtplib.SMTP, "127.0.0.1", port, timeout=30) for _ in range(3)
        ]
        try:
            with pytest.raises(smtplib.SMTPConnectError) as refused:
                await asyncio.to_thread(smtplib.SMTP, "127.0.0.1", port, timeout=30)
            assert refused.value.smtp_code == 421
            assert (
                mx.metrics.registry.get_sample_value("mailsched_inbound_refused_connections_total")
                == 1
            )
        finally:
            open_.pop().close()
        # One session ended: a new connection is served.
        await wait_until(lambda: mx.server.connections == 2, within=10)
        with socket.create_connection(("127.0.0.1", port)) as raw:
            assert (await asyncio.to_thread(raw.recv, 100)).startswith(b"220 ")
        for client in open_:
            client.close()


class _Unreachable(Feedback):
    async def apply(self, *args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("the database went away")


async def test_a_database_outage_asks_the_sender_to_retry(db: Database) -> None:
    _, (sent,) = await seed(db, 1, [("ann@example.com", S.SENT)])
    async with serving(db, feedback=_Unreachable(db, CONFIG, lambda: NOW)) as mx:
        address = mx.return_path.address(sent)
        assert await mx.send([address], HARD) == Answered([250], 451)
    async with serving(db) as mx:
        assert await mx.send([address], HARD) == Answered([250], 250)
        assert await statuses(db, [sent]) == [S.BOUNCED]


async def test_the_breaker_pauses_a_campaign_bouncing_past_its_limit(db: Database) -> None:
    rows = [(f"u{i}@example.com", S.SENT) for i in range(20)] + [("late@example.com", S.QUEUED)]
    campaign_id, ids = await seed(db, 1, rows)
    async with serving(db) as mx:
        for delivery_id in ids[:2]:
            await mx.send([mx.return_path.address(delivery_id)], HARD)
    assert await campaign_status(db, campaign_id) == CampaignStatus.PAUSED


class _Held(Feedback):
    """Applies once ``release`` is set, saying when it started."""

    def __init__(self, db: Database) -> None:
        super().__init__(db, CONFIG, lambda: NOW)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def apply(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        await self.release.wait()
        return await super().apply(*args, **kwargs)


async def test_a_stop_finishes_the_message_being_applied(db: Database) -> None:
    # Fails if stopping drops the message in flight (no 250, nothing applied) or
    # goes on listening meanwhile.
    _, (sent,) = await seed(db, 1, [("ann@example.com", S.SENT)])
    feedback = _Held(db)
    metrics = Metrics()
    mailbox = Mailbox(INBOUND, ReturnPath(BOUNCES, KEY), feedback, metrics)
    server = InboundServer(INBOUND, mailbox, metrics)
    await server.start()
    port = server.port
    stop = asyncio.Event()
    running = asyncio.create_task(server.run(stop))
    address = ReturnPath(BOUNCES, KEY).address(sent)
    sending = asyncio.create_task(asyncio.to_thread(submit, port, [address], HARD))
    await feedback.entered.wait()
    stop.set()
    await wait_until(lambda: not _listening(port), within=10)
    assert not running.done()
    feedback.release.set()
    assert await sending == Answered([250], 250)
    await running
    assert await statuses(db, [sent]) == [S.BOUNCED]


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return False
    return True


def _arf(original_mail_from: str | None, return_path: str | None) -> bytes:
    """A feedback loop's complaint, as mailed to the fixed address it is registered with."""
    report = COMPLAINT.decode()
    report = report.replace(
        "Original-Mail-From: <bounces+128@sender.example>\n",
        f"Original-Mail-From: <{original_mail_from}>\n" if original_mail_from else "",
    )
    if return_path:
        report = report.replace(
            "From: News <news@sender.example>\n",
            f"Return-Path: <{return_path}>\nFrom: News <news@sender.example>\n",
        )
    return report.encode()


@pytest.mark.parametrize("where", ["original-mail-from", "return-path"])
async def test_a_feedback_loop_mailing_a_fixed_address_is_matched_by_the_quoted_return_path(
    db: Database, where: str
) -> None:
    # Fails if a message to an address without a token is not read for the original's
    # return path (feedback loops mail the address they are registered with).
    _, (sent, other) = await seed(db, 1, [("ann@example.com", S.SENT), ("bob@example.com", S.SENT)])
    async with serving(db) as mx:
        real = mx.return_path.address(sent)
        raw = _arf(real, None) if where == "original-mail-from" else _arf(None, real)
        assert await mx.send(["fbl@bounce.example.com"], raw) == Answered([250], 250)
        assert await statuses(db, [sent, other]) == [S.COMPLAINED, S.SENT]
        assert mx.count("complained") == 1
        assert await kept(db) == []


async def test_a_quoted_return_path_that_does_not_verify_changes_nothing(db: Database) -> None:
    _, (sent,) = await seed(db, 1, [("ann@example.com", S.SENT)])
    forged = ReturnPath(BOUNCES, b"f" * 32).address(sent)
    before = await counts(db)
    async with serving(db) as mx:
        assert await mx.send(["fbl@bounce.example.com"], _arf(forged, forged)) == Answered(
            [250], 250
        )
        assert await statuses(db, [sent]) == [S.SENT]
        assert await counts(db) == before
        assert await kept(db) == [("no_token", "<>", "fbl@bounce.example.com")]
