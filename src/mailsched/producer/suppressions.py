"""The suppression list API, and the unsubscribe links recipients follow.

Two router factories, mounted by the app factory: :func:`suppression_routes` (a
caller manages their own list, behind the API key, through :class:`Suppressions`,
which the dashboard calls too) and :func:`unsubscribe_routes`
(public: the signed token in the URL is the credential). Both suppress the
address's deliveries not yet claimed, in every campaign of the user, in the same
transaction as the suppression itself.

No ``from __future__ import annotations``: FastAPI reads these annotations, and
the caller alias is local to its factory.
"""

import html
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.producer.addresses import normalize_address
from mailsched.producer.auth import Caller
from mailsched.producer.schemas import ERROR_RESPONSES, ErrorBody
from mailsched.store import suppressions as store
from mailsched.store import transitions
from mailsched.store.db import Database
from mailsched.unsubscribe import InvalidToken, UnsubscribeSigner

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: Why an address is suppressed.
MANUAL, UNSUBSCRIBE = "manual", "unsubscribe"

_PAGE_HEADERS = {
    # The token is in the URL: it must not leak to other sites or caches.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "X-Frame-Options": "DENY",
}


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class SuppressionRequest(BaseModel):
    """``POST /api/v1/email/suppressions``."""

    model_config = ConfigDict(extra="forbid")

    address: Annotated[str, Field(min_length=1), AfterValidator(normalize_address)]


class SuppressionItem(_Camel):
    """One suppressed address (stored lower-cased)."""

    address: str
    #: Where it came from: ``manual`` (the API or the dashboard), ``unsubscribe``,
    #: ``bounce`` or ``complaint``.
    reason: str
    created_at: datetime
    #: What was reported (a bounce's status and diagnostic), if anything.
    detail: str | None = None
    #: When it stops applying (a bounce's, by MAILSCHED_BOUNCE_SUPPRESSION_DAYS);
    #: null: never.
    expires_at: datetime | None = None


class SuppressionPage(_Camel):
    """A page of suppressions in address order; pass ``nextCursor`` as ``cursor``."""

    items: list[SuppressionItem]
    next_cursor: str | None


class SuppressionAdded(SuppressionItem):
    """The answer to a new suppression."""

    #: Deliveries to the address not yet claimed by a worker, now SUPPRESSED.
    suppressed_deliveries: int


def _stored_form(address: str) -> str:
    """``address`` normalized as recipients are; as given if it does not validate (it may
    have been stored under rules since tightened)."""
    try:
        return normalize_address(address)
    except ValueError:
        return address


def _not_found(detail: str) -> JSONResponse:
    return JSONResponse(status_code=404, content={"error": "not_found", "detail": detail})


async def _suppress(
    db: Database, user_id: int, address: str, reason: str, now: datetime
) -> tuple[bool, int]:
    async def work(conn: AsyncConnection) -> tuple[bool, int]:
        added = await store.add(conn, user_id, address, reason, now)
        if added and reason == UNSUBSCRIBE:
            transitions.stage_unsubscribed(conn, user_id, store.normalize(address), now)
        elif added:
            transitions.stage_suppressed(conn, user_id, store.normalize(address), reason, None, now)
        return added, await store.suppress_pending(conn, user_id, address, now)

    return await db.run(work)


class Suppressions:
    """The caller's suppression list, for the API's routes and the dashboard alike:
    each method is one transaction."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def page(self, user_id: int, cursor: str | None, limit: int) -> SuppressionPage:
        """The user's suppressed addresses in address order, after ``cursor``."""

        async def work(conn: AsyncConnection) -> list[store.Suppression]:
            return await store.page(conn, user_id, cursor, limit + 1, self._clock())

        rows = await self._db.run(work)
        more = len(rows) > limit
        rows = rows[:limit]
        return SuppressionPage(
            items=[
                SuppressionItem(
                    address=r.address,
                    reason=r.reason,
                    created_at=r.created_at,
                    detail=r.detail,
                    expires_at=r.expires_at,
                )
                for r in rows
            ],
            next_cursor=rows[-1].address if more else None,
        )

    async def add(self, user_id: int, body: SuppressionRequest) -> tuple[bool, SuppressionAdded]:
        """Suppress the address; whether it is new, and what was done. The address's
        deliveries not yet claimed by a worker, in every campaign of the user, become
        SUPPRESSED in the same transaction."""
        now = self._clock()
        added, moved = await _suppress(self._db, user_id, body.address, MANUAL, now)
        log.info("user %d: suppression added, %d deliveries suppressed", user_id, moved)
        return added, SuppressionAdded(
            address=store.normalize(body.address),
            reason=MANUAL,
            created_at=now,
            suppressed_deliveries=moved,
        )

    async def remove(self, user_id: int, address: str) -> bool:
        """Allow mail to ``address`` again; false if it was not suppressed."""
        key = _stored_form(address)

        async def work(conn: AsyncConnection) -> bool:
            return await store.remove(conn, user_id, key)

        return await self._db.run(work)


def suppression_routes(
    db: Database, caller: Callable[..., Awaitable[Caller]], clock: Clock
) -> APIRouter:
    """``/api/v1/email/suppressions``: list, add and remove the caller's suppressed addresses."""
    router = APIRouter(
        prefix="/api/v1/email/suppressions", tags=["suppressions"], responses=ERROR_RESPONSES
    )
    CallerDep = Annotated[Caller, Depends(caller)]
    suppressions = Suppressions(db, clock)

    @router.get("")
    async def list_suppressions(
        who: CallerDep,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(min_length=1, max_length=320)] = None,
    ) -> SuppressionPage:
        """The caller's suppressed addresses, in address order."""
        return await suppressions.page(who.user_id, cursor, limit)

    @router.post("", status_code=status.HTTP_201_CREATED)
    async def add_suppression(
        body: SuppressionRequest, who: CallerDep, response: Response
    ) -> SuppressionAdded:
        """Never mail this address again: 201, or 200 if it was suppressed already.

        The address's deliveries not yet claimed by a worker, in every campaign of
        the caller, become SUPPRESSED.
        """
        added, answer = await suppressions.add(who.user_id, body)
        if not added:
            response.status_code = status.HTTP_200_OK
        return answer

    @router.delete(
        # :path, because a local part may hold a "/".
        "/{address:path}",
        status_code=status.HTTP_204_NO_CONTENT,
        response_class=Response,
    )
    async def remove_suppression(address: str, who: CallerDep) -> Response:
        """Allow mail to this address again (deliveries already SUPPRESSED stay so)."""
        if not await suppressions.remove(who.user_id, address):
            return _not_found("this address is not suppressed")
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    return router


def unsubscribe_routes(db: Database, signer: UnsubscribeSigner, clock: Clock) -> APIRouter:
    """``/unsubscribe/{token}``: the page a recipient opens (GET) and the one-click POST
    (RFC 8058) that mail clients send. No API key: the signed token is the credential."""
    router = APIRouter(
        prefix="/unsubscribe",
        tags=["unsubscribe"],
        responses={
            404: {"model": ErrorBody, "description": "The link is not valid"},
            422: ERROR_RESPONSES[422],
        },
    )

    @router.get("/{token}", response_class=HTMLResponse)
    async def unsubscribe_page(token: str) -> HTMLResponse:
        """A page with one button. Opening it changes nothing: mail scanners follow links."""
        try:
            _user_id, address = signer.verify(token)
        except InvalidToken:
            return _page(404, "This unsubscribe link is not valid.")
        return _page(
            200,
            f"Stop emails to <strong>{html.escape(address)}</strong>?",
            '<form method="post"><button type="submit" name="List-Unsubscribe" '
            'value="One-Click">Unsubscribe</button></form>',
        )

    @router.post("/{token}")
    async def unsubscribe(token: str, request: Request) -> Response:
        """Unsubscribe the address the token names from its sender's mail.

        Takes the RFC 8058 body ``List-Unsubscribe=One-Click`` or any other (it is
        not needed: the token decides). Answers HTML to a browser, JSON otherwise.
        """
        browser = "text/html" in request.headers.get("accept", "")
        try:
            user_id, address = signer.verify(token)
        except InvalidToken:
            if browser:
                return _page(404, "This unsubscribe link is not valid.")
            return _not_found("unknown or invalid unsubscribe link")
        _added, moved = await _suppress(db, user_id, address, UNSUBSCRIBE, clock())
        log.info("user %d: recipient unsubscribed, %d deliveries suppressed", user_id, moved)
        if browser:
            return _page(200, "You are unsubscribed. You will not get these emails again.")
        return JSONResponse({"status": "unsubscribed"})

    return router


def _page(status_code: int, message: str, form: str = "") -> HTMLResponse:
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>Unsubscribe</title></head>"
        '<body style="font-family:sans-serif;max-width:32em;margin:3em auto">'
        f"<p>{message}</p>{form}</body></html>"
    )
    return HTMLResponse(body, status_code=status_code, headers=_PAGE_HEADERS)
