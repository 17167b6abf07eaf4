"""DKIM through real processes, on both stacks: every message that arrives verifies.

Embedded: one ``mailsched run``. Real: ``mailsched api``, ``mailsched worker`` and
``mailsched webhooks`` on MariaDB + Kafka. The deployment signs with a key the test
writes; dkimpy verifies each message the SMTP sink received against a test resolver.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailsched.config import DkimKey
from tests.conftest import Stack
from tests.support.deployment import deployed
from tests.support.dkim_dns import DkimDns, signed_headers
from tests.support.smtp_sink import SmtpSink

pytestmark = pytest.mark.e2e

FROM = "news@example.com"
RECIPIENTS = [f"user{i}@example.com" for i in range(4)]
REQUIRED = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
}


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
async def test_every_message_verifies_and_a_changed_one_fails(
    stack: Stack, smtp_sink: SmtpSink, tmp_path: Path, algorithm: str
) -> None:
    key: DkimKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if algorithm == "rsa"
        else ed25519.Ed25519PrivateKey.generate()
    )
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    env = {
        "MAILSCHED_FROM": FROM,
        "MAILSCHED_SMTP_URL": smtp_sink.url,
        "MAILSCHED_DKIM_DOMAIN": "example.com",
        "MAILSCHED_DKIM_SELECTOR": "e2e",
        "MAILSCHED_DKIM_KEY_FILE": str(key_file),
    }
    async with deployed(stack, env, tmp_path) as (app, api):
        await asyncio.to_thread(app.wait_joined)
        created = await api.campaign(
            {
                "userId": 1,
                "subject": "Signed, sealed — délivré",
                "body": "Hello {{ name }}.",
                "startTime": "2026-01-25T12:00:00Z",
                "delaySeconds": 0,
                "hourlyLimit": 1000,
                "recipients": [{"email": r, "name": f"N{i}"} for i, r in enumerate(RECIPIENTS)],
            }
        )
        await api.completed(created["campaignId"])
        assert not app.tracebacks(), app.output()

    dns = DkimDns()
    dns.publish("e2e", "example.com", key)
    contents = smtp_sink.contents
    assert Counter(a.rcpt for a in smtp_sink.arrivals) == Counter(RECIPIENTS)
    assert len(contents) == len(RECIPIENTS)
    for content in contents:
        assert content.startswith(b"DKIM-Signature: "), content[:200]
        assert dns.verify(content), content[:600]
        assert set(signed_headers(content)) >= REQUIRED
        changed = content.replace(b"Hello N", b"Hello M", 1)
        assert changed != content
        assert not dns.verify(changed)
