"""``mailsched inbound``: the bounce mailbox's SMTP server (aiosmtpd), its limits and
its lifecycle. What it does with mail is :mod:`mailsched.inbound.mailbox`.

Limits: a message over ``MAILSCHED_INBOUND_MAX_MESSAGE_BYTES`` is refused with
``552``; beyond ``MAILSCHED_INBOUND_MAX_CONNECTIONS`` sessions at once, a new
connection is greeted with ``421`` and closed; a session idle for
:data:`IDLE_TIMEOUT` seconds is closed; each command may come at most
:data:`CALLS_PER_COMMAND` times in one session.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP

from mailsched.config import InboundConfig
from mailsched.errors import ConfigError
from mailsched.inbound.mailbox import Mailbox
from mailsched.metrics import Metrics

log = logging.getLogger(__name__)

#: Seconds a session may wait for its client (RFC 5321 suggests minutes; a connection
#: slot held by a silent client is a slot a bounce cannot use).
IDLE_TIMEOUT = 60.0
#: Times each command may be given in one session: many messages per connection,
#: but not a session that never ends.
CALLS_PER_COMMAND = 1000
#: Seconds a graceful stop waits for messages being processed.
STOP_GRACE = 10.0


class _Session(SMTP):
    """One client's session; tells the server when it ends."""

    # Bounces quote messages whose lines some MTAs never wrapped; the reader cuts long
    # lines itself, so take them rather than refuse the message (aiosmtpd: 1001).
    line_length_limit = 32 * 1024

    def __init__(self, server: InboundServer, handler: Mailbox, **options: Any) -> None:
        super().__init__(handler, **options)
        self._server = server

    def connection_lost(self, error: Exception | None) -> None:
        self._server._ended(self)
        super().connection_lost(error)

    async def push(self, status: AnyStr) -> None:
        # aiosmtpd answers an oversized message (or SIZE= announcement) itself.
        if isinstance(status, str) and status.startswith("552"):
            self._server.metrics.inbound_messages.labels("too_large").inc()
        await super().push(status)


class _Refusal(asyncio.Protocol):
    """A connection beyond the limit: greeted with 421 and closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(b"421 4.7.0 Too many connections, try again later\r\n")
        transport.close()


class InboundServer:
    """Listens with :meth:`start`, serves until :meth:`run`'s ``stop`` is set."""

    def __init__(self, config: InboundConfig, mailbox: Mailbox, metrics: Metrics) -> None:
        self._config = config
        self._mailbox = mailbox
        self.metrics = metrics
        self._sessions: set[_Session] = set()
        self._server: asyncio.Server | None = None
        self._hostname = socket.gethostname()

    @property
    def connections(self) -> int:
        """Sessions open now."""
        return len(self._sessions)

    @property
    def port(self) -> int:
        """The port listened on (the configured one, or the one picked for 0)."""
        assert self._server is not None, "not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Listen; a :class:`ConfigError` if the address cannot be bound."""
        loop = asyncio.get_running_loop()
        config = self._config
        try:
            self._server = await loop.create_server(self._accept, config.host, config.port)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen for inbound mail on {config.host}:{config.port} ({exc}); "
                "set MAILSCHED_INBOUND_HOST and MAILSCHED_INBOUND_PORT"
            ) from exc
        log.info(
            "inbound SMTP server listening on %s:%d for @%s",
            config.host,
            self.port,
            config.domain,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop``; then stop listening, let the messages being processed
        finish (for up to :data:`STOP_GRACE` seconds) and close every session."""
        if self._server is None:
            await self.start()
        try:
            await stop.wait()
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop listening, wait for the messages in flight, close the sessions."""
        if self._server is None:
            return
        self._server.close()
        try:
            await asyncio.wait_for(self._mailbox.wait_idle(), STOP_GRACE)
        except TimeoutError:
            log.warning("stopping with inbound messages still being processed")
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.close()
        await self._server.wait_closed()
        self._server = None

    def _accept(self) -> asyncio.Protocol:
        # Counted here, not in connection_made, so that connections accepted in one
        # loop iteration cannot all pass the limit together.
        if len(self._sessions) >= self._config.max_connections:
            self.metrics.inbound_refused_connections.inc()
            return _Refusal()
        session = _Session(
            self,
            self._mailbox,
            data_size_limit=self._config.max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=self._hostname,
            ident="mailsched",
            timeout=IDLE_TIMEOUT,
            command_call_limit=CALLS_PER_COMMAND,
            loop=asyncio.get_running_loop(),
        )
        self._sessions.add(session)
        return session

    def _ended(self, session: _Session) -> None:
        self._sessions.discard(session)
