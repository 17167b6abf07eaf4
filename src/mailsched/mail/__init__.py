"""Mail delivery: the Mailer boundary, with an SMTP and an ``.eml`` outbox implementation."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

from mailsched.errors import SendExpired


@dataclass(frozen=True, slots=True)
class Letter:
    """One email, ready to go: the envelope and the RFC 5322 bytes."""

    campaign_id: int
    delivery_id: int
    sender: str
    recipient: str
    data: bytes
    #: The transaction must not start after this moment (the worker's lease ends
    #: soon after): past it, the mailer raises SendExpired instead of sending.
    not_after: datetime | None = None
    #: The transaction must be over by then (the lease's end): one still running is
    #: abandoned before it can complete, say in a worker that was paused mid-send.
    finish_by: datetime | None = None

    def expiring(self, not_after: datetime, finish_by: datetime) -> Letter:
        """This letter, to be started no later than ``not_after`` and done by ``finish_by``."""
        return replace(self, not_after=not_after, finish_by=finish_by)

    def seconds_left(self) -> float | None:
        """How long the transaction may still take, or ``None`` for no limit."""
        if self.finish_by is None:
            return None
        return max(0.0, (self.finish_by - datetime.now(UTC)).total_seconds())

    def check_time(self) -> None:
        """Raise :class:`~mailsched.errors.SendExpired` when it is too late to start."""
        if self.not_after is not None and datetime.now(UTC) > self.not_after:
            raise SendExpired(
                f"campaign {self.campaign_id} delivery {self.delivery_id}: "
                "not sent, its lease ends before a send could finish"
            )


@dataclass(frozen=True, slots=True)
class Accepted:
    """The next hop took a letter."""

    #: Its reply's text (an SMTP server's, after the 250); ``None`` for a file.
    reply: str | None = None
    #: Which relay took it, by name; ``None`` for a file.
    relay: str | None = None


class Mailer(Protocol):
    """Hands a letter to the next hop."""

    async def send(self, letter: Letter) -> Accepted:
        """Deliver one letter; return once the next hop has accepted it.

        Raises :class:`~mailsched.errors.TransientSendError` (retry later) or
        :class:`~mailsched.errors.PermanentSendError` (give up); an error says in its
        ``relay`` which relay gave it.
        """
        ...

    async def close(self) -> None:
        """Close connections and files."""
        ...
