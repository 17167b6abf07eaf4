"""Mail delivery: the Mailer boundary, with an SMTP and an ``.eml`` outbox implementation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Letter:
    """One email, ready to go: the envelope and the RFC 5322 bytes."""

    campaign_id: int
    delivery_id: int
    sender: str
    recipient: str
    data: bytes


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
