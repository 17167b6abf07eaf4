"""The SMTP Mailer: letters go out over a small pool of reused aiosmtplib connections.

Opening a connection costs a TCP (and often TLS) handshake, EHLO and AUTH, more than
the transaction itself, so connections are kept and reused. At most
``SmtpConfig.connections`` transactions run at once, each on its own connection;
a connection that broke, or that the server is closing (421), is dropped and the next
letter opens a fresh one.

aiosmtplib's errors become ours in :func:`_translate`, and only there::

    reply 421, 450, 451, 452, 454             -> SlowDown(code)
    reply 5xx to MAIL, RCPT or DATA           -> PermanentSendError(code)
    reply 5xx to the greeting, STARTTLS, AUTH -> TransientSendError(code)  (not the recipient's)
    other 4xx reply                           -> TransientSendError(code)
    SMTPUTF8 needed but not offered           -> PermanentSendError
    disconnect, refused connection, timeout   -> TransientSendError
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

from aiosmtplib import (
    SMTP,
    SMTPException,
    SMTPNotSupported,
    SMTPRecipientsRefused,
    SMTPResponseException,
)

from mailsched.config import SmtpConfig
from mailsched.errors import PermanentSendError, SendError, SlowDown, TransientSendError
from mailsched.mail import Letter
from mailsched.mail.message import wire_address

log = logging.getLogger(__name__)

_SLOW_DOWN = frozenset({421, 450, 451, 452, 454})
_CLOSING = 421
# TimeoutError (and so asyncio.TimeoutError) and ConnectionError are OSErrors;
# ValueError covers addresses aiosmtplib refuses to put on a command line and
# certificate verification failures.
_LIBRARY_ERRORS = (SMTPException, OSError, ValueError)


class SmtpMailer:
    """Sends letters through one SMTP server over up to ``config.connections`` connections."""

    def __init__(
        self,
        config: SmtpConfig,
        *,
        tls_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
    ) -> None:
        """Prepare the pool; nothing connects until the first :meth:`send`.

        ``tls_context`` replaces the system's trust store (for a private CA, say) and
        ``local_hostname`` the name given in EHLO (by default this host's FQDN).
        """
        self._config = config
        self._tls_context = tls_context
        self._local_hostname = local_hostname
        self._slots = asyncio.Semaphore(config.connections)
        # Last in, first out: the warmest connection is reused first and the
        # others may time out on the server's side without costing a failed send.
        self._idle: list[SMTP] = []
        self._closed = False

    async def send(self, letter: Letter) -> None:
        """Run one MAIL/RCPT/DATA transaction; safe to call from many tasks at once.

        A recipient whose local part is not ASCII is sent with SMTPUTF8, and refused
        with :class:`~mailsched.errors.PermanentSendError` by a server without it.
        """
        if self._closed:
            raise RuntimeError("the SmtpMailer is closed")
        async with self._slots:
            # Checked here, not by the caller: waiting for a free connection can
            # take long enough for the lease to pass (a worker paused, then resumed).
            letter.check_time()
            client = self._take_idle() or await self._connect()
            try:
                # One deadline for the whole transaction: the configured timeout, or
                # the lease's end if sooner. asyncio's timer is monotonic, so a
                # process stopped (SIGSTOP) mid-send finds it expired on waking.
                async with asyncio.timeout(self._deadline(letter)):
                    await self._transact(client, letter)
            except _LIBRARY_ERRORS as exc:
                self._release(client, reusable=_reusable(exc))
                raise _translate(exc, connecting=False) from exc
            except BaseException:
                # Cancelled halfway through a transaction: the server's state is unknown.
                self._release(client, reusable=False)
                raise
            self._release(client, reusable=True)

    async def close(self) -> None:
        """QUIT the idle connections; connections still sending close when they finish."""
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(_quit(client) for client in idle))

    async def _transact(self, client: SMTP, letter: Letter) -> None:
        sender = wire_address(letter.sender)
        recipient = wire_address(letter.recipient)
        # An SMTPUTF8 server also takes 8-bit MIME (RFC 6531 section 3.1), and a UTF-8
        # address also sits in the message's To or From header.
        options = [] if (sender + recipient).isascii() else ["SMTPUTF8", "BODY=8BITMIME"]
        # timeout=None: aiosmtplib would wrap each reply in asyncio.wait_for, which on
        # Python 3.11 swallows a cancellation that lands as the reply arrives; the
        # message data would then go out after the deadline. send() owns the timeout.
        await client.sendmail(sender, [recipient], letter.data, mail_options=options, timeout=None)

    def _deadline(self, letter: Letter) -> float:
        left = letter.seconds_left()
        return self._config.timeout if left is None else min(self._config.timeout, left)

    def _take_idle(self) -> SMTP | None:
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client
            client.close()
        return None

    def _release(self, client: SMTP, *, reusable: bool) -> None:
        if reusable and client.is_connected and not self._closed:
            self._idle.append(client)
        else:
            client.close()

    async def _connect(self) -> SMTP:
        config = self._config
        client = SMTP(
            hostname=config.host,
            port=config.port,
            username=config.username,
            password=config.password,
            local_hostname=self._local_hostname,
            timeout=config.timeout,
            use_tls=config.security == "tls",
            start_tls=config.security == "starttls",
            tls_context=self._tls_context,
        )
        try:
            await client.connect()
        except _LIBRARY_ERRORS as exc:
            raise _translate(exc, connecting=True) from exc
        log.debug("opened an SMTP connection to %s:%s", config.host, config.port)
        return client


async def _quit(client: SMTP) -> None:
    # Closing is best effort: the server may have gone already.
    with contextlib.suppress(*_LIBRARY_ERRORS):
        await client.quit()
    client.close()


def _translate(exc: Exception, *, connecting: bool) -> SendError:
    """Map an aiosmtplib (or socket) error to ours; see the module docstring."""
    code, text = _reply(exc)
    if code is not None:
        message = f"the SMTP server replied {code} {text}"
        if code in _SLOW_DOWN:
            return SlowDown(message, code)
        # A 5xx while connecting (a refused greeting, wrong credentials) concerns
        # every recipient alike; giving up on this one would burn through the campaign.
        if code >= 500 and not connecting:
            return PermanentSendError(message, code)
        return TransientSendError(message, code)
    if not connecting and isinstance(exc, SMTPNotSupported | ValueError):
        return PermanentSendError(f"the SMTP server cannot take this letter: {exc}")
    if connecting:
        return TransientSendError(f"failed connecting to the SMTP server: {exc}")
    # The connection broke or timed out mid-transaction: the server may have taken
    # the message before we read its reply (RFC 1047), so a retry may duplicate it.
    return TransientSendError(f"failed talking to the SMTP server: {exc}", ambiguous=True)


def _reusable(exc: Exception) -> bool:
    """Whether the connection is still in step with the server after ``exc``.

    A refusal leaves it ready for the next transaction (aiosmtplib sends RSET), except
    421, which announces that the server is closing it. After anything else, such as a
    timeout or a garbled reply, the next reply could belong to the wrong command.
    """
    code, _ = _reply(exc)
    if code is not None:
        return code != _CLOSING
    return isinstance(exc, SMTPNotSupported) or type(exc) is ValueError


def _reply(exc: Exception) -> tuple[int | None, str]:
    """The 4xx/5xx reply inside ``exc``, if there is one."""
    if isinstance(exc, SMTPRecipientsRefused) and exc.recipients:
        # sendmail() raises this, not SMTPRecipientRefused, when every recipient
        # was refused; each letter has exactly one.
        exc = exc.recipients[0]
    if isinstance(exc, SMTPResponseException) and 400 <= exc.code <= 599:
        return exc.code, exc.message
    return None, ""
