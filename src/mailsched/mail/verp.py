"""The VERP return path: an envelope sender that says which delivery a bounce is about.

With the bounce address ``bounces@bounce.example.com``, delivery 42's envelope sender
(``MAIL FROM``) is ``bounces+16-<mac>@bounce.example.com``: the delivery id in base 36,
then the first 80 bits of ``HMAC-SHA256(secret, context || id)`` in base 32, both in
lower case. A bounce comes back to that address, and :meth:`ReturnPath.delivery_of`
gives the delivery only when the MAC verifies: nobody without the secret can make an
address that stands for a delivery, whatever Message-ID or recipient a forged
bounce names.

Mail servers may change the case of an address, so both alphabets ignore case and
the address is compared in lower case. The longest token (delivery 2**63 - 1) has 30
characters, so a local part of up to 33 leaves the whole within SMTP's 64.
Pure: the secret is an argument.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from mailsched.errors import ForgedReturnPath
from mailsched.mail.message import ascii_domain

__all__ = ["ForgedReturnPath", "ReturnPath"]

# MACs of one purpose must not verify as another's, should the secret be shared.
_CONTEXT = b"mailsched-verp-v1:"
_MAC_BYTES = 10  # 80 bits: exactly 16 base-32 characters, no padding
_MAX_ID = 2**63 - 1
#: A delivery id without leading zeros, a dash, the MAC: one spelling per delivery.
_TOKEN = re.compile(r"([1-9a-z][0-9a-z]{0,12})-([a-z2-7]{16})")
_MAX_TOKEN = 13 + 1 + 16
_MAX_LOCAL = 64
#: RFC 5321's limit on a path, the angle brackets included.
_MAX_PATH = 256


def _base36(number: int) -> str:
    digits = []
    while number:
        number, digit = divmod(number, 36)
        digits.append("0123456789abcdefghijklmnopqrstuvwxyz"[digit])
    return "".join(reversed(digits))


class ReturnPath:
    """Makes and checks the envelope senders of one bounce address."""

    __slots__ = ("_domains", "_keyed", "_local", "_prefix", "_suffix")

    def __init__(self, bounce_address: str, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the return path's secret must have at least 16 bytes")
        local, at, domain = bounce_address.rpartition("@")
        if not at or not local or not domain or "+" in local:
            raise ValueError("the bounce address must be a plain address without '+'")
        if len(local) + 1 + _MAX_TOKEN > _MAX_LOCAL:
            raise ValueError(
                f"the bounce address's local part may have at most "
                f"{_MAX_LOCAL - 1 - _MAX_TOKEN} characters, to leave room for the token"
            )
        self._local = local.lower()
        # Sent over SMTP, an internationalised domain goes out as its A-labels.
        self._domains = frozenset({domain.lower(), ascii_domain(domain).lower()})
        self._prefix = f"{local}+"
        self._suffix = f"@{domain}"
        # Keyed once: each address then costs one copy and two short hash blocks.
        self._keyed = hmac.new(secret, _CONTEXT, hashlib.sha256)

    def _mac(self, delivery_id: int) -> str:
        mac = self._keyed.copy()
        mac.update(delivery_id.to_bytes(8, "big"))
        return base64.b32encode(mac.digest()[:_MAC_BYTES]).decode("ascii").lower()

    def address(self, delivery_id: int) -> str:
        """The envelope sender for ``delivery_id``: ``local+<token>@domain``, with the
        bounce address's local part and domain as configured."""
        if not 0 < delivery_id <= _MAX_ID:
            raise ValueError(f"a delivery id is from 1 to {_MAX_ID}")
        return f"{self._prefix}{_base36(delivery_id)}-{self._mac(delivery_id)}{self._suffix}"

    def delivery_of(self, address: str) -> int:
        """The delivery id that :meth:`address` made ``address`` for, in any case, bare
        or in SMTP's ``<…>``.

        Raises :class:`~mailsched.errors.ForgedReturnPath` for anything else: another
        domain or local part, no token, a malformed one, or a MAC that does not verify.
        """
        if len(address) > _MAX_PATH:
            raise ForgedReturnPath("longer than any return path")
        if address.startswith("<") and address.endswith(">"):
            address = address[1:-1]
        local, at, domain = address.lower().rpartition("@")
        base, plus, token = local.partition("+")
        if not at or domain not in self._domains or base != self._local or not plus:
            raise ForgedReturnPath("not a return path of this bounce address")
        matched = _TOKEN.fullmatch(token)
        if matched is None:
            raise ForgedReturnPath("malformed token")
        delivery_id = int(matched[1], 36)
        if delivery_id > _MAX_ID:
            raise ForgedReturnPath("malformed token")
        if not hmac.compare_digest(matched[2], self._mac(delivery_id)):
            raise ForgedReturnPath("bad signature")
        return delivery_id
