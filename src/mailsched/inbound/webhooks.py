"""``POST /inbound/{provider}``: the providers' event webhooks, applied as bounces and
complaints.

Each call is checked by its provider (:mod:`mailsched.inbound.providers`) before anything is
read or written: an unknown provider is a 404, one without credentials configured or a call
whose credentials do not check out a 401, and nothing is written for either. The reports
whose Message-ID names one of our deliveries (on our sender domain, and of the campaign it
says) go to :class:`~mailsched.inbound.feedback.Feedback` in one transaction; if any does not,
the whole body is kept for inspection (``inbound_messages``, outcome ``unmatched``).

An SNS subscription confirmation is confirmed by a GET of its ``SubscribeURL`` (SNS's own
hosts only), the one outbound call here; its transport can be injected.

No ``from __future__ import annotations``: FastAPI reads these annotations.
"""

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Annotated

import httpx
from fastapi import APIRouter, HTTPException, Path, Request, status
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.config import ProviderConfig
from mailsched.errors import Unauthenticated
from mailsched.inbound.feedback import Feedback, Outcome, Received
from mailsched.inbound.providers import MAX_BODY_BYTES, Provider, matched
from mailsched.inbound.providers.mailgun import Mailgun
from mailsched.inbound.providers.postmark import Postmark
from mailsched.inbound.providers.sendgrid import SendGrid
from mailsched.inbound.providers.ses import Ses, subscribe_url
from mailsched.inbound.reports import Report
from mailsched.producer.limits import TooLarge
from mailsched.producer.schemas import ErrorBody
from mailsched.store import feedback as feedback_store
from mailsched.store.db import Database
from mailsched.store.suppressions import normalize

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

PROVIDERS = ("sendgrid", "mailgun", "postmark", "ses")
#: Seconds allowed for the GET that confirms an SNS subscription.
CONFIRM_TIMEOUT = 10.0


class InboundResult(BaseModel):
    """What one call did."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    #: Bounces and complaints the call reported (other events are not counted).
    reports: int
    #: Of those, the ones that named one of our deliveries and were applied.
    applied: int
    #: The ones that named none: the body is kept for inspection.
    unmatched: int
    #: An SNS subscription confirmed by this call.
    subscribed: bool = False


def configured(config: ProviderConfig, clock: Clock) -> dict[str, Provider]:
    """The providers whose credentials ``config`` holds; :class:`ConfigError` for a
    malformed key or certificate."""
    found: dict[str, Provider] = {}
    if config.sendgrid_public_key:
        found["sendgrid"] = SendGrid(config.sendgrid_public_key)
    if config.mailgun_signing_key:
        found["mailgun"] = Mailgun(config.mailgun_signing_key, clock)
    if config.postmark_user and config.postmark_password:
        found["postmark"] = Postmark(config.postmark_user, config.postmark_password)
    if config.ses_certificate:
        found["ses"] = Ses(config.ses_certificate, config.ses_topic_arns)
    return found


_RESPONSES: dict[int | str, dict[str, object]] = {
    401: {
        "model": ErrorBody,
        "description": "Not authenticated as that provider, or the "
        "provider has no credentials configured; nothing was written",
    },
    404: {"model": ErrorBody, "description": "No such provider"},
    413: {"model": ErrorBody, "description": f"A body over {MAX_BODY_BYTES} bytes"},
    422: {"model": ErrorBody, "description": "Authenticated, but not the provider's format"},
    502: {"model": ErrorBody, "description": "An SNS subscription could not be confirmed"},
    503: {"model": ErrorBody, "description": "The database cannot be reached"},
}

_DESCRIPTION = """Receives a provider's events about sent emails; bounces and complaints
are applied to the deliveries they name (through the Message-ID), other events are ignored.

Each provider authenticates its own way: `sendgrid` by its signed Event Webhook (ECDSA),
`mailgun` by its HMAC signature, `postmark` by HTTP basic auth, `ses` by the signature of
the Amazon SNS message (an SNS subscription is confirmed). A provider without credentials
configured is refused with 401, like a call whose credentials do not check out; nothing is
written then. See docs/providers.md."""


def inbound_routes(
    feedback: Feedback,
    db: Database,
    config: ProviderConfig,
    sender_domain: str,
    clock: Clock,
    transport: httpx.AsyncBaseTransport | None = None,
) -> APIRouter:
    """``POST /inbound/{provider}`` for the providers ``config`` has credentials for.

    A Message-ID counts as ours on ``sender_domain`` only; ``transport`` carries the GET
    that confirms an SNS subscription (the network's, by default)."""
    known = configured(config, clock)
    router = APIRouter(tags=["inbound"])

    @router.post(
        "/inbound/{provider}",
        response_model=InboundResult,
        summary="Receive a provider's bounce and complaint events",
        description=_DESCRIPTION,
        responses=_RESPONSES,
        openapi_extra={
            "requestBody": {
                "required": True,
                "description": "The provider's event payload, as it sends it.",
                "content": {
                    "application/json": {"schema": {}},
                    "text/plain": {"schema": {"type": "string"}},
                },
            }
        },
    )
    async def receive(
        request: Request,
        provider: Annotated[
            str, Path(description="sendgrid, mailgun, postmark or ses", max_length=40)
        ],
    ) -> InboundResult:
        if provider not in PROVIDERS:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no provider {provider!r}")
        checker = known.get(provider)
        if checker is None:
            log.warning("%s: a webhook call, but no credentials are configured", provider)
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, f"{provider}: no credentials configured"
            )
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise TooLarge("body", f"at most {MAX_BODY_BYTES} bytes")
        try:
            document = checker.authenticate(body, request.headers)
        except Unauthenticated as exc:
            log.warning("refused a webhook call: %s", exc)
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc)) from exc
        if provider == "ses":
            url = subscribe_url(document)
            if url is not None:
                await _confirm(url, transport)
                return InboundResult(reports=0, applied=0, unmatched=0, subscribed=True)
        reports = checker.reports(document)
        applied, unmatched = await _apply(feedback, db, provider, reports, sender_domain)
        if unmatched:
            await feedback.keep(provider, "unmatched", body)
        return InboundResult(reports=len(reports), applied=applied, unmatched=unmatched)

    return router


async def _apply(
    feedback: Feedback, db: Database, source: str, reports: list[Report], domain: str
) -> tuple[int, int]:
    """Apply the reports that name one of our deliveries; how many did, and how many not."""
    named = [(matched(r, domain), r) for r in reports]
    ids = [n[1] for n, _ in named if n is not None]

    async def work(conn: AsyncConnection) -> dict[int, feedback_store.Sent]:
        return await feedback_store.deliveries_named(conn, ids)

    sent = await db.run(work) if ids else {}
    # The campaign in the Message-ID must be the delivery's: another deployment sending
    # from the same domain through the same account makes the same shape of ids. And
    # the report must be about the delivery's own recipient: Message-IDs carry no MAC,
    # and a bounce's text (written by the recipient's server) may name anyone's.
    received = [
        Received(n[1], r)
        for n, r in named
        if n is not None
        and n[1] in sent
        and sent[n[1]].campaign_id == n[0]
        and r.recipient is not None
        and normalize(r.recipient) == normalize(sent[n[1]].recipient)
    ]
    outcomes = await feedback.apply(received, source) if received else []
    applied = sum(o is not Outcome.UNKNOWN for o in outcomes)
    return applied, len(reports) - applied


async def _confirm(url: str, transport: httpx.AsyncBaseTransport | None) -> None:
    """GET ``url`` (a verified message's SubscribeURL, on SNS's own host)."""
    try:
        async with httpx.AsyncClient(
            transport=transport, timeout=CONFIRM_TIMEOUT, follow_redirects=False
        ) as client:
            response = await client.get(url)
    except httpx.HTTPError as exc:
        log.warning("ses: confirming the SNS subscription failed: %s", exc)
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, "could not reach SNS") from exc
    if response.status_code != 200:
        log.warning("ses: SNS answered %d to the subscription's confirmation", response.status_code)
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"SNS answered {response.status_code}")
    log.info("ses: SNS subscription confirmed")
