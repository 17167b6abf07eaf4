"""An SMTP relay on loopback that can be switched off and on, for the failover tests.

:class:`SwitchSink` records what arrives as :class:`~tests.support.smtp_sink.SmtpSink`
does (aiosmtpd, on an event loop in a thread of its own), and each of its states is
what a relay in trouble looks like from outside:

- :meth:`accept`: an ordinary relay;
- :meth:`refuse`: down: nothing listens on its port (connections are refused) and
  the connections it had are cut;
- :meth:`busy`: up but throttling: every new connection is greeted with ``421`` and
  closed, and the connections it had are cut;
- :meth:`silent`: hung: new connections are accepted and never greeted (the client
  times out), and the connections it had are cut.

``mail_reply`` answers every MAIL with that reply instead of ``250`` (say ``454``),
``rcpt_replies`` answers RCPT for the given addresses, and ``drop_after_data`` keeps
the next message and then hangs up without a reply (the sender cannot know it arrived).
The port stays the same across switches.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
import time
from collections.abc import Coroutine
from email.message import EmailMessage
from typing import Any, Literal, TypeVar

from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.support.smtp_sink import Arrival, ArrivalLog, free_port

State = Literal["accept", "refuse", "busy", "silent"]
T = TypeVar("T")

BUSY_GREETING = b"421 4.3.2 sink.test is busy, try again later\r\n"


class _Busy(asyncio.Protocol):
    """A connection greeted with 421 and closed, as a throttling relay does."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(BUSY_GREETING)
        transport.close()


class _Silent(asyncio.Protocol):
    """A connection accepted and never answered, as a hung relay does."""

    def __init__(self) -> None:
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport


class _Handler:
    def __init__(self, sink: SwitchSink) -> None:
        self._sink = sink

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self._sink.mail_reply is not None:
            return self._sink.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        reply = self._sink.rcpt_replies.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        now = time.time()
        for rcpt in envelope.rcpt_tos:
            self._sink.record(Arrival(now, str(envelope.mail_from), rcpt, message))
        if self._sink.take_drop():
            _abort(server)
        return "250 OK queued"


def _abort(session: SMTP | _Silent) -> None:
    """Cut the connection at once, without a reply."""
    transport = session.transport
    if isinstance(transport, asyncio.WriteTransport):
        transport.abort()


class SwitchSink(ArrivalLog):
    """Start with :meth:`start`, stop with :meth:`stop`; ``url`` is for MAILSCHED_SMTP_URL.

    Its methods are called from the test's thread (blocking until the switch is done),
    never from its own loop."""

    def __init__(self) -> None:
        super().__init__()
        self.port = free_port()
        self.state: State = "refuse"
        self.mail_reply: str | None = None
        self.rcpt_replies: dict[str, str] = {}
        #: TCP connections accepted, in any state.
        self.connections = 0
        self._drop_after_data = False
        self._sessions: list[SMTP | _Silent] = []
        self._listener: asyncio.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> SwitchSink:
        """Start the thread and accept mail."""
        self._thread.start()
        self.accept()
        return self

    def accept(self) -> None:
        """Listen, and take mail on every new connection."""
        self._run(self._switch("accept"))

    def refuse(self) -> None:
        """Stop listening, and cut every connection: the relay is down."""
        self._run(self._switch("refuse"))

    def busy(self) -> None:
        """Listen, and greet every new connection with 421; cut the ones open."""
        self._run(self._switch("busy"))

    def silent(self) -> None:
        """Listen, and never greet a new connection; cut the ones open."""
        self._run(self._switch("silent"))

    def drop_after_data(self) -> None:
        """Keep the next message, then hang up instead of answering its final dot."""
        with self._lock:
            self._drop_after_data = True

    def stop(self) -> None:
        """Close everything and end the thread."""
        if not self._thread.is_alive():
            return
        self._run(self._switch("refuse"))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def take_drop(self) -> bool:
        with self._lock:
            drop, self._drop_after_data = self._drop_after_data, False
            return drop

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _switch(self, state: State) -> None:
        if state != "accept":
            await self._cut()
        if state == "refuse" and self._listener is not None:
            self._listener.close()
            await self._listener.wait_closed()
            self._listener = None
        self.state = state
        if state != "refuse" and self._listener is None:
            # The same port again (asyncio sets SO_REUSEADDR).
            self._listener = await self._loop.create_server(self._protocol, "127.0.0.1", self.port)

    async def _cut(self) -> None:
        sessions, self._sessions = self._sessions, []
        handlers = []
        for session in sessions:
            _abort(session)
            if isinstance(session, SMTP) and session._handler_coroutine is not None:
                handlers.append(session._handler_coroutine)
        await asyncio.gather(*handlers, return_exceptions=True)

    def _protocol(self) -> asyncio.BaseProtocol:
        self.connections += 1
        if self.state == "busy":
            return _Busy()
        if self.state == "silent":
            silent = _Silent()
            self._sessions.append(silent)
            return silent
        session = SMTP(_Handler(self), hostname="sink.test", decode_data=False, loop=self._loop)
        self._sessions.append(session)
        return session
