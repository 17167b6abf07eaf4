"""The Mailer boundary: one suite over every implementation, then what only SMTP can do.

The SMTP server is aiosmtpd, listening on 127.0.0.1 on this test's own event loop;
it records every message it accepts and can be told to refuse or to hang up. Every
test runs on asyncio's own loop and on uvloop (see conftest.py).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP as SMTPServerProtocol
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from mailsched.config import SmtpConfig, SmtpSecurity
from mailsched.errors import (
    PermanentSendError,
    RelayBusy,
    RelayDown,
    SendError,
    SlowDown,
    TransientSendError,
)
from mailsched.mail import Letter, Mailer, smtp_client
from mailsched.mail.message import MessageTemplate
from mailsched.mail.outbox import OutboxMailer
from mailsched.mail.smtp import SmtpMailer
from mailsched.mail.smtp_client import SmtpProtocolError
from tests.integration.mail.conftest import Certificate, CertificateFiles

SENDER = "news@example.com"
DATE = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
# The line starting with a dot checks SMTP's dot-stuffing both ways.
TEMPLATE = MessageTemplate(1, SENDER, "Spring sale", "Hello,\n.dotted line\nBye\n")


def letter(delivery_id: int, recipient: str = "bob@example.org") -> Letter:
    return Letter(
        campaign_id=1,
        delivery_id=delivery_id,
        sender=SENDER,
        recipient=recipient,
        data=TEMPLATE.render(recipient, delivery_id, DATE),
    )


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes
    smtputf8: bool
    tls: bool


@dataclass
class FakeSmtpServer:
    """An aiosmtpd server and its handler: records, refuses or hangs up on request."""

    smtputf8: bool = False
    tls_context: ssl.SSLContext | None = None
    implicit_tls: bool = False
    credentials: tuple[str, str] | None = None
    #: Advertise PIPELINING (aiosmtpd reads pipelined commands but does not say so).
    pipelining: bool = False
    auth_exclude: tuple[str, ...] = ()

    port: int = 0
    connections: int = 0
    quits: int = 0
    logins: list[str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_replies: list[str] = field(default_factory=list)
    drop_next_data: bool = False
    drop_at_rcpt: bool = False
    #: Seconds the next DATA waits before its reply.
    stall_next_data: float = 0.0
    _listener: asyncio.Server | None = None
    _sessions: list[SMTPServerProtocol] = field(default_factory=list)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            self._accept,
            "127.0.0.1",
            0,
            ssl=self.tls_context if self.implicit_tls else None,
        )
        self.port = self._listener.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._listener is not None
        self._listener.close()
        await self._listener.wait_closed()
        handlers = []
        for session in self._sessions:
            if session.transport is not None:
                session.transport.close()
            if session._handler_coroutine is not None:
                handlers.append(session._handler_coroutine)
        # Let every session's task finish, so none is pending when the loop closes.
        await asyncio.gather(*handlers, return_exceptions=True)

    def _accept(self) -> SMTPServerProtocol:
        self.connections += 1
        starttls = self.tls_context is not None and not self.implicit_tls
        session = SMTPServerProtocol(
            self,
            hostname="mx.test",
            enable_SMTPUTF8=self.smtputf8,
            tls_context=self.tls_context if starttls else None,
            require_starttls=starttls,
            authenticator=self._authenticate if self.credentials else None,
            auth_required=self.credentials is not None,
            auth_exclude_mechanism=list(self.auth_exclude),
            loop=asyncio.get_running_loop(),
        )
        self._sessions.append(session)
        return session

    def _authenticate(
        self, server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        login, password = data.login.decode(), data.password.decode()
        if (login, password) != self.credentials:
            return AuthResult(success=False, handled=False)
        self.logins.append(login)
        return AuthResult(success=True)

    async def handle_EHLO(
        self,
        server: SMTPServerProtocol,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(
        self,
        server: SMTPServerProtocol,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self.drop_at_rcpt:
            self.drop_at_rcpt = False
            assert server.transport is not None
            server.transport.close()
            return "250 never heard"
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(
        self, server: SMTPServerProtocol, session: Session, envelope: Envelope
    ) -> str:
        if self.drop_next_data:
            self.drop_next_data = False
            assert server.transport is not None
            server.transport.close()
            return "250 never heard"
        if self.stall_next_data:
            stall, self.stall_next_data = self.stall_next_data, 0.0
            await asyncio.sleep(stall)
        if self.data_replies:
            return self.data_replies.pop(0)
        assert envelope.mail_from is not None
        assert isinstance(envelope.original_content, bytes)
        assert server.transport is not None
        self.received.append(
            Received(
                sender=envelope.mail_from,
                recipients=list(envelope.rcpt_tos),
                data=envelope.original_content,
                smtputf8=envelope.smtp_utf8,
                tls=server.transport.get_extra_info("ssl_object") is not None,
            )
        )
        return "250 2.0.0 queued"

    async def handle_QUIT(
        self, server: SMTPServerProtocol, session: Session, envelope: Envelope
    ) -> str:
        self.quits += 1
        return "221 Bye"


class SmtpRig:
    """Starts servers and builds mailers; closes the mailers first, then the servers.

    Its servers advertise PIPELINING or not, as the rig was made: every SMTP test
    runs over both ways of talking."""

    def __init__(self, pipelining: bool) -> None:
        self.pipelining = pipelining
        self._servers: list[FakeSmtpServer] = []
        self._mailers: list[SmtpMailer] = []

    async def server(self, **options: Any) -> FakeSmtpServer:
        server = FakeSmtpServer(**{"pipelining": self.pipelining, **options})
        await server.start()
        self._servers.append(server)
        return server

    def mailer(
        self,
        port: int,
        *,
        connections: int = 4,
        security: SmtpSecurity = "plain",
        tls_context: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
    ) -> SmtpMailer:
        config = SmtpConfig("127.0.0.1", port, security, username, password, connections, timeout)
        mailer = SmtpMailer(config, tls_context=tls_context, local_hostname="client.test")
        self._mailers.append(mailer)
        return mailer

    async def aclose(self) -> None:
        for mailer in self._mailers:
            await mailer.close()
        for server in self._servers:
            await server.stop()


@pytest.fixture(params=[True, False], ids=["pipelining", "one-by-one"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[SmtpRig]:
    rig = SmtpRig(pipelining=request.param)
    yield rig
    await rig.aclose()


@dataclass
class Harness:
    """A mailer, what reached the other side, and (SMTP only) the connections it opened."""

    mailer: Mailer
    delivered: Callable[[], list[bytes]]
    connections: Callable[[], int] | None


@pytest.fixture(params=["outbox", "smtp"])
async def harness(
    request: pytest.FixtureRequest, tmp_path: Path, rig: SmtpRig
) -> AsyncIterator[Harness]:
    if request.param == "outbox":
        outbox = OutboxMailer(tmp_path / "outbox")

        def files() -> list[bytes]:
            return [
                path.read_bytes()
                for path in sorted((tmp_path / "outbox").rglob("*"))
                if path.is_file()
            ]

        yield Harness(outbox, files, None)
        await outbox.close()
    else:
        server = await rig.server()
        smtp = rig.mailer(server.port, connections=4)
        yield Harness(
            smtp,
            lambda: [message.data for message in server.received],
            lambda: server.connections,
        )


# The shared suite: every Mailer.


async def test_a_letter_arrives_once_with_its_exact_bytes(harness: Harness) -> None:
    sent = letter(7)

    await harness.mailer.send(sent)

    assert harness.delivered() == [sent.data]


async def test_concurrent_sends_all_arrive(harness: Harness) -> None:
    letters = [letter(i, f"user{i}@example.org") for i in range(1, 51)]

    await asyncio.gather(*(harness.mailer.send(item) for item in letters))

    assert sorted(harness.delivered()) == sorted(item.data for item in letters)
    if harness.connections is not None:
        # 50 sends over 4 slots: each slot opens one connection, then reuses it.
        assert harness.connections() == 4


# The outbox.


def tree(root: Path) -> list[str]:
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*"))


async def test_outbox_names_files_by_campaign_and_delivery(tmp_path: Path) -> None:
    mailer = OutboxMailer(tmp_path)

    await mailer.send(letter(7))
    await mailer.send(letter(8))

    assert tree(tmp_path) == [
        "campaign-1",
        "campaign-1/7.eml",
        "campaign-1/8.eml",
    ]


async def test_outbox_resend_replaces_the_file(tmp_path: Path) -> None:
    mailer = OutboxMailer(tmp_path)
    first = letter(7)
    second = Letter(1, 7, SENDER, "bob@example.org", first.data + b"changed\r\n")

    await mailer.send(first)
    await mailer.send(second)

    assert (tmp_path / "campaign-1" / "7.eml").read_bytes() == second.data
    assert len(list((tmp_path / "campaign-1").iterdir())) == 1


async def test_outbox_write_failure_is_transient(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_bytes(b"")
    mailer = OutboxMailer(not_a_directory)

    with pytest.raises(TransientSendError) as caught:
        await mailer.send(letter(7))

    assert isinstance(caught.value.__cause__, OSError)
    assert caught.value.code is None


async def test_outbox_logs_ids_and_path_but_not_the_address(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailsched.mail.outbox")

    await OutboxMailer(tmp_path).send(letter(7, "secret.person@example.org"))

    [record] = caplog.records
    assert str(tmp_path / "campaign-1" / "7.eml") in record.getMessage()
    assert "secret.person" not in record.getMessage()


# SMTP only.


async def test_smtp_envelope_and_connection_reuse(rig: SmtpRig) -> None:
    server = await rig.server()
    mailer = rig.mailer(server.port)

    for delivery_id in (1, 2, 3):
        await mailer.send(letter(delivery_id))

    assert [(r.sender, r.recipients, r.smtputf8, r.tls) for r in server.received] == [
        (SENDER, ["bob@example.org"], False, False)
    ] * 3
    assert server.connections == 1


@pytest.mark.parametrize(
    ("reply", "error", "code"),
    [
        ("550 5.1.1 no such user", PermanentSendError, 550),
        ("553 5.1.3 bad address", PermanentSendError, 553),
        ("450 4.2.1 mailbox busy", SlowDown, 450),
        ("451 4.7.1 greylisted, try later", SlowDown, 451),
        ("452 4.2.2 mailbox full", SlowDown, 452),
        ("454 4.7.0 temporary failure", RelayBusy, 454),
        ("441 4.4.1 no answer from host", TransientSendError, 441),
        ("471 4.7.0 local error", TransientSendError, 471),
    ],
)
async def test_smtp_recipient_refusal(
    rig: SmtpRig, reply: str, error: type[SendError], code: int
) -> None:
    server = await rig.server(rcpt_replies={"refused@example.org": reply})
    mailer = rig.mailer(server.port)

    with pytest.raises(error) as caught:
        await mailer.send(letter(1, "refused@example.org"))
    await mailer.send(letter(2))

    assert type(caught.value) is error
    assert caught.value.code == code
    assert [r.recipients for r in server.received] == [["bob@example.org"]]
    # A refusal leaves the connection usable.
    assert server.connections == 1


async def test_smtp_421_slows_down_and_drops_the_connection(rig: SmtpRig) -> None:
    server = await rig.server(rcpt_replies={"refused@example.org": "421 4.3.2 closing"})
    mailer = rig.mailer(server.port)

    with pytest.raises(SlowDown) as caught:
        await mailer.send(letter(1, "refused@example.org"))
    await mailer.send(letter(2))

    assert type(caught.value) is RelayBusy
    assert caught.value.code == 421
    assert len(server.received) == 1
    assert server.connections == 2


@pytest.mark.parametrize(
    ("reply", "error", "code"),
    [
        ("554 5.6.0 message refused", PermanentSendError, 554),
        ("452 4.3.1 insufficient storage", SlowDown, 452),
        ("421 4.4.2 timeout", RelayBusy, 421),
    ],
)
async def test_smtp_data_refusal(
    rig: SmtpRig, reply: str, error: type[SendError], code: int
) -> None:
    server = await rig.server(data_replies=[reply])
    mailer = rig.mailer(server.port)

    with pytest.raises(error) as caught:
        await mailer.send(letter(1))
    await mailer.send(letter(2))

    assert type(caught.value) is error
    assert caught.value.code == code
    assert [r.data for r in server.received] == [letter(2).data]


async def test_smtp_hang_up_mid_transaction_is_transient_and_the_pool_reconnects(
    rig: SmtpRig,
) -> None:
    server = await rig.server(drop_next_data=True)
    mailer = rig.mailer(server.port, connections=1)

    with pytest.raises(TransientSendError) as caught:
        await mailer.send(letter(1))
    await mailer.send(letter(2))

    assert type(caught.value) is TransientSendError
    assert isinstance(caught.value.__cause__, ConnectionError)
    assert caught.value.code is None
    # The message was out: the server may have taken it before hanging up.
    assert caught.value.ambiguous
    assert [r.data for r in server.received] == [letter(2).data]
    assert server.connections == 2


async def test_smtp_hang_up_before_the_message_is_not_in_doubt(rig: SmtpRig) -> None:
    server = await rig.server(drop_at_rcpt=True)
    mailer = rig.mailer(server.port, connections=1)

    with pytest.raises(TransientSendError) as caught:
        await mailer.send(letter(1))
    await mailer.send(letter(2))

    assert isinstance(caught.value.__cause__, ConnectionError)
    assert not caught.value.ambiguous
    assert [r.data for r in server.received] == [letter(2).data]


async def test_smtp_timeout_mid_transaction_drops_the_connection(rig: SmtpRig) -> None:
    server = await rig.server(stall_next_data=0.5)
    mailer = rig.mailer(server.port, connections=1, timeout=0.2)

    with pytest.raises(TransientSendError) as caught:
        await mailer.send(letter(1))
    await mailer.send(letter(2))

    assert isinstance(caught.value.__cause__, TimeoutError)
    # Timed out after the final dot: the server may still take it.
    assert caught.value.ambiguous
    # The late reply to the first letter is not read as the second one's: a new connection.
    assert server.connections == 2
    assert letter(2).data in [r.data for r in server.received]


async def test_smtp_unreachable_port_is_transient(rig: SmtpRig) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mailer = rig.mailer(port)

    with pytest.raises(TransientSendError) as caught:
        await mailer.send(letter(1))

    assert type(caught.value) is RelayDown
    assert caught.value.code is None


async def test_smtp_silent_server_times_out_as_transient(rig: SmtpRig) -> None:
    held: list[asyncio.StreamWriter] = []

    async def never_greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    listener = await asyncio.start_server(never_greet, "127.0.0.1", 0)
    mailer = rig.mailer(listener.sockets[0].getsockname()[1], timeout=0.2)
    try:
        with pytest.raises(TransientSendError) as caught:
            await mailer.send(letter(1))
    finally:
        listener.close()
        for writer in held:
            writer.close()
            await writer.wait_closed()
        await listener.wait_closed()

    assert isinstance(caught.value.__cause__, TimeoutError)


async def test_smtp_idn_domain_goes_as_punycode_without_smtputf8(rig: SmtpRig) -> None:
    server = await rig.server()
    mailer = rig.mailer(server.port)

    await mailer.send(letter(1, "anna@münchen.example"))

    [received] = server.received
    assert received.recipients == ["anna@xn--mnchen-3ya.example"]
    assert not received.smtputf8


async def test_smtp_utf8_local_part_uses_smtputf8(rig: SmtpRig) -> None:
    server = await rig.server(smtputf8=True)
    mailer = rig.mailer(server.port)
    sent = letter(1, "jörg@example.org")

    await mailer.send(sent)

    [received] = server.received
    assert received.recipients == ["jörg@example.org"]
    assert received.smtputf8
    assert received.data == sent.data


async def test_smtp_utf8_local_part_without_smtputf8_is_permanent(rig: SmtpRig) -> None:
    server = await rig.server(smtputf8=False)
    mailer = rig.mailer(server.port)

    with pytest.raises(PermanentSendError) as caught:
        await mailer.send(letter(1, "jörg@example.org"))
    await mailer.send(letter(2))

    assert "SMTPUTF8" in str(caught.value)
    assert [r.recipients for r in server.received] == [["bob@example.org"]]
    assert server.connections == 1


async def test_smtp_close_quits_idle_connections(rig: SmtpRig) -> None:
    server = await rig.server()
    mailer = rig.mailer(server.port)
    await asyncio.gather(mailer.send(letter(1)), mailer.send(letter(2)))

    await mailer.close()

    assert server.quits == 2
    with pytest.raises(RuntimeError):
        await mailer.send(letter(3))


# TLS, with a throwaway self-signed certificate for 127.0.0.1 (see conftest.py).


async def test_smtp_starttls(rig: SmtpRig, certificate: Certificate) -> None:
    server = await rig.server(tls_context=certificate.server)
    mailer = rig.mailer(server.port, security="starttls", tls_context=certificate.client)

    await mailer.send(letter(1))

    [received] = server.received
    assert received.tls
    assert received.data == letter(1).data


async def test_smtp_implicit_tls(rig: SmtpRig, certificate: Certificate) -> None:
    server = await rig.server(tls_context=certificate.server, implicit_tls=True)
    mailer = rig.mailer(server.port, security="tls", tls_context=certificate.client)

    await mailer.send(letter(1))

    [received] = server.received
    assert received.tls


async def test_smtp_untrusted_certificate_is_transient(
    rig: SmtpRig, certificate: Certificate
) -> None:
    server = await rig.server(tls_context=certificate.server)
    mailer = rig.mailer(server.port, security="starttls")  # the system's trust store

    with pytest.raises(TransientSendError) as caught:
        await mailer.send(letter(1))

    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
    assert server.received == []


@pytest.mark.parametrize("excluded", [(), ("PLAIN",)], ids=["auth-plain", "auth-login"])
async def test_smtp_login(
    rig: SmtpRig, certificate: Certificate, excluded: tuple[str, ...]
) -> None:
    server = await rig.server(
        tls_context=certificate.server, credentials=("user", "s3cret"), auth_exclude=excluded
    )
    mailer = rig.mailer(
        server.port,
        security="starttls",
        tls_context=certificate.client,
        username="user",
        password="s3cret",
    )

    await mailer.send(letter(1))
    await mailer.send(letter(2))

    assert server.logins == ["user"]
    assert len(server.received) == 2


async def test_smtp_wrong_password_is_transient_not_permanent(
    rig: SmtpRig, certificate: Certificate
) -> None:
    server = await rig.server(tls_context=certificate.server, credentials=("user", "s3cret"))
    mailer = rig.mailer(
        server.port,
        security="starttls",
        tls_context=certificate.client,
        username="user",
        password="wrong",
    )

    with pytest.raises(TransientSendError) as caught:
        await mailer.send(letter(1))

    # Bad credentials are no reason to give up on this recipient.
    assert type(caught.value) is RelayDown
    assert caught.value.code == 535
    assert server.received == []


# Byte-level servers, for what aiosmtpd cannot show.


class ScriptedServer:
    """Reads commands line by line and answers each with a canned reply; the message
    after DATA is read whole and answered with 250.

    With ``tls_context`` it answers STARTTLS with the next of ``starttls_replies``
    (``220 go ahead`` once they run out), written as one chunk, then starts TLS.
    ``sessions`` holds the lines each connection sent, in order."""

    def __init__(
        self,
        greeting: bytes,
        ehlo: bytes,
        *,
        tls_context: ssl.SSLContext | None = None,
        starttls_replies: Sequence[bytes] = (),
    ) -> None:
        self.greeting = greeting
        self.ehlo = ehlo
        self.tls_context = tls_context
        self.starttls_replies = list(starttls_replies)
        self.sessions: list[list[bytes]] = []
        self.messages: list[bytes] = []
        self._listener: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self._listener = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._listener.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        assert self._listener is not None
        self._listener.close()
        for writer in self._writers:
            writer.close()
        await self._listener.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        lines: list[bytes] = []
        self.sessions.append(lines)
        try:
            await self._converse(reader, writer, lines)
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client hung up on us, as some tests want it to
        finally:
            writer.close()

    async def _converse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, lines: list[bytes]
    ) -> None:
        writer.write(self.greeting)
        waiting: list[bytes] = []
        while line := await reader.readline():
            lines.append(line)
            command = line[:4].upper()
            if command == b"EHLO":
                writer.write(self.ehlo)
            elif command == b"STAR" and self.tls_context is not None:
                reply = self.starttls_replies.pop(0) if self.starttls_replies else None
                writer.write(reply or b"220 go ahead\r\n")
                await writer.drain()
                await writer.start_tls(self.tls_context)
            elif command in (b"MAIL", b"RCPT"):
                waiting.append(b"250 ok\r\n")
            elif command == b"DATA":
                # Strict pipelining: no reply to MAIL or RCPT before DATA has arrived.
                writer.write(b"".join(waiting) + b"354 go on\r\n")
                waiting = []
                self.messages.append(await reader.readuntil(b"\r\n.\r\n"))
                writer.write(b"250 ok\r\n")
            elif command == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()


async def test_smtp_pipelining_sends_the_envelope_in_one_go(rig: SmtpRig) -> None:
    server = ScriptedServer(b"220 hi\r\n", b"250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
    port = await server.start()
    # A client that waited for the reply to MAIL would wait for ever here.
    mailer = rig.mailer(port, timeout=2.0)
    bare = Letter(1, 1, SENDER, "bob@example.org", b"Subject: x\n\n.hidden\nlast")
    try:
        await mailer.send(bare)
        await mailer.close()
    finally:
        await server.stop()

    # Bare LFs became CRLF, the leading dot was doubled, the end marked with a dot.
    assert server.messages == [b"Subject: x\r\n\r\n..hidden\r\nlast\r\n.\r\n"]


async def failed_send(rig: SmtpRig, server: ScriptedServer) -> TransientSendError:
    mailer = rig.mailer(await server.start())
    try:
        with pytest.raises(TransientSendError) as caught:
            await mailer.send(letter(1))
    finally:
        await server.stop()
    assert server.messages == []
    return caught.value


async def test_smtp_garbled_reply_is_transient(rig: SmtpRig) -> None:
    server = ScriptedServer(b"220 hi\r\n", b"250-mx.test\r\n25O PIPELINING\r\n")

    error = await failed_send(rig, server)

    assert isinstance(error.__cause__, SmtpProtocolError)
    assert "garbled" in str(error)


async def test_smtp_multiline_refused_greeting_is_transient(rig: SmtpRig) -> None:
    server = ScriptedServer(b"554-not today\r\n554 go away\r\n", b"")

    error = await failed_send(rig, server)

    # Refused while connecting: nothing to do with this recipient, so not permanent.
    assert type(error) is RelayDown
    assert error.code == 554
    assert "not today\ngo away" in str(error)


# STARTTLS: nothing sent in plain text may be read as a reply over TLS.

STARTTLS_EHLO = b"250-mx.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n"


@pytest.mark.parametrize(
    "injected",
    [b"250 injected\r\n", b"250-injected\r\n", b"250 inj"],
    ids=["a-reply", "a-line-of-a-reply", "part-of-a-line"],
)
async def test_smtp_starttls_injection_drops_the_connection_and_a_clean_one_delivers(
    rig: SmtpRig, certificate: Certificate, injected: bytes
) -> None:
    # A man in the middle (or the server) sends more behind the 220, in the same
    # write, hoping the client reads it over TLS as the answer to its next command.
    server = ScriptedServer(
        b"220 hi\r\n",
        STARTTLS_EHLO,
        tls_context=certificate.server,
        starttls_replies=[b"220 go ahead\r\n" + injected],
    )
    port = await server.start()
    mailer = rig.mailer(port, security="starttls", tls_context=certificate.client, timeout=2.0)
    try:
        with pytest.raises(TransientSendError) as caught:
            await mailer.send(letter(1))
        await mailer.send(letter(1))  # the worker's retry, on a new connection
        await mailer.close()
    finally:
        await server.stop()

    poisoned, clean = server.sessions
    # Nothing went out after STARTTLS on the poisoned connection, MAIL FROM least of all.
    assert not any(line.upper().startswith(b"MAIL") for line in poisoned)
    assert poisoned[-1] == b"STARTTLS\r\n"
    assert isinstance(caught.value.__cause__, SmtpProtocolError)
    assert "STARTTLS injection" in str(caught.value)
    assert b"MAIL FROM:<news@example.com>\r\n" in clean
    assert len(server.messages) == 1


async def test_smtp_trusts_the_certificates_of_ssl_cert_file(
    rig: SmtpRig,
    certificate: Certificate,
    certificate_files: CertificateFiles,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # OpenSSL's way to replace the system's trust store; the mailer has no context of its own.
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate_files.cert))
    server = await rig.server(tls_context=certificate.server)
    mailer = rig.mailer(server.port, security="starttls")

    await mailer.send(letter(1))

    [received] = server.received
    assert received.tls


# Failures of the client itself: they fail the attempt at once, and are transient.


@pytest.mark.parametrize("step", ["_attach", "_parse"], ids=["connection_made", "data_received"])
async def test_smtp_error_in_a_protocol_callback_fails_the_attempt_at_once(
    rig: SmtpRig, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    def explode(*args: object) -> None:
        raise RuntimeError("a bug in a callback")

    # The event loop calls these, and would only log what they raise.
    monkeypatch.setattr(smtp_client._ReplyReader, step, explode)
    server = await rig.server()
    mailer = rig.mailer(server.port)

    with pytest.raises(TransientSendError) as caught:
        await mailer.send(letter(1))

    # The callback's own error, not the mailer's timeout after waiting for a reply.
    cause = caught.value.__cause__
    assert isinstance(cause, ConnectionError)
    assert isinstance(cause.__cause__, RuntimeError)
    assert "a bug in a callback" in str(caught.value)
    assert server.received == []


async def test_smtp_unexpected_error_while_connecting_is_transient_and_logged(
    rig: SmtpRig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def explode(*args: object) -> dict[str, str]:
        raise AssertionError

    monkeypatch.setattr(smtp_client, "_hello", explode)
    server = await rig.server()
    mailer = rig.mailer(server.port)

    with pytest.raises(TransientSendError) as caught:
        await mailer.send(letter(1))

    assert isinstance(caught.value.__cause__, AssertionError)
    assert "AssertionError" in str(caught.value)
    [record] = [r for r in caplog.records if r.name == "mailsched.mail.smtp"]
    assert record.exc_info is not None
