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

    def expiring(self, not_after: datetime) -> Letter:
        """This letter, to be sent no later than ``not_after``."""
        return replace(self, not_after=not_after)

    def check_time(self) -> None:
        """Raise :class:`~mailsched.errors.SendExpired` when it is too late to start."""
        if self.not_after is not None and datetime.now(UTC) > self.not_after:
            raise SendExpired(
                f"campaign {self.campaign_id} delivery {self.delivery_id}: "
                "not sent, its lease ends before a send could finish"
            )


class Mailer(Protocol):
    """Hands a letter to the next hop."""

    async def send(self, letter: Letter) -> None:
        """Deliver one letter; return once the next hop has accepted it.

        Raises :class:`~mailsched.errors.TransientSendError` (retry later) or
        :class:`~mailsched.errors.PermanentSendError` (give up).
        """
        ...

    async def close(self) -> None:
        """Close connections and files."""
        ...
