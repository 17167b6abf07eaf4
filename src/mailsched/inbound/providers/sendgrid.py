"""SendGrid's Event Webhook, signed (ECDSA P-256 with SHA-256).

The signature (base64 DER, header ``X-Twilio-Email-Event-Webhook-Signature``) is over the
timestamp (header ``X-Twilio-Email-Event-Webhook-Timestamp``) followed by the raw body; the
verification key is the base64 DER of the public key the console shows. The body is a JSON
array of events:

- ``bounce`` of ``type`` ``bounce``: HARD; of ``type`` ``blocked`` (the receiving server
  refused the message, not the address): SOFT.
- ``deferred``: SOFT (SendGrid keeps trying).
- ``dropped`` for ``Bounced Address`` or ``Invalid``: HARD; for ``Spam Reporting Address``:
  COMPLAINT; other reasons (unsubscribed, spam content, ...) are no report.
- ``spamreport``: COMPLAINT.
- anything else (processed, delivered, open, click, ...): no report.

The delivery is found through ``smtp-id``, the Message-ID of the message as SendGrid
received it over SMTP. Engagement events (``spamreport``) carry no ``smtp-id``: only a
unique argument ``mailsched_message_id`` (set through an ``X-SMTPAPI`` header) would name it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mailsched.errors import ConfigError, Invalid, Unauthenticated
from mailsched.inbound.providers import address, field, one_line, ours, parse_json, text
from mailsched.inbound.reports import Kind, Report

SIGNATURE = "x-twilio-email-event-webhook-signature"
TIMESTAMP = "x-twilio-email-event-webhook-timestamp"
#: Events read out of one call.
MAX_EVENTS = 10_000

_DROPPED = {
    "bounced address": Kind.HARD,
    "invalid": Kind.HARD,
    "spam reporting address": Kind.COMPLAINT,
}


def load_key(public_key: str) -> ec.EllipticCurvePublicKey:
    """The verification key: base64 DER (as SendGrid shows it) or PEM; :class:`ConfigError`
    for anything else."""
    try:
        if "-----BEGIN" in public_key:
            key = serialization.load_pem_public_key(public_key.encode("ascii"))
        else:
            key = serialization.load_der_public_key(base64.b64decode(public_key, validate=True))
    except (ValueError, binascii.Error, UnicodeError) as exc:
        raise ConfigError(f"MAILSCHED_SENDGRID_PUBLIC_KEY: not a public key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigError("MAILSCHED_SENDGRID_PUBLIC_KEY: not an elliptic-curve key")
    return key


def verify(
    key: ec.EllipticCurvePublicKey, body: bytes, signature: str | None, timestamp: str | None
) -> None:
    """Raise :class:`Unauthenticated` unless ``signature`` signs ``timestamp`` + ``body``."""
    if not signature or not timestamp:
        raise Unauthenticated("sendgrid: no signature or timestamp header")
    try:
        der = base64.b64decode(signature, validate=True)
        key.verify(der, timestamp.encode("utf-8") + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, binascii.Error, UnicodeError) as exc:
        raise Unauthenticated("sendgrid: the signature does not verify") from exc


class SendGrid:
    """SendGrid's Event Webhook, checked with ``public_key``."""

    def __init__(self, public_key: str) -> None:
        self._key = load_key(public_key)

    def authenticate(self, body: bytes, headers: Mapping[str, str]) -> Any:
        verify(self._key, body, headers.get(SIGNATURE), headers.get(TIMESTAMP))
        document = parse_json(body)
        if not isinstance(document, list):
            raise Invalid([("body", "an array of events is expected")])
        return document

    def reports(self, document: Any) -> list[Report]:
        return reports(document)


def reports(events: list[Any]) -> list[Report]:
    """The bounces and complaints among SendGrid's ``events``."""
    found = []
    for event in events[:MAX_EVENTS]:
        report = _report(event)
        if report is not None:
            found.append(report)
    return found


def _report(event: object) -> Report | None:
    name = text(field(event, "event"))
    kind: Kind | None = None
    if name == "bounce":
        kind = Kind.SOFT if text(field(event, "type")) == "blocked" else Kind.HARD
    elif name == "deferred":
        kind = Kind.SOFT
    elif name == "dropped":
        reason = (text(field(event, "reason")) or "").strip().lower()
        kind = _DROPPED.get(reason)
    elif name == "spamreport":
        kind = Kind.COMPLAINT
    if kind is None:
        return None
    status = text(field(event, "status"))
    said = field(event, "reason") or field(event, "response")
    return Report(
        kind,
        address(field(event, "email")),
        status.strip() if status else None,
        "spamreport" if kind is Kind.COMPLAINT and name == "spamreport" else one_line(said),
        ours(field(event, "smtp-id")) or ours(field(event, "mailsched_message_id")),
        f"sendgrid:{name}",
    )
