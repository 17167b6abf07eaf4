"""Amazon SES bounce and complaint notifications, delivered by Amazon SNS.

SNS signs each message with RSA: ``SignatureVersion`` 1 over SHA-1, 2 over SHA-256, the
base64 ``Signature`` over the string :func:`string_to_sign` builds. The certificate is the
configured one (``MAILSCHED_SES_CERTIFICATE_FILE``, which may hold several for a rotation),
never the one ``SigningCertURL`` points at: fetching it would let whoever controls the body
choose the key. With ``MAILSCHED_SES_TOPIC_ARNS`` set, other topics are refused.

- ``SubscriptionConfirmation``: :func:`subscribe_url` says where to confirm it (an
  ``https://sns.<region>.amazonaws.com/`` URL only).
- ``Notification`` whose ``Message`` is an SES notification (``notificationType``, or
  ``eventType`` for event publishing): ``Bounce`` of ``bounceType`` ``Permanent`` is HARD for
  each bounced recipient, ``Transient`` and ``Undetermined`` SOFT; ``Complaint`` is a
  COMPLAINT for each complained recipient (unless its ``complaintSubType`` is
  ``OnAccountSuppressionList``: SES did not send it). Anything else is no report.

SES replaces the Message-ID header when it sends; the delivery is found through the original
one, ``mail.commonHeaders.messageId`` (or ``mail.headers``), which the notification carries
only with "include original headers" set on the identity.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mailsched.errors import ConfigError, Invalid, Unauthenticated
from mailsched.inbound.providers import address, field, one_line, ours, parse_json, text
from mailsched.inbound.reports import Kind, Report

NOTIFICATION = "Notification"
SUBSCRIPTION = "SubscriptionConfirmation"
UNSUBSCRIPTION = "UnsubscribeConfirmation"
#: Recipients read out of one notification (SES names at most 50 per message).
MAX_RECIPIENTS = 1000

_SIGNED_FIELDS = {
    NOTIFICATION: ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    SUBSCRIPTION: (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
    UNSUBSCRIPTION: (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
_SNS_HOST = re.compile(r"sns\.[a-z0-9-]{1,40}\.amazonaws\.com(?:\.cn)?")
_BOUNCE_TYPES = {"Permanent": Kind.HARD, "Transient": Kind.SOFT, "Undetermined": Kind.SOFT}


def load_certificates(pem: str) -> list[rsa.RSAPublicKey]:
    """The RSA keys of the certificates in ``pem``; :class:`ConfigError` if there is none."""
    try:
        certificates = x509.load_pem_x509_certificates(pem.encode("ascii"))
    except (ValueError, UnicodeError) as exc:
        raise ConfigError(f"MAILSCHED_SES_CERTIFICATE_FILE: no certificate: {exc}") from exc
    keys = [c.public_key() for c in certificates]
    rsa_keys = [k for k in keys if isinstance(k, rsa.RSAPublicKey)]
    if not rsa_keys:
        raise ConfigError("MAILSCHED_SES_CERTIFICATE_FILE: no RSA certificate")
    return rsa_keys


def string_to_sign(message: Mapping[str, object]) -> bytes:
    """What SNS signs: each signed field's name and value on lines of their own, in byte
    order of the names; ``Subject`` only when the message has one."""
    kind = message.get("Type")
    names = _SIGNED_FIELDS.get(kind) if isinstance(kind, str) else None
    if names is None:
        raise Unauthenticated(f"ses: unknown SNS message type {kind!r}")
    lines = []
    for name in names:
        value = message.get(name)
        if value is None and name == "Subject":
            continue
        if not isinstance(value, str):
            raise Unauthenticated(f"ses: the signed field {name} is missing")
        lines.append(f"{name}\n{value}\n")
    return "".join(lines).encode("utf-8")


def verify(
    keys: Sequence[rsa.RSAPublicKey], topics: Sequence[str], message: Mapping[str, object]
) -> None:
    """Raise :class:`Unauthenticated` unless one of ``keys`` signed ``message`` and its topic
    is one of ``topics`` (any, when empty)."""
    algorithm = _HASHES.get(str(message.get("SignatureVersion")))
    if algorithm is None:
        raise Unauthenticated("ses: unknown SignatureVersion")
    signature = message.get("Signature")
    if not isinstance(signature, str):
        raise Unauthenticated("ses: no signature")
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Unauthenticated("ses: the signature is not base64") from exc
    signed = string_to_sign(message)
    for key in keys:
        try:
            key.verify(raw, signed, padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            continue
        break
    else:
        raise Unauthenticated("ses: the signature does not verify against the certificate")
    if topics and message.get("TopicArn") not in topics:
        raise Unauthenticated("ses: a topic not in MAILSCHED_SES_TOPIC_ARNS")


def subscribe_url(message: Mapping[str, object]) -> str | None:
    """Where to confirm a verified subscription: ``None`` for any other message;
    :class:`Invalid` for a URL that is not SNS's own (mailsched calls no other)."""
    if message.get("Type") != SUBSCRIPTION:
        return None
    url = message.get("SubscribeURL")
    if not isinstance(url, str):
        raise Invalid([("SubscribeURL", "missing")])
    parts = urlsplit(url)
    if (
        parts.scheme != "https"
        or parts.port is not None
        or parts.username is not None
        or parts.password is not None
        or not _SNS_HOST.fullmatch(parts.hostname or "")
        or parts.netloc != parts.hostname
    ):
        raise Invalid([("SubscribeURL", "not an https://sns.<region>.amazonaws.com/ URL")])
    return url


class Ses:
    """SES through SNS, checked against the certificates of ``pem`` and ``topics``."""

    def __init__(self, pem: str, topics: Sequence[str]) -> None:
        self._keys = load_certificates(pem)
        self._topics = tuple(topics)

    def authenticate(self, body: bytes, headers: Mapping[str, str]) -> Any:
        # The credentials are in the body: one that cannot be read carries none.
        try:
            document = parse_json(body)
        except Invalid as exc:
            raise Unauthenticated("ses: not JSON, so not signed") from exc
        if not isinstance(document, dict):
            raise Unauthenticated("ses: not an SNS message")
        verify(self._keys, self._topics, document)
        return document

    def reports(self, document: Any) -> list[Report]:
        if document.get("Type") != NOTIFICATION:
            return []
        try:
            notification = json.loads(document["Message"])
        except (json.JSONDecodeError, RecursionError) as exc:
            raise Invalid([("Message", f"not an SES notification: {exc}")]) from exc
        return notification_reports(notification)


def notification_reports(notification: object) -> list[Report]:
    """The bounces and complaints of one SES notification (the SNS message's ``Message``)."""
    kind = text(field(notification, "notificationType")) or text(field(notification, "eventType"))
    message_id = _message_id(field(notification, "mail"))
    if kind == "Bounce":
        bounce_kind = _BOUNCE_TYPES.get(text(field(notification, "bounce", "bounceType")) or "")
        recipients = field(notification, "bounce", "bouncedRecipients")
        if bounce_kind is None or not isinstance(recipients, list):
            return []
        return [
            Report(
                bounce_kind,
                address(field(r, "emailAddress")),
                text(field(r, "status")),
                one_line(field(r, "diagnosticCode"))
                or one_line(field(notification, "bounce", "bounceSubType")),
                message_id,
                "ses:bounce",
            )
            for r in recipients[:MAX_RECIPIENTS]
        ]
    if kind == "Complaint":
        complaint = field(notification, "complaint")
        recipients = field(complaint, "complainedRecipients")
        if field(complaint, "complaintSubType") is not None or not isinstance(recipients, list):
            return []  # OnAccountSuppressionList: SES refused the send itself
        feedback_type = one_line(field(complaint, "complaintFeedbackType")) or "complaint"
        return [
            Report(
                Kind.COMPLAINT,
                address(field(r, "emailAddress")),
                None,
                feedback_type,
                message_id,
                "ses:complaint",
            )
            for r in recipients[:MAX_RECIPIENTS]
        ]
    return []


def _message_id(mail: object) -> str | None:
    """The original Message-ID: ``commonHeaders.messageId``, else the header in ``headers``
    (``mail.messageId`` is SES's own)."""
    found = ours(field(mail, "commonHeaders", "messageId"))
    if found is not None:
        return found
    headers = field(mail, "headers")
    if isinstance(headers, list):
        for header in headers[:200]:
            name = text(field(header, "name"))
            if name is not None and name.lower() == "message-id":
                return ours(field(header, "value"))
    return None
