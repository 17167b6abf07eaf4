"""The SMTP Mailer: letters go out over a small pool of reused connections.

Opening a connection costs a TCP (and often TLS) handshake, EHLO and AUTH, more than
the transaction itself, so connections are kept and reused. At most
``SmtpConfig.connections`` transactions run at once, each on its own connection;
a connection that broke, or that the server is closing (421), is dropped and the next
letter opens a fresh one. The wire protocol is :mod:`mailsched.mail.smtp_client`.

Its errors become ours in :func:`_translate`, and only there::

    reply 421 or 454, at any step             -> RelayBusy(code)  (a SlowDown: the relay's own;
                                                 a 421 on a reused connection is
                                                 first tried again on a fresh one)
    reply 450, 451, 452 while connecting      -> RelayBusy(code)
    reply 450, 451, 452 to MAIL, RCPT or DATA -> SlowDown(code)
    reply 5xx to MAIL, RCPT or DATA           -> PermanentSendError(code)
    other 4xx reply to MAIL, RCPT or DATA     -> TransientSendError(code)
    any other failure while connecting        -> RelayDown  (refused, timed out, a 4xx/5xx to
                                                 the greeting, STARTTLS or AUTH, plain text
                                                 after STARTTLS's 220; not the recipient's)
    SMTPUTF8 needed but not offered           -> PermanentSendError
    disconnect or timeout mid-transaction     -> TransientSendError, ambiguous when it
                                                 broke after the message's final dot
    anything unexpected raised while connecting -> RelayDown, logged with its traceback

RelayBusy and RelayDown are RelayUnavailable: nothing went out, so
:class:`~mailsched.mail.relays.Relays` may hand the letter to the next relay at once.
Every error carries the relay's name in ``relay``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl

from mailsched.config import SmtpConfig
from mailsched.errors import (
    PermanentSendError,
    RelayBusy,
    RelayDown,
    SendError,
    SlowDown,
    TransientSendError,
)
from mailsched.mail import Accepted, Letter
from mailsched.mail.message import wire_address
from mailsched.mail.smtp_client import SmtpConnection, SmtpReply, SmtpUnsupported

log = logging.getLogger(__name__)

_SLOW_DOWN = frozenset({450, 451, 452})
#: Replies that refuse every message for now, not this one: the relay's own trouble.
_RELAY_BUSY = frozenset({421, 454})
# TimeoutError and ConnectionError are OSErrors, and so are TLS failures; ValueError
# is an address that cannot go on a command line.
_CLIENT_ERRORS = (SmtpReply, SmtpUnsupported, OSError, ValueError)


class SmtpMailer:
    """Sends letters through one SMTP relay over up to ``config.connections`` connections."""

    def __init__(
        self,
        config: SmtpConfig,
        *,
        tls_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
        fail_fast: bool = False,
    ) -> None:
        """Prepare the pool; nothing connects until the first :meth:`send`.

        ``tls_context`` replaces the system's trust store (for a private CA, say) and
        ``local_hostname`` the name given in EHLO (by default this host's FQDN). With
        ``fail_fast`` (one relay of several), letters that waited for a connection
        while connecting failed raise :class:`~mailsched.errors.RelayDown` at once,
        for the next relay to take, instead of each trying (and timing out) in turn.
        """
        self._config = config
        self._fail_fast = fail_fast
        self._tls_context = tls_context
        self._local_hostname = local_hostname
        self._slots = asyncio.Semaphore(config.connections)
        # Last in, first out: the warmest connection is reused first and the
        # others may time out on the server's side without costing a failed send.
        self._idle: list[SmtpConnection] = []
        self._closed = False
        #: Failed attempts to connect so far: with ``fail_fast``, a letter that waited
        #: for a slot while one failed does not queue up for a failure of its own.
        self._connect_failures = 0

    @property
    def name(self) -> str:
        """The relay's name (``host:port`` unless its URL gave one)."""
        return self._config.name or f"{self._config.host}:{self._config.port}"

    async def send(self, letter: Letter) -> Accepted:
        """Run one MAIL/RCPT/DATA transaction; safe to call from many tasks at once.
        Return the server's reply to the data (the text after its 250).

        A recipient whose local part is not ASCII is sent with SMTPUTF8, and refused
        with :class:`~mailsched.errors.PermanentSendError` by a server without it.
        """
        if self._closed:
            raise RuntimeError("the SmtpMailer is closed")
        failures = self._connect_failures
        async with self._slots:
            # Checked here, not by the caller: waiting for a free connection can
            # take long enough for the lease to pass (a worker paused, then resumed).
            letter.check_time()
            client = self._take_idle()
            reused = client is not None
            if client is None:
                if self._fail_fast and self._connect_failures != failures:
                    # The relay could not be reached while this letter waited: nothing
                    # went out, so Relays may hand it to the next relay at once.
                    down = RelayDown("the SMTP server could not be reached a moment ago")
                    down.relay = self.name
                    raise down
                client = await self._connect_as(self.name)
            while True:
                try:
                    # One deadline for the whole transaction: the configured timeout, or
                    # the lease's end if sooner. asyncio's timer is monotonic, so a
                    # process stopped (SIGSTOP) mid-send finds it expired on waking.
                    async with asyncio.timeout(self._deadline(letter)):
                        reply = await _transact(client, letter)
                    break
                except _CLIENT_ERRORS as exc:
                    if isinstance(exc, OSError):
                        # Broken, or timed out halfway through: a late reply would be
                        # taken for the answer to the next letter's commands.
                        client.close()
                    if reused and _closing(exc) and not client.in_doubt:
                        # An idle connection the server closed, or was closing (its idle
                        # timeout's 421), before the message went out: that is about the
                        # connection, not the relay. Once more, on a fresh one (a relay
                        # that died meanwhile then refuses it, and fails over).
                        client.close()
                        reused = False
                        client = await self._connect_as(self.name)
                        continue
                    self._release(client)
                    error = _translate(exc, connecting=False, in_doubt=client.in_doubt)
                    error.relay = self.name
                    raise error from exc
                except BaseException:
                    # Cancelled halfway through a transaction: the server's state is unknown.
                    client.close()
                    raise
            self._release(client)
            return Accepted(reply, self.name)

    async def close(self) -> None:
        """QUIT the idle connections; connections still sending close when they finish."""
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._quit(client) for client in idle))

    def _deadline(self, letter: Letter) -> float:
        left = letter.seconds_left()
        return self._config.timeout if left is None else min(self._config.timeout, left)

    def _take_idle(self) -> SmtpConnection | None:
        while self._idle:
            client = self._idle.pop()
            if client.is_open:
                return client
            client.close()
        return None

    def _release(self, client: SmtpConnection) -> None:
        """Back to the pool if it is still in step with the server (it closes itself
        when it is not), else drop it."""
        if client.is_open and not self._closed:
            self._idle.append(client)
        else:
            client.close()

    async def _connect_as(self, name: str) -> SmtpConnection:
        try:
            return await self._connect()
        except SendError as error:
            self._connect_failures += 1
            error.relay = name
            raise

    async def _connect(self) -> SmtpConnection:
        config = self._config
        if self._local_hostname is None:
            self._local_hostname = socket.getfqdn()
        if self._tls_context is None and config.security != "plain":
            self._tls_context = ssl.create_default_context()
        credentials = None
        if config.username is not None:
            credentials = (config.username, config.password or "")
        try:
            async with asyncio.timeout(config.timeout):
                client = await SmtpConnection.open(
                    config.host,
                    config.port,
                    local_hostname=self._local_hostname,
                    security=config.security,
                    tls_context=self._tls_context,
                    credentials=credentials,
                )
        except Exception as exc:
            # No letter has gone out yet, so whatever failed concerns no recipient:
            # the attempt fails now and counts as transient. A bug must not look like
            # a busy server, though: it is logged with its traceback.
            if not isinstance(exc, _CLIENT_ERRORS):
                log.exception("unexpected error connecting to the SMTP server")
            raise _translate(exc, connecting=True, in_doubt=False) from exc
        log.debug("opened an SMTP connection to %s:%s", config.host, config.port)
        return client

    async def _quit(self, client: SmtpConnection) -> None:
        # Closing is best effort: the server may have gone already.
        try:
            async with asyncio.timeout(min(self._config.timeout, 5.0)):
                await client.quit()
        except (TimeoutError, OSError):
            client.close()


async def _transact(client: SmtpConnection, letter: Letter) -> str:
    sender = wire_address(letter.sender)
    recipient = wire_address(letter.recipient)
    # An SMTPUTF8 server also takes 8-bit MIME (RFC 6531 section 3.1), and a UTF-8
    # address also sits in the message's To or From header.
    return await client.send(
        sender, recipient, letter.data, utf8=not (sender + recipient).isascii()
    )


def _closing(exc: Exception) -> bool:
    """Whether a reused connection's error is the server closing it."""
    return isinstance(exc, ConnectionError) or (isinstance(exc, SmtpReply) and exc.code == 421)


def _translate(exc: Exception, *, connecting: bool, in_doubt: bool) -> SendError:
    """Map an SMTP client (or socket) error to ours; see the module docstring."""
    if isinstance(exc, SmtpReply):
        message = f"the SMTP server replied {exc.code} {exc.text}"
        if exc.code in _RELAY_BUSY or (connecting and exc.code in _SLOW_DOWN):
            return RelayBusy(message, exc.code, reply=exc.text)
        # A refused greeting, STARTTLS or AUTH concerns every recipient alike; giving
        # up on this one would burn through the campaign.
        if connecting:
            return RelayDown(message, exc.code, reply=exc.text)
        if exc.code in _SLOW_DOWN:
            return SlowDown(message, exc.code, reply=exc.text)
        if exc.code >= 500:
            return PermanentSendError(message, exc.code, reply=exc.text)
        return TransientSendError(message, exc.code, reply=exc.text)
    if connecting:
        # An AssertionError, say, has no message of its own.
        reason = str(exc) or type(exc).__name__
        return RelayDown(f"failed connecting to the SMTP server: {reason}")
    if isinstance(exc, SmtpUnsupported | ValueError):
        return PermanentSendError(f"the SMTP server cannot take this letter: {exc}")
    # The connection broke or timed out. After the message's final dot the server
    # may have taken it before we read its reply (RFC 1047), so a retry may duplicate it.
    return TransientSendError(f"failed talking to the SMTP server: {exc}", ambiguous=in_doubt)
