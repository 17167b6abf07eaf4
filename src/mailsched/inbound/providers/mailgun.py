"""Mailgun's webhooks, signed with HMAC-SHA256 inside the body.

The body is ``{"signature": {"timestamp", "token", "signature"}, "event-data": {...}}``; the
signature is the hex HMAC-SHA256 of ``timestamp + token`` under the HTTP webhook signing
key. A timestamp more than :data:`MAX_SKEW` from our clock, or a token seen already (in this
process, within that window), is refused.

- ``failed`` of ``severity`` ``permanent``: HARD; ``temporary``: SOFT.
- ``complained``: COMPLAINT.
- anything else (accepted, delivered, opened, clicked, unsubscribed, ...): no report.

The delivery is found through ``message.headers.message-id``: the Message-ID the message
carried, without angle brackets.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from mailsched.errors import Invalid, Unauthenticated
from mailsched.inbound.providers import address, field, one_line, ours, parse_json, text
from mailsched.inbound.reports import Kind, Report

#: How far a call's timestamp may be from our clock.
MAX_SKEW = timedelta(minutes=5)
#: Tokens remembered against replays (a call each is far more than Mailgun sends in
#: ``MAX_SKEW``); the oldest is forgotten first.
MAX_TOKENS = 100_000

_SEVERITY = {"permanent": Kind.HARD, "temporary": Kind.SOFT}


def verify(signing_key: str, timestamp: str, token: str, signature: str) -> None:
    """Raise :class:`Unauthenticated` unless ``signature`` is the HMAC of ``timestamp+token``."""
    expected = hmac.new(
        signing_key.encode("utf-8"), (timestamp + token).encode("utf-8"), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected.encode("ascii"), signature.lower().encode("utf-8")):
        raise Unauthenticated("mailgun: the signature does not verify")


class Mailgun:
    """Mailgun's webhooks, checked with ``signing_key`` against ``clock``."""

    def __init__(self, signing_key: str, clock: Callable[[], datetime]) -> None:
        self._key = signing_key
        self._clock = clock
        self._seen: OrderedDict[str, datetime] = OrderedDict()

    def authenticate(self, body: bytes, headers: Mapping[str, str]) -> Any:
        # The credentials are in the body: one that cannot be read carries none.
        try:
            document = parse_json(body)
        except Invalid as exc:
            raise Unauthenticated("mailgun: not JSON, so not signed") from exc
        signed = field(document, "signature")
        timestamp, token, signature = (
            text(field(signed, name)) for name in ("timestamp", "token", "signature")
        )
        if timestamp is None or token is None or signature is None:
            raise Unauthenticated("mailgun: no signature {timestamp, token, signature}")
        verify(self._key, timestamp, token, signature)
        now = self._clock()
        try:
            at = datetime.fromtimestamp(float(timestamp), now.tzinfo)
        except (ValueError, OverflowError, OSError) as exc:
            raise Unauthenticated("mailgun: the timestamp is no time") from exc
        if abs(now - at) > MAX_SKEW:
            raise Unauthenticated(f"mailgun: the timestamp is over {MAX_SKEW} from our clock")
        self._remember(token, now)
        if not isinstance(field(document, "event-data"), dict):
            raise Invalid([("event-data", "an object is expected")])
        return document

    def _remember(self, token: str, now: datetime) -> None:
        while self._seen and (
            len(self._seen) >= MAX_TOKENS or next(iter(self._seen.values())) < now - MAX_SKEW
        ):
            self._seen.popitem(last=False)
        if token in self._seen:
            raise Unauthenticated("mailgun: this token was used already (a replay)")
        self._seen[token] = now

    def reports(self, document: Any) -> list[Report]:
        report = event_report(field(document, "event-data"))
        return [] if report is None else [report]


def event_report(event: object) -> Report | None:
    """The bounce or complaint one Mailgun ``event-data`` reports, if it is one."""
    name = text(field(event, "event"))
    if name == "failed":
        kind = _SEVERITY.get(text(field(event, "severity")) or "")
    elif name == "complained":
        kind = Kind.COMPLAINT
    else:
        kind = None
    if kind is None:
        return None
    status = text(field(event, "delivery-status", "enhanced-code"))
    code = field(event, "delivery-status", "code")
    message = field(event, "delivery-status", "message") or field(
        event, "delivery-status", "description"
    )
    diagnostic = (
        "complained"
        if kind is Kind.COMPLAINT
        else one_line(code if isinstance(code, int) and code else None, message)
        or one_line(field(event, "reason"))
    )
    return Report(
        kind,
        address(field(event, "recipient")),
        status.strip() if status else None,
        diagnostic,
        ours(field(event, "message", "headers", "message-id")),
        f"mailgun:{name}",
    )
