"""The REST API: an app factory, its routes, and the mapping of our errors to HTTP."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mailsched import __version__
from mailsched.domain.model import DeliveryStatus
from mailsched.errors import NotFound, QueueUnavailable, StoreError, StoreUnavailable
from mailsched.metrics import Metrics
from mailsched.producer.campaigns import Campaigns
from mailsched.producer.schemas import (
    CampaignCreated,
    CampaignRequest,
    CampaignView,
    DeliveryPage,
    ErrorBody,
    RetryStarted,
)

log = logging.getLogger(__name__)

_CHECK_TIMEOUT = 3.0

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such campaign"},
    422: {"model": ErrorBody, "description": "Invalid input; each bad field is named"},
    503: {"model": ErrorBody, "description": "The database or queue cannot be reached"},
}


#: A readiness check: returns when its dependency answers, raises when it does not.
Check = Callable[[], Awaitable[None]]


def create_app(
    campaigns: Campaigns,
    *,
    on_created: Callable[[], None] | None = None,
    checks: Mapping[str, Check] | None = None,
    metrics: Metrics | None = None,
) -> FastAPI:
    """The API over ``campaigns``.

    ``on_created`` is called after each new campaign; ``checks`` back ``/readyz``;
    ``metrics`` is served at ``/metrics``.
    """
    app = FastAPI(
        title="mailsched",
        version=__version__,
        description="Schedule email campaigns; delivered on time, within their limits.",
    )
    app.include_router(_campaign_routes(campaigns, on_created or (lambda: None)))
    app.include_router(_operations_routes(checks or {}, metrics or Metrics()))
    _install_error_handlers(app)
    return app


def _operations_routes(checks: Mapping[str, Check], metrics: Metrics) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @router.get("/readyz", responses={503: {"description": "A dependency cannot be reached"}})
    async def readyz() -> JSONResponse:
        """Whether the database (and Kafka, when configured) can be reached now."""
        results = await asyncio.gather(
            *(asyncio.wait_for(check(), _CHECK_TIMEOUT) for check in checks.values()),
            return_exceptions=True,
        )
        report = {
            name: "ok" if not isinstance(result, BaseException) else f"unavailable: {result}"
            for name, result in zip(checks, results, strict=True)
        }
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


def _campaign_routes(campaigns: Campaigns, on_created: Callable[[], None]) -> APIRouter:
    router = APIRouter(prefix="/api/v1/email", tags=["campaigns"], responses=_ERRORS)

    @router.post("/campaign", status_code=status.HTTP_201_CREATED)
    async def create_campaign(request: CampaignRequest) -> CampaignCreated:
        """Store a campaign and plan one delivery per (distinct) recipient."""
        created = await campaigns.create(request)
        log.info("campaign %d created: %d recipients", created.campaign_id, created.recipient_count)
        on_created()
        return created

    @router.get("/campaign/{campaign_id}")
    async def get_campaign(campaign_id: int) -> CampaignView:
        """The campaign, its status, counts per delivery status, planned and actual sends."""
        return await campaigns.get(campaign_id)

    @router.post("/campaign/{campaign_id}/retry-failed")
    async def retry_failed(campaign_id: int) -> RetryStarted:
        """Give the campaign's FAILED deliveries new attempts, planned from now."""
        started = await campaigns.retry_failed(campaign_id)
        log.info("campaign %d: %d failed deliveries retried", campaign_id, started.retried)
        on_created()
        return started

    @router.get("/campaign/{campaign_id}/deliveries")
    async def list_deliveries(
        campaign_id: int,
        status: DeliveryStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,19}$")] = None,
    ) -> DeliveryPage:
        """Per recipient: planned time, status, attempts, send time and last error."""
        return await campaigns.deliveries(campaign_id, status, int(cursor or 0), limit)

    return router


def _field(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = [
            {"field": _field(tuple(err["loc"])), "message": err["msg"]} for err in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"error": "invalid_request", "detail": detail})

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse(status_code=404, content={"error": "not_found", "detail": str(exc)})

    @app.exception_handler(StoreUnavailable)
    @app.exception_handler(QueueUnavailable)
    async def unavailable(_: Request, exc: Exception) -> JSONResponse:
        log.warning("answering 503: %s", exc)
        return JSONResponse(
            status_code=503,
            headers={"Retry-After": "5"},
            content={"error": "unavailable", "detail": "storage is unavailable; try again later"},
        )

    @app.exception_handler(StoreError)
    async def store_error(_: Request, exc: StoreError) -> JSONResponse:
        log.error("database error: %s", exc)
        return JSONResponse(
            status_code=503,
            headers={"Retry-After": "5"},
            content={"error": "unavailable", "detail": "the database refused the request"},
        )
