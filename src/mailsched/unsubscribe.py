"""Unsubscribe tokens: who (user) stops mailing whom (address), signed so nobody else can say so.

A token is ``base64url(payload) "." base64url(HMAC-SHA256(secret, payload))``, where
the payload is the JSON ``[user_id, address]``. It needs no database row, so a link
works for as long as the secret is unchanged. Anyone holding a token can unsubscribe
that one address from that one user's mail: exactly what the recipient may do.
Pure: the secret is an argument.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re

from mailsched.mail.message import Unsubscribe

__all__ = ["InvalidToken", "Unsubscribe", "UnsubscribeSigner"]

# Tokens of one purpose must not verify as another's, should the secret be shared.
_CONTEXT = b"mailsched-unsubscribe-v1:"
_PART = re.compile(r"[A-Za-z0-9_-]+")
_MAX_TOKEN = 4096


class InvalidToken(ValueError):
    """A token that was not made with this secret, or is not a token at all."""


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    if not _PART.fullmatch(text):
        raise InvalidToken("not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidToken("not base64url") from exc
    # Only the canonical spelling: no two tokens for one payload.
    if _encode(data) != text:
        raise InvalidToken("not canonical base64url")
    return data


class UnsubscribeSigner:
    """Makes and checks unsubscribe tokens with one deployment-wide secret."""

    __slots__ = ("_secret",)

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the unsubscribe secret must have at least 16 bytes")
        self._secret = secret

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, _CONTEXT + payload, hashlib.sha256).digest()

    def token(self, user_id: int, address: str) -> str:
        """A URL-safe token standing for "``user_id`` must not mail ``address`` again"."""
        payload = json.dumps([user_id, address], separators=(",", ":"), ensure_ascii=False)
        data = payload.encode("utf-8")
        return f"{_encode(data)}.{_encode(self._mac(data))}"

    def verify(self, token: str) -> tuple[int, str]:
        """The ``(user_id, address)`` a token stands for; :class:`InvalidToken` if it was
        not made by :meth:`token` with this secret."""
        if len(token) > _MAX_TOKEN or token.count(".") != 1:
            raise InvalidToken("malformed token")
        payload_text, mac_text = token.split(".")
        payload, mac = _decode(payload_text), _decode(mac_text)
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise InvalidToken("bad signature")
        # Signed by us, so well-formed; checked all the same, since a bug or an old
        # format must not turn into a crash.
        try:
            user_id, address = json.loads(payload)
        except (ValueError, TypeError) as exc:
            raise InvalidToken("malformed payload") from exc
        if type(user_id) is not int or not isinstance(address, str):
            raise InvalidToken("malformed payload")
        return user_id, address

    def links(
        self, base_url: str, mailto_domain: str | None, user_id: int, address: str
    ) -> Unsubscribe:
        """The ``List-Unsubscribe`` targets for one recipient: ``{base_url}/unsubscribe/{token}``
        (one-click POST, RFC 8058) and, unless ``mailto_domain`` is ``None``,
        ``mailto:unsubscribe@{mailto_domain}?subject=unsubscribe-{token}``."""
        token = self.token(user_id, address)
        mailto = (
            None
            if mailto_domain is None
            else f"mailto:unsubscribe@{mailto_domain}?subject=unsubscribe-{token}"
        )
        return Unsubscribe(url=f"{base_url.rstrip('/')}/unsubscribe/{token}", mailto=mailto)
