"""Bodies and signatures, verified with the reference ``standardwebhooks`` package."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from mailsched.domain.events import Event
from mailsched.webhooks import payloads, signing

AT = datetime(2026, 12, 1, 9, 0, 0, 123456, tzinfo=UTC)


def event(event_id: int, at: datetime = AT) -> Event:
    return Event(event_id, 1, "delivery.sent", at, 7, {"campaignId": 7, "deliveryId": event_id})


def test_a_secret_is_32_random_bytes() -> None:
    one, two = signing.new_secret(), signing.new_secret()
    assert one != two
    assert one.startswith("whsec_")
    assert len(base64.b64decode(one.removeprefix("whsec_"))) == 32


def test_a_single_event_is_its_body_under_its_id() -> None:
    message_id, body = payloads.single(event(42))
    assert message_id == "42"
    assert json.loads(body) == {
        "type": "delivery.sent",
        "timestamp": "2026-12-01T09:00:00.123Z",
        "data": {"campaignId": 7, "deliveryId": 42},
    }


def test_a_batch_lists_its_events_in_order() -> None:
    later = AT + timedelta(seconds=5)
    message_id, body = payloads.batch(99, [event(3, later), event(2)])
    assert message_id == "batch_99"
    assert json.loads(body) == {
        "type": "batch",
        "timestamp": "2026-12-01T09:00:05.123Z",
        "data": {"events": [event(2).item(), json.loads(json.dumps(event(3, later).item()))]},
    }


def test_the_headers_verify_with_standardwebhooks() -> None:
    secret = signing.new_secret()
    _, body = payloads.single(event(42))
    now = datetime.now(UTC)
    headers = signing.headers(secret, "42", now, body)
    assert headers["webhook-id"] == "42"
    assert headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(body.encode(), headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(body.encode(), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace("42", "43").encode(), headers)


def test_a_time_in_another_zone_signs_the_same_instant() -> None:
    secret = signing.new_secret()
    now = datetime.now(UTC)
    east = now.astimezone(timezone(timedelta(hours=5)))
    assert signing.headers(secret, "1", east, "{}") == signing.headers(secret, "1", now, "{}")
