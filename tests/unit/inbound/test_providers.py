"""The providers' webhooks, pure: each signature checked with keys made here (valid passes,
every tampering is refused), and each provider's events mapped to our reports."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from mailsched.errors import ConfigError, Invalid, Unauthenticated
from mailsched.inbound.providers import matched
from mailsched.inbound.providers.mailgun import Mailgun, event_report
from mailsched.inbound.providers.postmark import Postmark, record_report
from mailsched.inbound.providers.sendgrid import SendGrid
from mailsched.inbound.providers.sendgrid import reports as sendgrid_reports
from mailsched.inbound.providers.ses import Ses, notification_reports, subscribe_url
from mailsched.inbound.reports import Kind, Report
from mailsched.mail.message import delivery_of_message_id, message_id
from tests.support.providers import (
    SUBSCRIBE_URL,
    TOPIC,
    SendGridSigner,
    SnsSigner,
    basic,
    mailgun_body,
    ses_bounce,
    ses_complaint,
    sns_notification,
    sns_subscription,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
OURS = "<c12.d345@mail.example.com>"
K = Kind


# -- the Message-ID's inverse ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "domain", "expected"),
    [
        ("<c12.d345@mail.example.com>", None, (12, 345)),
        ("c12.d345@mail.example.com", None, (12, 345)),
        (" <c12.d345@Mail.Example.COM> ", "mail.example.com", (12, 345)),
        ("<c12.d345@mail.example.com>", "other.example.com", None),
        ("<c12.d345@mail.example.com", None, None),
        ("c12.d345@mail.example.com>", None, None),
        ("<c012.d345@mail.example.com>", None, None),
        ("<c12.d345.x@mail.example.com>", None, None),
        ("<c12.d@mail.example.com>", None, None),
        ("<c\uff112.d345@mail.example.com>", None, None),  # a fullwidth digit
        ("<14c5d75ce93.dfd.64b469@ismtpd-555>", None, None),
        ("<c1.d2@>", None, None),
        ("", None, None),
    ],
)
def test_a_message_id_names_its_delivery(
    text: str, domain: str | None, expected: tuple[int, int] | None
) -> None:
    assert delivery_of_message_id(text, domain) == expected


@pytest.mark.parametrize("ids", [(1, 1), (7, 123456789), (9_000_000_000_000, 9_223_372_036)])
def test_message_id_round_trips(ids: tuple[int, int]) -> None:
    made = message_id(*ids, "news@bücher.example")
    assert delivery_of_message_id(made, "xn--bcher-kva.example") == ids
    assert delivery_of_message_id(made.strip("<>")) == ids


def test_a_report_matches_on_our_domain_only() -> None:
    report = Report(K.HARD, "a@example.com", None, None, OURS, "x")
    assert matched(report, "mail.example.com") == (12, 345)
    assert matched(report, "example.com") is None
    assert matched(Report(K.HARD, None, None, None, None, "x"), "mail.example.com") is None


# -- SendGrid -------------------------------------------------------------------------

SENDGRID_EVENTS: list[dict[str, Any]] = [
    {
        "email": "example@test.com",
        "timestamp": 1513299569,
        "smtp-id": OURS,
        "event": "processed",
        "sg_event_id": "sg_event_id",
        "sg_message_id": "sg_message_id",
    },
    {
        "email": "example@test.com",
        "timestamp": 1513299569,
        "smtp-id": OURS,
        "event": "deferred",
        "sg_event_id": "sg_event_id",
        "sg_message_id": "sg_message_id",
        "response": "400 try again later",
        "attempt": "5",
    },
    {
        "email": "example@test.com",
        "timestamp": 1513299569,
        "smtp-id": OURS,
        "event": "delivered",
        "response": "250 OK",
    },
    {
        "email": "Example@Test.COM",
        "timestamp": 1513299569,
        "smtp-id": OURS,
        "event": "bounce",
        "sg_event_id": "sg_event_id",
        "sg_message_id": "sg_message_id",
        "reason": "500 unknown recipient",
        "status": "5.0.0",
        "type": "bounce",
    },
    {
        "email": "example@test.com",
        "timestamp": 1513299569,
        "smtp-id": OURS,
        "event": "bounce",
        "reason": "550 5.7.1 blocked by policy",
        "status": "5.7.1",
        "type": "blocked",
    },
    {
        "email": "example@test.com",
        "timestamp": 1513299569,
        "smtp-id": OURS,
        "event": "dropped",
        "reason": "Bounced Address",
        "status": "5.0.0",
    },
    {"email": "example@test.com", "smtp-id": OURS, "event": "dropped", "reason": "Unsubscribed"},
    {
        "email": "example@test.com",
        "timestamp": 1513299569,
        "event": "spamreport",
        "sg_event_id": "sg_event_id",
        "sg_message_id": "sg_message_id",
    },
    {"email": "example@test.com", "event": "open", "smtp-id": OURS},
    "not an event",
    {"event": ["bounce"]},
]


def test_sendgrid_events_map_to_reports() -> None:
    found = sendgrid_reports(SENDGRID_EVENTS)
    assert [(r.kind, r.status, r.diagnostic, r.message_id, r.format) for r in found] == [
        (K.SOFT, None, "400 try again later", OURS, "sendgrid:deferred"),
        (K.HARD, "5.0.0", "500 unknown recipient", OURS, "sendgrid:bounce"),
        (K.SOFT, "5.7.1", "550 5.7.1 blocked by policy", OURS, "sendgrid:bounce"),
        (K.HARD, "5.0.0", "Bounced Address", OURS, "sendgrid:dropped"),
        # No smtp-id on engagement events: nothing to match it with.
        (K.COMPLAINT, None, "spamreport", None, "sendgrid:spamreport"),
    ]
    assert found[1].recipient == "Example@test.com"


def test_sendgrid_checks_the_signature_over_timestamp_and_body() -> None:
    signer = SendGridSigner()
    provider = SendGrid(signer.public_key)
    body = json.dumps(SENDGRID_EVENTS).encode()
    headers = signer.headers(body)
    assert provider.authenticate(body, headers) == SENDGRID_EVENTS
    tampered: list[tuple[bytes, dict[str, str]]] = [
        (body.replace(b"5.0.0", b"5.0.1", 1), headers),
        (body + b" ", headers),
        (body, headers | {"x-twilio-email-event-webhook-timestamp": "1764590401"}),
        (body, headers | {"x-twilio-email-event-webhook-signature": "AAAA"}),
        (body, headers | {"x-twilio-email-event-webhook-signature": "not base64!"}),
        (body, {"x-twilio-email-event-webhook-timestamp": "1764590400"}),
        (body, {}),
        (body, SendGridSigner().headers(body)),  # another key
    ]
    for changed_body, changed_headers in tampered:
        with pytest.raises(Unauthenticated):
            provider.authenticate(changed_body, changed_headers)


def test_sendgrid_refuses_a_malformed_key_and_an_unreadable_signed_body() -> None:
    with pytest.raises(ConfigError):
        SendGrid("bm90IGEga2V5")
    signer = SendGridSigner()
    for body in (b"{not json", b'{"event": "bounce"}'):
        with pytest.raises(Invalid):
            SendGrid(signer.public_key).authenticate(body, signer.headers(body))


# -- Mailgun --------------------------------------------------------------------------

MAILGUN_KEY = "key-7e55d003b4fbd4ba6d7d9a3b9b1a0f1c"


def _mailgun_event(event: str, severity: str | None = None, **more: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "event": event,
        "id": "G9Bn5sl1TC6nu79C8C0bwg",
        "timestamp": 1521233123.501324,
        "recipient": "alice@Example.com",
        "message": {
            "headers": {
                "to": "Alice <alice@example.com>",
                "message-id": OURS.strip("<>"),
                "from": "Bob <bob@mail.example.com>",
                "subject": "Test permanent_fail webhook",
            },
            "size": 111,
        },
    }
    if severity is not None:
        data["severity"] = severity
        data["reason"] = "bounce" if severity == "permanent" else "generic"
        data["delivery-status"] = {
            "code": 550 if severity == "permanent" else 452,
            "message": "No such user here" if severity == "permanent" else "Mailbox full",
            "description": "",
            "attempt-no": 1,
        }
        if severity == "permanent":
            data["delivery-status"]["enhanced-code"] = "5.1.1"
    data.update(more)
    return data


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            _mailgun_event("failed", "permanent"),
            (K.HARD, "5.1.1", "550 No such user here", "mailgun:failed"),
        ),
        (
            _mailgun_event("failed", "temporary"),
            (K.SOFT, None, "452 Mailbox full", "mailgun:failed"),
        ),
        (_mailgun_event("complained"), (K.COMPLAINT, None, "complained", "mailgun:complained")),
        (_mailgun_event("delivered"), None),
        (_mailgun_event("opened"), None),
        (_mailgun_event("failed", "unknown"), None),
    ],
)
def test_mailgun_events_map_to_reports(
    event: dict[str, Any], expected: tuple[Kind, str | None, str, str] | None
) -> None:
    report = event_report(event)
    if expected is None:
        assert report is None
        return
    assert report is not None
    assert (report.kind, report.status, report.diagnostic, report.format) == expected
    assert (report.recipient, report.message_id) == ("alice@example.com", OURS)


def test_mailgun_checks_the_signature_the_time_and_replays() -> None:
    provider = Mailgun(MAILGUN_KEY, lambda: NOW)
    at = int(NOW.timestamp())
    event = _mailgun_event("failed", "permanent")
    body = mailgun_body(MAILGUN_KEY, event, at, "a" * 50)
    assert provider.authenticate(body, {})["event-data"] == event
    with pytest.raises(Unauthenticated, match="replay"):
        provider.authenticate(body, {})
    refused = [
        mailgun_body("another key", event, at, "b" * 50),
        mailgun_body(MAILGUN_KEY, event, at - 301, "c" * 50),  # too old
        mailgun_body(MAILGUN_KEY, event, at + 301, "d" * 50),  # from the future
        body.replace(b'"token": "' + b"a" * 50, b'"token": "' + b"e" * 50),
        body.replace(str(at).encode(), str(at - 1).encode(), 1),
        json.dumps({"event-data": event}).encode(),
    ]
    for changed in refused:
        with pytest.raises(Unauthenticated):
            provider.authenticate(changed, {})
    # Within the window a signed call of another token passes.
    assert provider.authenticate(mailgun_body(MAILGUN_KEY, event, at - 299, "f" * 50), {})


def test_mailgun_and_ses_find_no_signature_in_a_body_that_is_not_json() -> None:
    with pytest.raises(Unauthenticated):
        Mailgun(MAILGUN_KEY, lambda: NOW).authenticate(b"timestamp=1&token=2", {})
    with pytest.raises(Unauthenticated):
        Ses(SnsSigner().certificate, ()).authenticate(b"{", {})


# -- Postmark -------------------------------------------------------------------------

POSTMARK_BOUNCE: dict[str, Any] = {
    "RecordType": "Bounce",
    "MessageStream": "outbound",
    "ID": 4323372036854775807,
    "Type": "HardBounce",
    "TypeCode": 1,
    "Name": "Hard bounce",
    "Tag": "Test",
    "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
    "Metadata": {"a_key": "a_value"},
    "ServerID": 23,
    "Description": "The server was unable to deliver your message (ex: unknown user).",
    "Details": "Test bounce details",
    "Email": "john@Example.com",
    "From": "sender@example.com",
    "BouncedAt": "2019-11-05T16:33:54.9070259Z",
    "DumpAvailable": True,
    "Inactive": True,
    "CanActivate": True,
    "Subject": "Test subject",
    "Content": (
        "Return-Path: <>\r\nMessage-ID: <dsn.1@mx.example.com>\r\n"
        "Content-Type: multipart/report\r\n\r\n--b\r\n...\r\n"
        "Message-ID: <c12.d345@mail.example.com>\r\nSubject: Test subject\r\n"
    ),
}


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (POSTMARK_BOUNCE, (K.HARD, "HardBounce Test bounce details", OURS)),
        (
            POSTMARK_BOUNCE | {"Type": "SoftBounce", "Content": None},
            (K.SOFT, "SoftBounce Test bounce details", None),
        ),
        (POSTMARK_BOUNCE | {"Type": "Transient"}, (K.SOFT, "Transient Test bounce details", OURS)),
        (
            POSTMARK_BOUNCE | {"Type": "BadEmailAddress"},
            (K.HARD, "BadEmailAddress Test bounce details", OURS),
        ),
        (POSTMARK_BOUNCE | {"Type": "AutoResponder"}, None),
        (POSTMARK_BOUNCE | {"Type": "Unknown"}, None),
        (
            POSTMARK_BOUNCE | {"RecordType": "SpamComplaint", "Type": "SpamComplaint"},
            (K.COMPLAINT, "SpamComplaint", OURS),
        ),
        ({"RecordType": "Delivery", "Email": "john@example.com"}, None),
        ({"RecordType": "Open"}, None),
    ],
)
def test_postmark_records_map_to_reports(
    record: dict[str, Any], expected: tuple[Kind, str, str | None] | None
) -> None:
    report = record_report(record)
    if expected is None:
        assert report is None
        return
    assert report is not None
    assert (report.kind, report.diagnostic, report.message_id) == expected
    assert report.recipient == "john@example.com"


def test_postmark_finds_no_message_id_of_ours_in_content_without_one() -> None:
    content = "Message-ID: <883953f4@pm.mtasv.net>\r\n\r\nbody"
    report = record_report(POSTMARK_BOUNCE | {"Content": content})
    assert report is not None and report.message_id is None


def test_postmark_checks_basic_auth() -> None:
    provider = Postmark("hooks", "s3cret:with colon")
    body = json.dumps(POSTMARK_BOUNCE).encode()
    assert provider.authenticate(body, basic("hooks", "s3cret:with colon")) == POSTMARK_BOUNCE
    for headers in (
        basic("hooks", "s3cret:with colom"),
        basic("Hooks", "s3cret:with colon"),
        basic("hooks", ""),
        {"authorization": "Bearer s3cret"},
        {"authorization": "Basic not*base64"},
        {},
    ):
        with pytest.raises(Unauthenticated):
            provider.authenticate(body, headers)
    for bad in (b"[1]", b"{"):
        with pytest.raises(Invalid):
            provider.authenticate(bad, basic("hooks", "s3cret:with colon"))


# -- Amazon SES through SNS -----------------------------------------------------------


@pytest.mark.parametrize(
    ("notification", "expected"),
    [
        (
            ses_bounce(OURS, "Jane@Example.com"),
            [(K.HARD, "Jane@example.com", "5.1.1", "ses:bounce")],
        ),
        (
            ses_bounce(OURS.strip("<>"), "jane@example.com", "Transient"),
            [(K.SOFT, "jane@example.com", "4.4.7", "ses:bounce")],
        ),
        (
            ses_bounce(OURS, "jane@example.com", "Undetermined"),
            [(K.SOFT, "jane@example.com", "4.4.7", "ses:bounce")],
        ),
        (
            ses_complaint(OURS, "richard@example.com"),
            [(K.COMPLAINT, "richard@example.com", None, "ses:complaint")],
        ),
        (
            ses_complaint(OURS, "richard@example.com")
            | {
                "complaint": {
                    "complaintSubType": "OnAccountSuppressionList",
                    "complainedRecipients": [{"emailAddress": "richard@example.com"}],
                }
            },
            [],
        ),
        ({"notificationType": "Delivery", "mail": {}}, []),
        ({"eventType": "Bounce", "bounce": {"bounceType": "Permanent"}}, []),
    ],
)
def test_ses_notifications_map_to_reports(
    notification: dict[str, Any], expected: list[tuple[Kind, str, str | None, str]]
) -> None:
    found = notification_reports(notification)
    assert [(r.kind, r.recipient, r.status, r.format) for r in found] == expected
    assert all(r.message_id == OURS for r in found)


def test_ses_takes_the_original_message_id_from_the_headers_list() -> None:
    notification = ses_bounce(OURS, "jane@example.com")
    del notification["mail"]["commonHeaders"]
    (report,) = notification_reports(notification)
    assert report.message_id == OURS
    del notification["mail"]["headers"]
    (report,) = notification_reports(notification)
    assert report.message_id is None  # mail.messageId is SES's own


@pytest.mark.parametrize("version", ["1", "2"])
def test_sns_signatures_verify_against_the_configured_certificate(version: str) -> None:
    signer = SnsSigner()
    provider = Ses(signer.certificate, (TOPIC,))
    for message in (
        sns_notification(ses_bounce(OURS, "jane@example.com")),
        sns_notification(ses_bounce(OURS, "jane@example.com")) | {"Subject": "Amazon SES"},
        sns_subscription(),
    ):
        signed = signer.sign(message, version)
        assert provider.authenticate(json.dumps(signed).encode(), {}) == signed


def test_sns_refuses_every_tampering() -> None:
    signer = SnsSigner()
    provider = Ses(signer.certificate, (TOPIC,))
    signed = signer.sign(sns_notification(ses_bounce(OURS, "jane@example.com")))
    other_topic = "arn:aws:sns:us-east-1:999999999999:theirs"
    tampered = [
        signed | {"Message": signed["Message"].replace("Permanent", "Transient")},
        signed | {"Timestamp": "2026-11-28T12:00:01.000Z"},
        signed | {"Subject": "added"},
        signed | {"Type": "SubscriptionConfirmation"},
        signed | {"Type": "Unknown"},
        signed | {"SignatureVersion": "3"},
        signed | {"SignatureVersion": "1"},
        signed | {"Signature": signed["Signature"][:-8] + "AAAAAA=="},
        signed | {"Signature": "not base64!"},
        {k: v for k, v in signed.items() if k != "Signature"},
        {k: v for k, v in signed.items() if k != "MessageId"},
        SnsSigner().sign(sns_notification(ses_bounce(OURS, "jane@example.com"))),  # wrong key
        signer.sign(sns_notification(ses_bounce(OURS, "jane@example.com"), other_topic)),
    ]
    for message in tampered:
        with pytest.raises(Unauthenticated):
            provider.authenticate(json.dumps(message).encode(), {})
    # Any topic, when none is configured; another certificate in the file is accepted too.
    both = SnsSigner().certificate + signer.certificate
    assert Ses(both, ()).authenticate(json.dumps(tampered[-1]).encode(), {})
    with pytest.raises(Unauthenticated):
        Ses(signer.certificate, ()).authenticate(b"[]", {})
    with pytest.raises(ConfigError):
        Ses("no certificate", ())


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription",
        "https://sns.us-east-1.amazonaws.com.evil.example/?Action=ConfirmSubscription",
        "https://evil.example/?sns.us-east-1.amazonaws.com",
        "https://sns.us-east-1.amazonaws.com:8443/",
        "https://user@sns.us-east-1.amazonaws.com/",
        "https://169.254.169.254/latest/meta-data/",
        "https://sqs.us-east-1.amazonaws.com/",
    ],
)
def test_only_sns_own_urls_are_confirmed(url: str) -> None:
    with pytest.raises(Invalid):
        subscribe_url(sns_subscription(url))


def test_a_subscription_names_its_url_and_a_notification_none() -> None:
    assert subscribe_url(sns_subscription()) == SUBSCRIBE_URL
    assert subscribe_url(sns_notification(ses_bounce(OURS, "a@example.com"))) is None


def test_the_reports_of_a_verified_notification() -> None:
    signer = SnsSigner()
    provider = Ses(signer.certificate, ())
    document = provider.authenticate(
        json.dumps(signer.sign(sns_notification(ses_complaint(OURS, "r@example.com")))).encode(),
        {},
    )
    (report,) = provider.reports(document)
    assert (report.kind, report.diagnostic, report.message_id) == (K.COMPLAINT, "abuse", OURS)
    assert provider.reports(signer.sign(sns_subscription())) == []
