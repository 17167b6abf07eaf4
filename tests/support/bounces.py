"""Bounces and complaints to send to the bounce mailbox, and a blocking SMTP client
that says what the server answered at each step."""

from __future__ import annotations

import smtplib
from dataclasses import dataclass
from pathlib import Path

SAMPLES = Path(__file__).parent.parent / "data" / "bounces" / "handmade"
HARD = (SAMPLES / "postfix_dsn_5_1_1.eml").read_bytes()
SOFT = (SAMPLES / "soft_4_2_2_mailbox_full.eml").read_bytes()
COMPLAINT = (SAMPLES / "yahoo_arf.eml").read_bytes()
UNRECOGNISED = (
    b"From: someone@example.org\r\nTo: bounces@bounce.example.com\r\n"
    b"Subject: Out of office\r\n\r\nI am away until Monday.\r\n"
)


def dsn(recipient: str, message_id: str, status: str = "5.1.1") -> bytes:
    """A standard DSN (RFC 3464) about ``recipient``'s message ``message_id``."""
    action = "failed" if status.startswith("5") else "delayed"
    return (
        "From: MAILER-DAEMON@mx.example.net\r\n"
        "To: bounces@bounce.example.com\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n'
        "\r\n"
        "--b1\r\n"
        "Content-Type: text/plain\r\n\r\n"
        "Your message could not be delivered.\r\n"
        "--b1\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        f"Action: {action}\r\n"
        f"Status: {status}\r\n"
        f"Diagnostic-Code: smtp; 550 {status} no such user\r\n"
        "--b1\r\n"
        "Content-Type: text/rfc822-headers\r\n\r\n"
        f"To: {recipient}\r\n"
        f"Message-ID: {message_id}\r\n"
        "--b1--\r\n"
    ).encode()


@dataclass(frozen=True)
class Answered:
    """The server's reply codes: one per RCPT TO, then DATA's (``None`` when no
    recipient was taken, so no data was sent)."""

    rcpts: list[int]
    data: int | None


def submit(port: int, rcpts: list[str], raw: bytes, mail_from: str = "") -> Answered:
    """One SMTP transaction on a new connection to 127.0.0.1 (blocking); the default
    sender is the null reverse-path ``<>``, as a real bounce's."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("mx.example.net")
        code, reply = client.mail(mail_from)
        assert code == 250, (code, reply)
        codes = [client.rcpt(rcpt)[0] for rcpt in rcpts]
        if 250 not in codes:
            client.rset()
            return Answered(codes, None)
        data, _ = client.data(raw)
        return Answered(codes, data)
