"""The REST API: an app factory, its routes, and the mapping of our errors to HTTP.

No ``from __future__ import annotations`` here: FastAPI reads the routes' annotations,
and the authentication alias is local to the route factories.
"""

import asyncio
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    Header,
    Path,
    Query,
    Request,
    Response,
    status,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BeforeValidator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from mailsched import __version__
from mailsched.domain.model import CampaignStatus, DeliveryStatus
from mailsched.errors import (
    Conflict,
    DataRefused,
    Invalid,
    NotFound,
    QueueUnavailable,
    StoreError,
    StoreUnavailable,
)
from mailsched.metrics import Metrics
from mailsched.producer import uploads
from mailsched.producer.auth import Caller, TooManyRequests
from mailsched.producer.campaigns import Campaigns, Created
from mailsched.producer.docs import install_docs
from mailsched.producer.limits import BodySizeLimit, TooLarge
from mailsched.producer.schemas import (
    ERROR_RESPONSES,
    MAX_ID,
    CampaignControl,
    CampaignCreated,
    CampaignPage,
    CampaignPlan,
    CampaignRequest,
    CampaignScheduled,
    CampaignView,
    DeliveryPage,
    ErrorBody,
    RecipientsAdded,
    RetryStarted,
)
from mailsched.ui.headers import UiHeaders

log = logging.getLogger(__name__)

#: A readiness check: returns when its dependency answers, raises when it does not.
Check = Callable[[], Awaitable[None]]

_CHECK_TIMEOUT = 3.0


_CURSOR = r"^[0-9]{1,18}$"


def digits(value: object) -> object:
    """A query or path integer given in digits alone: pydantic would read "1.0", "+1"
    and " 1" as 1, but the documented type is an integer."""
    if not (isinstance(value, str) and value.isascii() and value.isdigit()):
        raise ValueError("must be an integer, in digits")
    return value


#: Ids are 64-bit in the database; anything larger names nothing.
CampaignId = Annotated[int, Path(ge=1, le=MAX_ID), BeforeValidator(digits)]
PageLimit = Annotated[int, Query(ge=1, le=1000), BeforeValidator(digits)]
PlanLimit = Annotated[int, Query(ge=1, le=100_000), BeforeValidator(digits)]
Cursor = Annotated[str | None, Query(pattern=_CURSOR)]
IdempotencyKey = Annotated[
    str | None, Header(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")
]

#: An upload's body, for the OpenAPI description (it is read as it streams in).
_UPLOAD_BODY = {
    "required": True,
    "content": {
        uploads.CSV: {"schema": {"type": "string"}},
        uploads.NDJSON: {"schema": {"type": "string"}},
    },
}

#: The routes whose body is read as it streams in, not held whole.
STREAMED = re.compile(r"^/api/v1/email/campaign/[0-9]+/recipients$")


#: The most recipients one JSON body holds, whatever a campaign may have: more are
#: uploaded to a draft, as they stream in.
MAX_BODY_RECIPIENTS = 100_000


@dataclass(frozen=True, slots=True)
class Limits:
    """How big a request may be. ``max_recipients`` is per campaign; one JSON body
    holds at most :data:`MAX_BODY_RECIPIENTS` of them."""

    max_recipients: int = 10_000_000
    max_body_bytes: int = 1024 * 1024
    max_request_bytes: int = 32 * 1024 * 1024

    @property
    def body_recipients(self) -> int:
        return min(self.max_recipients, MAX_BODY_RECIPIENTS)


class Forbidden(Exception):
    """The caller may not act for that user."""


def create_app(
    campaigns: Campaigns,
    caller: Callable[..., Awaitable[Caller]],
    *,
    on_created: Callable[[], None] | None = None,
    checks: Mapping[str, Check] | None = None,
    metrics: Metrics | None = None,
    limits: Limits | None = None,
    routers: tuple[APIRouter, ...] = (),
) -> FastAPI:
    """The API over ``campaigns``.

    ``caller`` is the authentication dependency (see
    :func:`mailsched.producer.auth.caller_dependency`); ``on_created`` is called
    after each new campaign; ``checks`` back ``/readyz``; ``metrics`` is served at
    ``/metrics``; ``routers`` are mounted as they are.
    """
    limits = limits or Limits()
    app = FastAPI(
        title="mailsched",
        version=__version__,
        description="Schedule email campaigns; delivered on time, within their limits.",
        docs_url=None,  # served from the package by install_docs, not from a CDN
        redoc_url=None,
    )
    install_docs(app)
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_request_bytes, streamed=STREAMED)
    # Outside BodySizeLimit, so a 413 under /ui carries the dashboard's headers too.
    app.add_middleware(UiHeaders)
    on_created = on_created or (lambda: None)
    app.include_router(_campaign_routes(campaigns, caller, on_created, limits))
    app.include_router(_draft_routes(campaigns, caller, on_created))
    app.include_router(_control_routes(campaigns, caller, on_created))
    for router in routers:
        app.include_router(router)
    app.include_router(_operations_routes(checks or {}, metrics or Metrics()))
    _install_error_handlers(app)
    return app


def _campaign_routes(
    campaigns: Campaigns,
    caller: Callable[..., Awaitable[Caller]],
    on_created: Callable[[], None],
    limits: Limits,
) -> APIRouter:
    router = APIRouter(prefix="/api/v1/email", tags=["campaigns"], responses=ERROR_RESPONSES)
    creating = APIRouter(route_class=_counting_recipients(limits.body_recipients))
    CallerDep = Annotated[Caller, Depends(caller)]

    @creating.post("/campaign", status_code=status.HTTP_201_CREATED)
    async def create_campaign(
        request: CampaignRequest,
        caller: CallerDep,
        idempotency_key: IdempotencyKey = None,
    ) -> CampaignCreated:
        """Store a campaign and plan one delivery per (distinct) recipient.

        With ``"draft": true`` and no recipients, store a DRAFT: upload its recipients
        (``POST …/recipients``), then schedule it (``POST …/schedule``).

        With an ``Idempotency-Key`` header, repeating the same request within 24 hours
        returns the first answer instead of creating another campaign.
        """
        if request.user_id != caller.user_id:
            raise Forbidden(f"this API key belongs to user {caller.user_id}")
        _check_size(request, limits)
        created = await campaigns.create(request, idempotency_key)
        if created.replayed:
            return _replayed(created)  # type: ignore[return-value]
        on_created()
        result = CampaignCreated.model_validate_json(created.body)
        log.info("campaign %d created: %d recipients", result.campaign_id, result.recipient_count)
        return result

    @creating.post("/campaign/plan")
    async def plan_campaign(
        request: CampaignRequest,
        caller: CallerDep,
        limit: PlanLimit = 1000,
    ) -> CampaignPlan:
        """A dry run: when each recipient would get the email, were this body created now.

        Stores nothing. Checks the body exactly as a create does, so a request this
        refuses, a create refuses too. ``deliveries`` lists the first ``limit``
        planned sends, in the order they would go out.
        """
        if request.user_id != caller.user_id:
            raise Forbidden(f"this API key belongs to user {caller.user_id}")
        _check_size(request, limits)
        return await campaigns.plan(request, limit)

    router.include_router(creating)

    @router.get("/campaigns")
    async def list_campaigns(
        caller: CallerDep,
        status: CampaignStatus | None = None,
        limit: PageLimit = 100,
        cursor: Cursor = None,
    ) -> CampaignPage:
        """The caller's campaigns, newest first."""
        before = int(cursor) if cursor else None
        return await campaigns.listing(caller.user_id, status, before, limit)

    @router.get("/campaign/{campaign_id}")
    async def get_campaign(campaign_id: CampaignId, caller: CallerDep) -> CampaignView:
        """The campaign, its status, counts per delivery status, planned and actual sends."""
        return await campaigns.get(caller.user_id, campaign_id)

    @router.get("/campaign/{campaign_id}/deliveries")
    async def list_deliveries(
        campaign_id: CampaignId,
        caller: CallerDep,
        status: DeliveryStatus | None = None,
        limit: PageLimit = 100,
        cursor: Cursor = None,
    ) -> DeliveryPage:
        """Per recipient: planned time, status, attempts, send time and last error."""
        return await campaigns.deliveries(
            caller.user_id, campaign_id, status, int(cursor or 0), limit
        )

    return router


def _draft_routes(
    campaigns: Campaigns,
    caller: Callable[..., Awaitable[Caller]],
    on_created: Callable[[], None],
) -> APIRouter:
    router = APIRouter(prefix="/api/v1/email", tags=["drafts"], responses=ERROR_RESPONSES)
    CallerDep = Annotated[Caller, Depends(caller)]

    @router.post(
        "/campaign/{campaign_id}/recipients",
        openapi_extra={"requestBody": _UPLOAD_BODY},
        responses={415: {"model": ErrorBody, "description": "Not CSV or NDJSON in UTF-8"}},
    )
    async def upload_recipients(
        campaign_id: CampaignId,
        request: Request,
        caller: CallerDep,
        content_type: Annotated[str | None, Header()] = None,
        skip_invalid: Annotated[bool, Query(alias="skipInvalid")] = False,
        idempotency_key: IdempotencyKey = None,
    ) -> RecipientsAdded:
        """Append recipients to a DRAFT, streamed as ``text/csv`` (a header row naming
        ``email``, and optionally ``name``, ``timezone`` and ``vars.<name>`` columns) or
        ``application/x-ndjson`` (one recipient a line, as in a create's body).

        All or nothing: a 422 names the first 100 bad rows by line, and stores
        nothing of the upload; with ``skipInvalid=true`` the good rows are stored and
        the bad ones reported. Addresses given twice, or already in the draft, are
        dropped and counted. With an ``Idempotency-Key``, repeating the same upload
        within 24 hours answers as the first did and adds nothing.
        """
        upload = uploads.Upload(_upload_format(content_type), request.stream(), skip_invalid)
        added = await campaigns.add_recipients(caller.user_id, campaign_id, upload, idempotency_key)
        if added.replayed:
            return _replayed(added)  # type: ignore[return-value]
        result = RecipientsAdded.model_validate_json(added.body)
        log.info("campaign %d: %d recipients added by upload", result.campaign_id, result.added)
        return result

    @router.post("/campaign/{campaign_id}/schedule")
    async def schedule_campaign(campaign_id: CampaignId, caller: CallerDep) -> CampaignScheduled:
        """Plan a DRAFT's recipients in the order they were uploaded, under the same
        rules as a create (its calendar, the user's suppressions), and schedule it."""
        scheduled = await campaigns.schedule(caller.user_id, campaign_id)
        on_created()
        return scheduled

    return router


def _control_routes(
    campaigns: Campaigns,
    caller: Callable[..., Awaitable[Caller]],
    on_created: Callable[[], None],
) -> APIRouter:
    router = APIRouter(prefix="/api/v1/email", tags=["campaign control"], responses=ERROR_RESPONSES)
    CallerDep = Annotated[Caller, Depends(caller)]

    @router.post("/campaign/{campaign_id}/pause")
    async def pause_campaign(campaign_id: CampaignId, caller: CallerDep) -> CampaignControl:
        """Pause: once this returns, no further email of the campaign starts sending."""
        return await campaigns.pause(caller.user_id, campaign_id)

    @router.post("/campaign/{campaign_id}/resume")
    async def resume_campaign(campaign_id: CampaignId, caller: CallerDep) -> CampaignControl:
        """Resume a paused campaign; the rest is planned again from now."""
        control = await campaigns.resume(caller.user_id, campaign_id)
        on_created()
        return control

    @router.post("/campaign/{campaign_id}/cancel")
    async def cancel_campaign(campaign_id: CampaignId, caller: CallerDep) -> CampaignControl:
        """Cancel: once this returns, no further email of the campaign starts sending."""
        return await campaigns.cancel(caller.user_id, campaign_id)

    @router.post("/campaign/{campaign_id}/retry-failed")
    async def retry_failed(campaign_id: CampaignId, caller: CallerDep) -> RetryStarted:
        """Give the campaign's FAILED deliveries new attempts, planned from now."""
        started = await campaigns.retry_failed(caller.user_id, campaign_id)
        log.info("campaign %d: %d failed deliveries retried", campaign_id, started.retried)
        on_created()
        return started

    return router


def _counting_recipients(limit: int) -> type[APIRoute]:
    """A route class that counts a body's recipients before FastAPI validates them.

    Validating first, 1.5 million recipients (26 MB) took 4.9 s and 390 MB before
    their 413; counted after parsing, the 413 takes 0.3 s. The parsed document is
    the one FastAPI then validates, so a request within the limit costs nothing more.
    """

    class CountingRecipients(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def counted(request: Request) -> Response:
                # Parsed once: Starlette keeps the document on the request for FastAPI.
                try:
                    document = await request.json()
                except (ValueError, RecursionError):
                    document = None  # FastAPI parses it again, and says what is wrong
                if isinstance(document, dict):
                    items = document.get("recipients")
                    if isinstance(items, list) and len(items) > limit:
                        message = f"at most {limit} recipients in a body; upload more to a draft"
                        raise TooLarge("recipients", message)
                return await handler(request)

            return counted

    return CountingRecipients


def _check_size(request: CampaignRequest, limits: Limits) -> None:
    """Field sizes; the recipients were counted before the body was parsed."""
    for name, text in (("body", request.body), ("htmlBody", request.html_body)):
        if text is not None and len(text.encode()) > limits.max_body_bytes:
            raise TooLarge(name, f"at most {limits.max_body_bytes} bytes")


class UnsupportedUpload(Exception):
    """An upload's Content-Type is not one this route reads (answered with 415)."""


def _upload_format(content_type: str | None) -> str:
    """The upload's format from its Content-Type: CSV or NDJSON, in UTF-8."""
    media, *params = (content_type or "").split(";")
    media = media.strip().lower()
    if media not in uploads.FORMATS:
        raise UnsupportedUpload(f"{uploads.CSV} or {uploads.NDJSON} (UTF-8), not {media!r}")
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            raise UnsupportedUpload("the upload must be UTF-8")
    return media


def _replayed(stored: Created) -> JSONResponse:
    """The stored first answer to a request repeated with its ``Idempotency-Key``."""
    return JSONResponse(
        status_code=stored.status_code,
        content=_json(stored.body),
        headers={"Idempotent-Replayed": "true"},
    )


def _json(body: str) -> Any:
    return json.loads(body)


def _operations_routes(checks: Mapping[str, Check], metrics: Metrics) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @router.get("/readyz", responses={503: {"description": "A dependency cannot do its part"}})
    async def readyz() -> JSONResponse:
        """Whether the database and Kafka (when configured) can do their part now.

        Unauthenticated, for probes: it names what is down, never why. The error
        can name internal hosts; it goes to the log.
        """
        results = await asyncio.gather(
            *(asyncio.wait_for(check(), _CHECK_TIMEOUT) for check in checks.values()),
            return_exceptions=True,
        )
        report: dict[str, str] = {}
        for name, result in zip(checks, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("readiness: %s unavailable: %r", name, result)
                report[name] = "unavailable"
            else:
                report[name] = "ok"
        ready = all(value == "ok" for value in report.values())
        return JSONResponse(
            status_code=200 if ready else 503,
            content={"status": "ready" if ready else "unavailable", "checks": report},
        )

    @router.get("/metrics", response_class=Response)
    async def prometheus() -> Response:
        """Prometheus metrics of this process."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router


def _field(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


_HTTP_ERRORS = {
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
}


def _error(status_code: int, error: str, detail: object, **headers: str) -> JSONResponse:
    return JSONResponse(
        status_code=status_code, content={"error": error, "detail": detail}, headers=headers
    )


def _install_error_handlers(app: FastAPI) -> None:
    """Every error answers with ``{"error": ..., "detail": ...}``; never a bare 500."""

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        cause = exc.__cause__
        if isinstance(cause, json.JSONDecodeError):
            # FastAPI puts the byte offset where the field goes.
            message = f"not valid JSON: {cause.msg} (line {cause.lineno}, column {cause.colno})"
            return _error(422, "invalid_request", [{"field": "body", "message": message}])
        detail = [
            {"field": _field(tuple(err["loc"])), "message": err["msg"]} for err in exc.errors()
        ]
        return _error(422, "invalid_request", detail)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's answer to a body its JSON parser fails on without a JSONDecodeError:
            # like bad JSON, a 422.
            message = (
                "nested too deeply"
                if isinstance(exc.__cause__, RecursionError)
                else "not a JSON document in UTF-8"
            )
            return _error(422, "invalid_request", [{"field": "body", "message": message}])
        error = _HTTP_ERRORS.get(exc.status_code, "error")
        return _error(exc.status_code, error, str(exc.detail), **(exc.headers or {}))

    _install_service_errors(app)
    _install_upload_errors(app)


def _install_upload_errors(app: FastAPI) -> None:
    """What can go wrong with an upload as a whole."""

    @app.exception_handler(uploads.RowsRefused)
    async def rows_refused(_: Request, exc: uploads.RowsRefused) -> JSONResponse:
        detail = [{"line": p.line, "field": p.field, "message": p.message} for p in exc.problems]
        return JSONResponse(
            status_code=422,
            content={"error": "invalid_request", "detail": detail, "invalid": exc.invalid},
        )

    @app.exception_handler(UnsupportedUpload)
    async def unsupported(_: Request, exc: UnsupportedUpload) -> JSONResponse:
        return _error(
            415, "unsupported_media_type", [{"field": "Content-Type", "message": str(exc)}]
        )

    @app.exception_handler(ClientDisconnect)
    async def disconnected(_: Request, exc: ClientDisconnect) -> JSONResponse:
        # Nobody reads this answer; what the request had begun is rolled back.
        log.info("the client went away before its request was read whole")
        return _error(400, "client_disconnected", "the request body ended early")


def _install_service_errors(app: FastAPI) -> None:
    """Our own errors from the services below the routes."""

    @app.exception_handler(Invalid)
    async def invalid_campaign(_: Request, exc: Invalid) -> JSONResponse:
        detail = [{"field": field, "message": message} for field, message in exc.problems]
        return _error(422, "invalid_request", detail)

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return _error(404, "not_found", str(exc))

    @app.exception_handler(Forbidden)
    async def forbidden(_: Request, exc: Forbidden) -> JSONResponse:
        return _error(403, "forbidden", [{"field": "userId", "message": str(exc)}])

    @app.exception_handler(Conflict)
    async def conflict(_: Request, exc: Conflict) -> JSONResponse:
        return _error(409, "conflict", str(exc))

    @app.exception_handler(TooLarge)
    async def too_large(_: Request, exc: TooLarge) -> JSONResponse:
        return _error(413, "too_large", [{"field": exc.field, "message": exc.message}])

    @app.exception_handler(TooManyRequests)
    async def too_many(_: Request, exc: TooManyRequests) -> JSONResponse:
        # Rounded up, and said once, so the header and the message agree, and a client
        # that waits as told is not refused again.
        retry_after = max(1, math.ceil(exc.retry_after))
        message = f"too many requests; retry after {retry_after} s"
        return _error(429, "too_many_requests", message, **{"Retry-After": str(retry_after)})

    @app.exception_handler(DataRefused)
    async def data_refused(_: Request, exc: DataRefused) -> JSONResponse:
        # Permanent: the same request would be refused again, so not a 503.
        log.warning("answering 422: %s", exc)
        detail = [{"field": "body", "message": "a value does not fit the database"}]
        return _error(422, "invalid_request", detail)

    @app.exception_handler(StoreUnavailable)
    @app.exception_handler(QueueUnavailable)
    async def unavailable(_: Request, exc: Exception) -> JSONResponse:
        log.warning("answering 503: %s", exc)
        return _error(
            503, "unavailable", "storage is unavailable; try again later", **{"Retry-After": "5"}
        )

    @app.exception_handler(StoreError)
    async def store_error(_: Request, exc: StoreError) -> JSONResponse:
        log.error("database error: %s", exc)
        return _error(
            503, "unavailable", "the database refused the request", **{"Retry-After": "5"}
        )
