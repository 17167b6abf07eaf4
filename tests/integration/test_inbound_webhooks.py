"""``POST /inbound/{provider}`` on each database: each provider's signed or authenticated
events bounce, complain and soft-bounce the deliveries they name; an unauthenticated call
writes nothing; an SNS subscription is confirmed at SNS's own URL only."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.config import ProviderConfig
from mailsched.domain.model import DeliveryStatus
from mailsched.inbound.feedback import Feedback
from mailsched.inbound.webhooks import inbound_routes
from mailsched.store.db import Database
from mailsched.store.tables import bounces, events, inbound_messages, suppressions
from tests.integration.test_feedback import CONFIG
from tests.integration.test_suppressions import NOW, seed, statuses
from tests.support.api import make_app
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

S = DeliveryStatus
DOMAIN = "mail.example.com"
MAILGUN_KEY = "key-0123456789abcdef"
SENDGRID = SendGridSigner()
SNS = SnsSigner()
CERTIFICATE = SNS.certificate
ALL = ProviderConfig(
    sendgrid_public_key=SENDGRID.public_key,
    mailgun_signing_key=MAILGUN_KEY,
    postmark_user="hooks",
    postmark_password="pm-secret",
    ses_certificate=CERTIFICATE,
    ses_topic_arns=(TOPIC,),
)
NONE = ProviderConfig(None, None, None, None, None, ())


class Sns:
    """The one outbound call, to SNS, recorded; AWS is not reachable from tests."""

    def __init__(self) -> None:
        self.calls: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self._answer)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        return httpx.Response(200, text="<ConfirmSubscriptionResponse/>")


@asynccontextmanager
async def _client(
    db: Database, config: ProviderConfig = ALL, sns: Sns | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    router = inbound_routes(
        Feedback(db, CONFIG, lambda: NOW),
        db,
        config,
        DOMAIN,
        lambda: NOW,
        transport=(sns or Sns()).transport,
    )
    app = make_app(db, routers=(router,))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        yield client


def _mid(campaign_id: int, delivery_id: int) -> str:
    return f"<c{campaign_id}.d{delivery_id}@{DOMAIN}>"


async def _written(db: Database) -> tuple[int, int, int, int]:
    """Rows in the tables a call may write: bounces, suppressions, events, kept messages."""

    async def work(conn: AsyncConnection) -> tuple[int, int, int, int]:
        counts = []
        for table in (bounces, suppressions, events, inbound_messages):
            counts.append(
                int((await conn.execute(select(func.count()).select_from(table))).scalar_one())
            )
        return counts[0], counts[1], counts[2], counts[3]

    return await db.run(work)


async def _suppressed(db: Database) -> set[tuple[str, str]]:
    async def work(conn: AsyncConnection) -> set[tuple[str, str]]:
        rows = await conn.execute(select(suppressions.c.address, suppressions.c.reason))
        return {(r.address, r.reason) for r in rows}

    return await db.run(work)


def _sendgrid(events_: list[dict[str, Any]]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(events_).encode()
    return body, SENDGRID.headers(body) | {"content-type": "application/json"}


def _mailgun(event: dict[str, Any], token: str) -> bytes:
    return mailgun_body(MAILGUN_KEY, event, int(NOW.timestamp()), token)


def _mailgun_failed(mid: str, recipient: str, severity: str) -> dict[str, Any]:
    return {
        "event": "failed",
        "severity": severity,
        "recipient": recipient,
        "delivery-status": {"code": 550, "message": "No such user", "enhanced-code": "5.1.1"},
        "message": {"headers": {"message-id": mid.strip("<>")}},
    }


def _postmark(record_type: str, kind: str, mid: str, recipient: str) -> bytes:
    return json.dumps(
        {
            "RecordType": record_type,
            "Type": kind,
            "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
            "Email": recipient,
            "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist",
            "Content": f"Message-ID: <dsn@mx.example.com>\r\n\r\n...\r\nMessage-ID: {mid}\r\n",
        }
    ).encode()


def _ses(notification: dict[str, Any]) -> bytes:
    return json.dumps(SNS.sign(sns_notification(notification))).encode()


async def test_each_provider_bounces_complains_and_soft_bounces(db: Database) -> None:
    rows = [(f"r{i}@example.com", S.SENT) for i in range(12)]
    campaign, ids = await seed(db, 1, rows)
    mid = [_mid(campaign, i) for i in ids]
    calls: list[tuple[str, bytes, dict[str, str]]] = [
        (
            "sendgrid",
            *_sendgrid(
                [
                    {
                        "event": "bounce",
                        "type": "bounce",
                        "email": "r0@example.com",
                        "smtp-id": mid[0],
                        "status": "5.0.0",
                        "reason": "550 unknown user",
                    },
                    {
                        "event": "deferred",
                        "email": "r1@example.com",
                        "smtp-id": mid[1],
                        "response": "450 try later",
                    },
                    {"event": "delivered", "email": "r2@example.com", "smtp-id": mid[2]},
                    {
                        "event": "spamreport",
                        "email": "r2@example.com",
                        "mailsched_message_id": mid[2],
                    },
                ]
            ),
        ),
        ("mailgun", _mailgun(_mailgun_failed(mid[3], "r3@example.com", "permanent"), "t1"), {}),
        ("mailgun", _mailgun(_mailgun_failed(mid[4], "r4@example.com", "temporary"), "t2"), {}),
        (
            "mailgun",
            _mailgun(
                {
                    "event": "complained",
                    "recipient": "r5@example.com",
                    "message": {"headers": {"message-id": mid[5]}},
                },
                "t3",
            ),
            {},
        ),
        (
            "postmark",
            _postmark("Bounce", "HardBounce", mid[6], "r6@example.com"),
            basic("hooks", "pm-secret"),
        ),
        (
            "postmark",
            _postmark("Bounce", "SoftBounce", mid[7], "r7@example.com"),
            basic("hooks", "pm-secret"),
        ),
        (
            "postmark",
            _postmark("SpamComplaint", "SpamComplaint", mid[8], "r8@example.com"),
            basic("hooks", "pm-secret"),
        ),
        ("ses", _ses(ses_bounce(mid[9], "r9@example.com")), {"content-type": "text/plain"}),
        ("ses", _ses(ses_bounce(mid[10], "r10@example.com", "Transient")), {}),
        ("ses", _ses(ses_complaint(mid[11], "r11@example.com")), {}),
    ]
    async with _client(db) as client:
        answers = []
        for provider, body, headers in calls:
            response = await client.post(f"/inbound/{provider}", content=body, headers=headers)
            assert response.status_code == 200, (provider, response.text)
            answers.append(response.json())
    assert answers[0] == {"reports": 3, "applied": 3, "unmatched": 0, "subscribed": False}
    assert all(a["applied"] == 1 and a["unmatched"] == 0 for a in answers[1:])
    assert await statuses(db, ids) == [
        S.BOUNCED,
        S.SENT,
        S.COMPLAINED,
        S.BOUNCED,
        S.SENT,
        S.COMPLAINED,
        S.BOUNCED,
        S.SENT,
        S.COMPLAINED,
        S.BOUNCED,
        S.SENT,
        S.COMPLAINED,
    ]
    hard_or_complaint = {
        0: "bounce",
        2: "complaint",
        3: "bounce",
        5: "complaint",
        6: "bounce",
        8: "complaint",
        9: "bounce",
        11: "complaint",
    }
    assert await _suppressed(db) == {(f"r{i}@example.com", r) for i, r in hard_or_complaint.items()}

    async def work(conn: AsyncConnection) -> list[tuple[int, str, str]]:
        rows = await conn.execute(
            select(bounces.c.delivery_id, bounces.c.kind, bounces.c.source).order_by(
                bounces.c.delivery_id
            )
        )
        return [(r.delivery_id, r.kind, r.source) for r in rows]

    kinds = ["hard", "soft", "complaint"] * 4
    sources = ["sendgrid"] * 3 + ["mailgun"] * 3 + ["postmark"] * 3 + ["ses"] * 3
    assert await db.run(work) == list(zip(ids, kinds, sources, strict=True))


async def test_an_unauthenticated_call_writes_nothing(db: Database) -> None:
    campaign, ids = await seed(db, 1, [("r0@example.com", S.SENT)])
    mid = _mid(campaign, ids[0])
    body, headers = _sendgrid([{"event": "bounce", "email": "r0@example.com", "smtp-id": mid}])
    other = SnsSigner()
    refused: list[tuple[str, bytes, dict[str, str]]] = [
        ("sendgrid", body.replace(b"r0@", b"r1@"), headers),
        ("sendgrid", body, {}),
        ("sendgrid", body, SendGridSigner().headers(body)),
        (
            "mailgun",
            mailgun_body(
                "wrong",
                _mailgun_failed(mid, "r0@example.com", "permanent"),
                int(NOW.timestamp()),
                "t",
            ),
            {},
        ),
        (
            "mailgun",
            mailgun_body(
                MAILGUN_KEY,
                _mailgun_failed(mid, "r0@example.com", "permanent"),
                int(NOW.timestamp()) - 3600,
                "t",
            ),
            {},
        ),
        ("mailgun", b"{not json", {}),
        (
            "postmark",
            _postmark("Bounce", "HardBounce", mid, "r0@example.com"),
            basic("hooks", "wrong"),
        ),
        ("postmark", _postmark("Bounce", "HardBounce", mid, "r0@example.com"), {}),
        (
            "ses",
            json.dumps(other.sign(sns_notification(ses_bounce(mid, "r0@example.com")))).encode(),
            {},
        ),
        (
            "ses",
            json.dumps(
                SNS.sign(
                    sns_notification(
                        ses_bounce(mid, "r0@example.com"), "arn:aws:sns:us-east-1:1:other"
                    )
                )
            ).encode(),
            {},
        ),
        ("ses", json.dumps(SNS.sign(sns_subscription())).replace("Token", "Tokem").encode(), {}),
    ]
    before = await _written(db)
    sns = Sns()
    async with _client(db, sns=sns) as client:
        for provider, changed, changed_headers in refused:
            response = await client.post(
                f"/inbound/{provider}", content=changed, headers=changed_headers
            )
            assert response.status_code == 401, (provider, response.text)
            assert response.json()["error"] == "unauthorized"
    assert await _written(db) == before
    assert await statuses(db, ids) == [S.SENT]
    assert sns.calls == []


async def test_an_unconfigured_provider_is_refused_and_an_unknown_one_not_found(
    db: Database,
) -> None:
    campaign, ids = await seed(db, 1, [("r0@example.com", S.SENT)])
    body, headers = _sendgrid(
        [{"event": "bounce", "email": "r0@example.com", "smtp-id": _mid(campaign, ids[0])}]
    )
    before = await _written(db)
    async with _client(db, NONE) as client:
        for provider in ("sendgrid", "mailgun", "postmark", "ses"):
            response = await client.post(f"/inbound/{provider}", content=body, headers=headers)
            assert response.status_code == 401, response.text
        response = await client.post("/inbound/sparkpost", content=body, headers=headers)
        assert response.status_code == 404
    assert await _written(db) == before
    assert await statuses(db, ids) == [S.SENT]


async def test_bad_bodies_are_refused_clearly(db: Database) -> None:
    async with _client(db) as client:
        body = b"[not json"
        response = await client.post(
            "/inbound/sendgrid", content=body, headers=SENDGRID.headers(body)
        )
        assert response.status_code == 422
        assert response.json()["error"] == "invalid_request"
        response = await client.post(
            "/inbound/postmark", content=b"\xff\xfe", headers=basic("hooks", "pm-secret")
        )
        assert response.status_code == 422
        big = b"[" + b" " * (1024 * 1024) + b"]"
        response = await client.post(
            "/inbound/sendgrid", content=big, headers=SENDGRID.headers(big)
        )
        assert response.status_code == 413


async def test_unmatched_reports_are_kept_and_change_nothing(db: Database) -> None:
    campaign, ids = await seed(db, 1, [("r0@example.com", S.SENT)])
    body, headers = _sendgrid(
        [
            # another deployment's domain, another campaign, no such delivery, no id at all
            {
                "event": "bounce",
                "email": "r0@example.com",
                "smtp-id": f"<c{campaign}.d{ids[0]}@other.example>",
            },
            {"event": "bounce", "email": "r0@example.com", "smtp-id": _mid(campaign + 1, ids[0])},
            {
                "event": "bounce",
                "email": "r0@example.com",
                "smtp-id": _mid(campaign, ids[0] + 1000),
            },
            {"event": "spamreport", "email": "r0@example.com"},
            # the right ids, but about someone else: a Message-ID carries no MAC, and a
            # bounce's text may name any delivery of ours
            {"event": "bounce", "email": "attacker@example.net", "smtp-id": _mid(campaign, ids[0])},
        ]
    )
    async with _client(db) as client:
        response = await client.post("/inbound/sendgrid", content=body, headers=headers)
    assert response.json() == {"reports": 5, "applied": 0, "unmatched": 5, "subscribed": False}
    assert await statuses(db, ids) == [S.SENT]

    async def work(conn: AsyncConnection) -> list[tuple[str, str]]:
        rows = await conn.execute(select(inbound_messages.c.source, inbound_messages.c.outcome))
        return [(r.source, r.outcome) for r in rows]

    assert await db.run(work) == [("sendgrid", "unmatched")]
    bounced, suppressed, _, _ = await _written(db)
    assert (bounced, suppressed) == (0, 0)


async def test_an_sns_subscription_is_confirmed_at_sns_only(db: Database) -> None:
    sns = Sns()
    before = await _written(db)
    async with _client(db, sns=sns) as client:
        body = json.dumps(SNS.sign(sns_subscription())).encode()
        response = await client.post("/inbound/ses", content=body)
        assert response.status_code == 200, response.text
        assert response.json()["subscribed"] is True
        assert [str(r.url) for r in sns.calls] == [SUBSCRIBE_URL]
        assert sns.calls[0].method == "GET"
        for url in ("https://evil.example/confirm", "http://sns.us-east-1.amazonaws.com/"):
            body = json.dumps(SNS.sign(sns_subscription(url))).encode()
            response = await client.post("/inbound/ses", content=body)
            assert response.status_code == 422, response.text
    assert len(sns.calls) == 1
    assert await _written(db) == before


async def test_sns_failing_to_answer_is_a_502(db: Database) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("unreachable", request=request)

    sns = Sns()
    sns.transport = httpx.MockTransport(refuse)
    async with _client(db, sns=sns) as client:
        body = json.dumps(SNS.sign(sns_subscription())).encode()
        response = await client.post("/inbound/ses", content=body)
    assert response.status_code == 502
