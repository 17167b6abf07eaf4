"""Signing as each email provider signs its webhook calls, with keys made for the test."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from mailsched.inbound.providers.ses import string_to_sign

TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-bounces"
SUBSCRIBE_URL = (
    "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription"
    f"&TopicArn={TOPIC}&Token=2336412f37fb687f5d51e6e2425c464de12884"
)


@dataclass
class SendGridSigner:
    """An ECDSA P-256 key as SendGrid's Event Webhook signs with."""

    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    @property
    def public_key(self) -> str:
        """As the console shows it: base64 DER."""
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def headers(self, body: bytes, timestamp: str = "1764590400") -> dict[str, str]:
        signature = self.key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "x-twilio-email-event-webhook-signature": base64.b64encode(signature).decode(),
            "x-twilio-email-event-webhook-timestamp": timestamp,
        }


def mailgun_body(key: str, event: dict[str, Any], timestamp: int, token: str) -> bytes:
    """A Mailgun webhook body, signed with ``key``."""
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    signed = {"timestamp": str(timestamp), "token": token, "signature": signature}
    return json.dumps({"signature": signed, "event-data": event}).encode()


def basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@dataclass
class SnsSigner:
    """An RSA key and its self-signed certificate, as SNS signs with."""

    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )

    @property
    def certificate(self) -> str:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        start = datetime(2026, 1, 1, tzinfo=UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + timedelta(days=3650))
            .sign(self.key, hashes.SHA256())
        )
        return certificate.public_bytes(serialization.Encoding.PEM).decode()

    def sign(self, message: dict[str, Any], version: str = "2") -> dict[str, Any]:
        """``message`` with its SignatureVersion, Signature and SigningCertURL."""
        signed = dict(message, SignatureVersion=version)
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = self.key.sign(string_to_sign(signed), padding.PKCS1v15(), algorithm)
        signed["Signature"] = base64.b64encode(signature).decode()
        signed["SigningCertURL"] = (
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000.pem"
        )
        return signed


def sns_notification(notification: dict[str, Any], topic: str = TOPIC) -> dict[str, Any]:
    """An SNS Notification carrying an SES ``notification``, unsigned."""
    return {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": topic,
        "Message": json.dumps(notification),
        "Timestamp": "2026-11-28T12:00:00.000Z",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    }


def sns_subscription(url: str = SUBSCRIBE_URL, topic: str = TOPIC) -> dict[str, Any]:
    """An SNS SubscriptionConfirmation, unsigned."""
    return {
        "Type": "SubscriptionConfirmation",
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37fb687f5d51e6e2425c464de12884",
        "TopicArn": topic,
        "Message": f"You have chosen to subscribe to the topic {topic}.",
        "SubscribeURL": url,
        "Timestamp": "2026-11-28T12:00:00.000Z",
    }


def ses_bounce(message_id: str, recipient: str, bounce_type: str = "Permanent") -> dict[str, Any]:
    """An SES bounce notification, as SES's documentation shows one (with headers)."""
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": "General",
            "bouncedRecipients": [
                {
                    "emailAddress": recipient,
                    "status": "5.1.1" if bounce_type == "Permanent" else "4.4.7",
                    "action": "failed",
                    "diagnosticCode": f"smtp; 550 5.1.1 <{recipient}>... User",
                }
            ],
            "timestamp": "2016-01-27T14:59:38.237Z",
            "feedbackId": "00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa068a-000000",
            "reportingMTA": "dns; email.example.com",
        },
        "mail": {
            "timestamp": "2016-01-27T14:59:38.237Z",
            "messageId": "00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000",
            "source": "john@example.com",
            "destination": [recipient],
            "headersTruncated": False,
            "headers": [
                {"name": "From", "value": "John Doe <john@example.com>"},
                {"name": "To", "value": recipient},
                {"name": "Message-ID", "value": message_id},
            ],
            "commonHeaders": {
                "from": ["John Doe <john@example.com>"],
                "to": [recipient],
                "messageId": message_id,
                "subject": "Hello",
            },
        },
    }


def ses_complaint(message_id: str, recipient: str) -> dict[str, Any]:
    """An SES complaint notification, as SES's documentation shows one."""
    return {
        "notificationType": "Complaint",
        "complaint": {
            "userAgent": "AnyCompany Feedback Loop (V0.01)",
            "complainedRecipients": [{"emailAddress": recipient}],
            "complaintFeedbackType": "abuse",
            "arrivalDate": "2016-01-27T14:59:38.237Z",
            "timestamp": "2016-01-27T14:59:38.237Z",
            "feedbackId": "000001378603177f-18c07c78-fa81-4a58-9dd1-fedc3cb8f49a-000000",
        },
        "mail": {
            "timestamp": "2016-01-27T14:59:38.237Z",
            "messageId": "000001378603177f-7a5433e7-8edb-42ae-af10-f0181f34d6ee-000000",
            "source": "john@example.com",
            "destination": [recipient],
            "commonHeaders": {"messageId": message_id},
        },
    }
