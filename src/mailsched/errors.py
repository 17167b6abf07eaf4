"""Every error mailsched raises on purpose, under one root.

Errors of the libraries underneath (SQLAlchemy, confluent-kafka, the socket and TLS)
are translated into these at the adapter that meets them, with ``raise … from``,
so nothing above an adapter handles a library's exception::

    MailschedError
    ├── ConfigError                 a setting is missing or malformed
    ├── NotFound                    a campaign that does not exist (for this caller)
    ├── Invalid                     a request breaks a rule only the service can check
    ├── Conflict                    the request contradicts the current state
    ├── IllegalMove                 a status change the transition table does not allow (a bug)
    ├── LeaseLost                   a batch's outcomes met rows no longer held: write them carefully
    ├── UnsafeUrl                   a webhook URL mailsched will not call (SSRF rules)
    ├── ReportTooLarge              an inbound bounce or complaint report too large to read
    ├── ForgedReturnPath            a bounce's address is no return path we made (VERP)
    ├── Unauthenticated             a provider's webhook call whose credentials do not check out
    ├── StoreError                  the database refused or failed
    │   ├── StoreUnavailable        the database cannot be reached; try again later
    │   ├── DuplicateKey            a row with that key exists already
    │   └── DataRefused             a value does not fit its column; asking again will not help
    ├── QueueError                  the queue refused or failed
    │   └── QueueUnavailable        the broker cannot be reached; try again later
    └── SendError                   one email was not accepted by the mail server
        ├── SendExpired             not even tried: the worker's lease was about to end
        ├── TransientSendError      try again later (4xx reply, connection lost, timeout)
        │   ├── SlowDown            the server asks us to send more slowly (421, 45x)
        │   └── RelayUnavailable    the relay took nothing: another relay may be tried at once
        │       ├── RelayDown       unreachable, or refused the session (greeting, TLS, AUTH)
        │       ├── RelayBusy       421 or 454: refuses all work for now (also a SlowDown)
        │       └── NoRelay         no relay of several may take mail now (also a SlowDown)
        └── PermanentSendError      give up on this recipient (5xx reply)
"""

from __future__ import annotations


class MailschedError(Exception):
    """The root of every mailsched error."""


class ConfigError(MailschedError):
    """A setting is missing or malformed."""


class NotFound(MailschedError):
    """The thing asked for does not exist."""


class Invalid(MailschedError):
    """A request breaks a rule the schema alone cannot check; ``problems`` are
    ``(field, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in problems))
        self.problems = problems


class Conflict(MailschedError):
    """The request contradicts the current state (a reused idempotency key, a finished campaign)."""


class IllegalMove(MailschedError):
    """A status change the domain's transition table does not allow (a bug in the caller)."""


class LeaseLost(MailschedError):
    """Some rows of a batch were no longer held when its outcomes were written: the
    unit of work is rolled back, to be done again finding out first which rows are."""


class UnsafeUrl(MailschedError):
    """A webhook URL mailsched will not call; the message says why, for the user."""


class ForgedReturnPath(MailschedError):
    """An address that is no return path this deployment made: a bounce not to be believed."""


class Unauthenticated(MailschedError):
    """A provider's webhook call without valid credentials or signature: believe none of it."""


class ReportTooLarge(MailschedError):
    """An inbound bounce or complaint report is larger than mailsched will read."""


class StoreError(MailschedError):
    """The database refused or failed."""


class DuplicateKey(StoreError):
    """An insert met a row with the same unique key."""


class StoreUnavailable(StoreError):
    """The database cannot be reached; the operation may succeed later."""


class DataRefused(StoreError):
    """The database refused a value for good: asking again will not help."""


class QueueError(MailschedError):
    """The queue refused or failed."""


class QueueUnavailable(QueueError):
    """The broker cannot be reached; the operation may succeed later."""


class SendError(MailschedError):
    """The mail server did not accept one email.

    ``code`` and ``reply`` are the SMTP reply's code and text when there was a reply.
    ``ambiguous`` says the server may have accepted the message all the same (the
    connection was lost after the data went out): a retry may deliver it twice.
    """

    def __init__(
        self,
        message: str,
        code: int | None = None,
        *,
        ambiguous: bool = False,
        reply: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.ambiguous = ambiguous
        self.reply = reply
        #: The relay that answered, when the mailer has several (see :mod:`mailsched.mail.relays`).
        self.relay: str | None = None


class SendExpired(SendError):
    """The send was not started: the worker's lease would have ended first."""


class TransientSendError(SendError):
    """Sending failed for now (4xx reply, lost connection, timeout); retry later."""


class SlowDown(TransientSendError):
    """The server asked us to slow down (421, 450, 451, 452, 454)."""


class RelayUnavailable(TransientSendError):
    """The relay took no message at all: it could not be reached, refused the session,
    or throttles the whole account. Nothing was sent, so another relay may be tried
    at once without risking a duplicate."""


class RelayDown(RelayUnavailable):
    """The relay could not be reached, or refused the session (greeting, TLS, AUTH)."""


class RelayBusy(RelayUnavailable, SlowDown):
    """The relay answered 421 or 454: it refuses all work for now (SES's throttling)."""


class NoRelay(RelayUnavailable, SlowDown):
    """No relay may take mail now (each is down, waiting for its probe, or at its cap):
    nothing was sent, so the attempt does not count and the campaign waits."""


class PermanentSendError(SendError):
    """The server refused this email for good (5xx reply); do not retry."""
