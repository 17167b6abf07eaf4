"""The REST API: an app factory, its routes, and the mapping of our errors to HTTP."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from mailsched import __version__
from mailsched.domain.model import DeliveryStatus
from mailsched.errors import NotFound, QueueUnavailable, StoreError, StoreUnavailable
from mailsched.producer.campaigns import Campaigns
from mailsched.producer.schemas import (
    CampaignCreated,
    CampaignRequest,
    CampaignView,
    DeliveryPage,
    ErrorBody,
)

log = logging.getLogger(__name__)

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such campaign"},
    422: {"model": ErrorBody, "description": "Invalid input; each bad field is named"},
    503: {"model": ErrorBody, "description": "The database or queue cannot be reached"},
}


def create_app(campaigns: Campaigns, on_created: Callable[[], None] | None = None) -> FastAPI:
    """The API over ``campaigns``; ``on_created`` is called after each new campaign."""
    app = FastAPI(
        title="mailsched",
        version=__version__,
        description="Schedule email campaigns; delivered on time, within their limits.",
    )
    app.include_router(_campaign_routes(campaigns, on_created or (lambda: None)))
    _install_error_handlers(app)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    return app


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
