"""The webhook endpoints API: create, list and delete endpoints, and see their attempts.

One router factory, :func:`webhook_routes`, mounted by the app factory, over
:class:`Webhooks`, which the dashboard calls too. Endpoints
and attempts belong to the API key's user; another user's are a 404, as a missing
one is. The secret is shown once, in the answer to the creation.

No ``from __future__ import annotations``: FastAPI reads these annotations, and
the caller alias is local to its factory.
"""

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response, status
from pydantic import BeforeValidator
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.config import WebhookConfig
from mailsched.errors import Conflict, Invalid, NotFound, UnsafeUrl
from mailsched.producer.api import Cursor, PageLimit, digits
from mailsched.producer.auth import Caller
from mailsched.producer.schemas import ERROR_RESPONSES, MAX_ID
from mailsched.store import webhooks as store
from mailsched.store.db import Database
from mailsched.webhooks import signing, urls
from mailsched.webhooks.schemas import (
    AttemptPage,
    WebhookCreated,
    WebhookPage,
    WebhookRequest,
    attempt_item,
    webhook_item,
)

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

#: Endpoints per user: each one multiplies the fan-out of every event.
MAX_ENDPOINTS = 50

WebhookId = Annotated[int, Path(ge=1, le=MAX_ID), BeforeValidator(digits)]


class Webhooks:
    """The caller's webhook endpoints, for the API's routes and the dashboard alike.
    ``allow_private_urls`` lifts the URL check's address rule (see :mod:`urls`)."""

    def __init__(self, db: Database, clock: Clock, allow_private_urls: bool) -> None:
        self._db = db
        self._clock = clock
        self._allow_private_urls = allow_private_urls

    async def create(self, user_id: int, body: WebhookRequest) -> WebhookCreated:
        """A new endpoint with its secret. :class:`Invalid` naming ``url`` if the URL may
        not be called; :class:`Conflict` past :data:`MAX_ENDPOINTS`."""
        try:
            await urls.check(body.url, self._allow_private_urls)
        except UnsafeUrl as exc:
            raise Invalid([("url", str(exc))]) from None
        secret = signing.new_secret()
        now = self._clock()

        async def work(conn: AsyncConnection) -> store.Endpoint:
            if await store.live_count(conn, user_id) >= MAX_ENDPOINTS:
                raise Conflict(f"at most {MAX_ENDPOINTS} webhook endpoints per user")
            return await store.add_endpoint(
                conn, user_id, body.url, body.description, body.types(), secret, body.batch, now
            )

        endpoint = await self._db.run(work)
        log.info("user %d: webhook endpoint %d created", user_id, endpoint.id)
        return WebhookCreated(**webhook_item(endpoint).model_dump(), secret=secret)

    async def page(self, user_id: int, cursor: str | None, limit: int) -> WebhookPage:
        """The user's endpoints, oldest first, after ``cursor`` (an endpoint id)."""

        async def work(conn: AsyncConnection) -> list[store.Endpoint]:
            return await store.page(conn, user_id, int(cursor or 0), limit + 1)

        rows = await self._db.run(work)
        more = len(rows) > limit
        rows = rows[:limit]
        return WebhookPage(
            items=[webhook_item(r) for r in rows], next_cursor=str(rows[-1].id) if more else None
        )

    async def attempts(
        self, user_id: int, webhook_id: int, cursor: str | None, limit: int
    ) -> AttemptPage:
        """The endpoint's attempts, newest first; :class:`NotFound` if it is not the user's."""

        async def work(conn: AsyncConnection) -> list[store.Attempt] | None:
            if await store.find(conn, user_id, webhook_id) is None:
                return None
            before = int(cursor) if cursor else None
            return await store.attempts_page(conn, webhook_id, before, limit + 1)

        rows = await self._db.run(work)
        if rows is None:
            raise NotFound("no such webhook endpoint")
        more = len(rows) > limit
        rows = rows[:limit]
        return AttemptPage(
            items=[attempt_item(a) for a in rows], next_cursor=str(rows[-1].id) if more else None
        )

    async def delete(self, user_id: int, webhook_id: int) -> None:
        """Delete the endpoint; :class:`NotFound` if the user has no such endpoint."""
        now = self._clock()

        async def work(conn: AsyncConnection) -> bool:
            return await store.delete_endpoint(conn, user_id, webhook_id, now)

        if not await self._db.run(work):
            raise NotFound("no such webhook endpoint")
        log.info("user %d: webhook endpoint %d deleted", user_id, webhook_id)


def webhook_routes(
    db: Database, caller: Callable[..., Awaitable[Caller]], clock: Clock, config: WebhookConfig
) -> APIRouter:
    """``/api/v1/webhooks``: the caller's webhook endpoints and their recent attempts."""
    router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"], responses=ERROR_RESPONSES)
    CallerDep = Annotated[Caller, Depends(caller)]
    webhooks = Webhooks(db, clock, config.allow_private_urls)

    @router.post("", status_code=status.HTTP_201_CREATED)
    async def create_webhook(body: WebhookRequest, who: CallerDep) -> WebhookCreated:
        """Add an endpoint: events of the given types are POSTed to ``url``, signed
        with the returned secret (Standard Webhooks). The secret is shown only here.

        The URL must be http(s), without a user name or password, and its host must
        resolve to public addresses only (422 naming ``url`` otherwise).
        """
        return await webhooks.create(who.user_id, body)

    @router.get("")
    async def list_webhooks(
        who: CallerDep, limit: PageLimit = 100, cursor: Cursor = None
    ) -> WebhookPage:
        """The caller's endpoints, oldest first (secrets are never shown again)."""
        return await webhooks.page(who.user_id, cursor, limit)

    @router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
    async def delete_webhook(webhook_id: WebhookId, who: CallerDep) -> Response:
        """Delete the endpoint: nothing more is sent to it, and what waits is dropped."""
        await webhooks.delete(who.user_id, webhook_id)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @router.get("/{webhook_id}/attempts")
    async def list_attempts(
        webhook_id: WebhookId, who: CallerDep, limit: PageLimit = 100, cursor: Cursor = None
    ) -> AttemptPage:
        """The endpoint's requests of the last seven days, newest first."""
        return await webhooks.attempts(who.user_id, webhook_id, cursor, limit)

    return router
