"""Postmark's bounce and spam-complaint webhooks, behind HTTP basic auth.

Postmark signs nothing: the user and password set on the webhook's URL are the credential,
compared in constant time. The body is one JSON record:

- ``RecordType`` ``Bounce``: its ``Type`` decides, through :data:`KINDS` (``HardBounce``,
  ``BadEmailAddress``: HARD; ``SoftBounce``, ``Transient``, ``DnsError``, ``Blocked``: SOFT;
  ``SpamComplaint``: COMPLAINT; the others, such as auto-responders, are no report).
- ``RecordType`` ``SpamComplaint``: COMPLAINT.
- anything else (Delivery, Open, Click, SubscriptionChange): no report.

Postmark's ``MessageID`` is its own id, not ours, and the record carries no headers. Our
Message-ID is looked for in ``Content``, the bounce or complaint as received, which Postmark
includes only with the webhook's "include bounce content" option; and Postmark keeps the
Message-ID of a message sent over SMTP only when it carries ``X-PM-KeepID: true``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Mapping
from typing import Any

from mailsched.errors import Invalid, Unauthenticated
from mailsched.inbound.providers import address, field, one_line, ours, parse_json, text
from mailsched.inbound.reports import Kind, Report

KINDS = {
    "HardBounce": Kind.HARD,
    "BadEmailAddress": Kind.HARD,
    "SoftBounce": Kind.SOFT,
    "Transient": Kind.SOFT,
    "DnsError": Kind.SOFT,
    "Blocked": Kind.SOFT,
    "SpamComplaint": Kind.COMPLAINT,
}
#: Characters of ``Content`` searched for a Message-ID: a bounce quotes the original's
#: headers near its start.
MAX_CONTENT = 256 * 1024

_MESSAGE_ID_HEADER = re.compile(r"(?im)^message-id:[ \t]*(<[^<>\s]{1,900}>)")


def verify(user: str, password: str, authorization: str | None) -> None:
    """Raise :class:`Unauthenticated` unless ``authorization`` is Basic ``user:password``."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        raise Unauthenticated("postmark: no basic auth")
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Unauthenticated("postmark: malformed basic auth") from exc
    expected = f"{user}:{password}".encode()
    # compare_digest on the whole pair: no early exit on the user.
    if not hmac.compare_digest(given, expected):
        raise Unauthenticated("postmark: wrong user or password")


class Postmark:
    """Postmark's webhooks, behind ``user`` and ``password``."""

    def __init__(self, user: str, password: str) -> None:
        self._user = user
        self._password = password

    def authenticate(self, body: bytes, headers: Mapping[str, str]) -> Any:
        verify(self._user, self._password, headers.get("authorization"))
        document = parse_json(body)
        if not isinstance(document, dict):
            raise Invalid([("body", "a JSON object is expected")])
        return document

    def reports(self, document: Any) -> list[Report]:
        report = record_report(document)
        return [] if report is None else [report]


def record_report(record: object) -> Report | None:
    """The bounce or complaint one Postmark record reports, if it is one."""
    record_type = text(field(record, "RecordType"))
    if record_type == "SpamComplaint":
        kind: Kind | None = Kind.COMPLAINT
    elif record_type == "Bounce":
        kind = KINDS.get(text(field(record, "Type")) or "")
    else:
        kind = None
    if kind is None:
        return None
    said = field(record, "Details") or field(record, "Description")
    return Report(
        kind,
        address(field(record, "Email")),
        None,
        "SpamComplaint" if kind is Kind.COMPLAINT else one_line(field(record, "Type"), said),
        _message_id(field(record, "Content")),
        f"postmark:{record_type}",
    )


def _message_id(content: object) -> str | None:
    """The first Message-ID of ours in a bounce's content (its own comes first, then the
    original's)."""
    found = text(content)
    if found is None:
        return None
    for match in _MESSAGE_ID_HEADER.finditer(found[:MAX_CONTENT]):
        candidate = ours(match[1])
        if candidate is not None:
            return candidate
    return None
