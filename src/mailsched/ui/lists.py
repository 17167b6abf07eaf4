"""The suppressions and webhooks pages: list, add and remove, through the services the
API's routes call (:class:`~mailsched.producer.suppressions.Suppressions`,
:class:`~mailsched.webhooks.api.Webhooks`), and with the API's request models, so a
form is refused for the same reasons and in the same words as a request.

Every POST carries the session's CSRF token and ends in a 303, but the creation of
a webhook endpoint: its page shows the signing secret, this once, in the answer
itself (never in a URL; ``Cache-Control: no-store`` keeps it out of caches).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from mailsched.domain.events import EventType
from mailsched.errors import Conflict, Invalid, NotFound
from mailsched.producer.suppressions import SuppressionRequest, Suppressions
from mailsched.store.db import Database
from mailsched.store.ui_sessions import UiSession
from mailsched.ui.web import Pages, csrf_ok, form_fields, home, see_other
from mailsched.webhooks.api import Webhooks
from mailsched.webhooks.schemas import ALL, AttemptPage, WebhookCreated, WebhookRequest

PAGE_SIZE = 20
#: Attempts shown for one endpoint.
ATTEMPTS = 20
#: The longest cursor a page link carries (an address has at most 320 characters).
_MAX_CURSOR = 320

#: An id as the API's cursors and paths take it.
_ID = re.compile(r"[0-9]{1,18}")

_NOTICES = {
    "removed": "The address is no longer suppressed: mail may be sent to it again.",
    "not-suppressed": "That address was not suppressed.",
    "deleted": "The endpoint is deleted: nothing more is sent to it.",
}


def list_routes(pages: Pages, db: Database, *, allow_private_urls: bool) -> APIRouter:
    """``/ui/suppressions`` and ``/ui/webhooks``: ``allow_private_urls`` as the API's setting."""
    suppressions = _SuppressionPages(pages, Suppressions(db, pages.clock))
    webhooks = _WebhookPages(pages, Webhooks(db, pages.clock, allow_private_urls))
    router = APIRouter()
    router.add_api_route("/suppressions", suppressions.show, methods=["GET"])
    router.add_api_route("/suppressions", suppressions.add, methods=["POST"])
    router.add_api_route("/suppressions/remove", suppressions.remove, methods=["POST"])
    router.add_api_route("/webhooks", webhooks.show, methods=["GET"])
    router.add_api_route("/webhooks", webhooks.create, methods=["POST"])
    router.add_api_route("/webhooks/{webhook_id}/delete", webhooks.delete, methods=["POST"])
    return router


async def _posted(pages: Pages, request: Request) -> tuple[UiSession, dict[str, str]] | None:
    """The session and the form's fields, if the form carries the session's CSRF token."""
    session = await pages.signed_in(request)
    fields = await form_fields(request)
    if session is None or not csrf_ok(session, fields.get("csrf")):
        return None
    return session, fields


def _problems(exc: ValidationError) -> dict[str, str]:
    """The API's messages for a refused model, by top-level field."""
    found: dict[str, list[str]] = {}
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "body"
        found.setdefault(field, []).append(error["msg"])
    return {field: "; ".join(messages) for field, messages in found.items()}


def _cursor(after: str) -> str | None:
    return after[:_MAX_CURSOR] or None


def _ident(text: str) -> int | None:
    """An endpoint id given in ASCII digits, within the API's bounds (``"²"`` is a
    digit to ``str.isdigit`` but not to ``int``)."""
    return int(text) if _ID.fullmatch(text) else None


class _SuppressionPages:
    """The signed-in user's suppressed addresses: a page of them, add one, remove one."""

    def __init__(self, pages: Pages, suppressions: Suppressions) -> None:
        self._pages = pages
        self._suppressions = suppressions

    async def show(
        self, request: Request, after: str = "", notice: str = "", count: str = ""
    ) -> Response:
        session = await self._pages.signed_in(request)
        if session is None:
            return home()
        text = _added(notice, count) or _NOTICES.get(notice)
        return await self._render(session, after, notice=text)

    async def add(self, request: Request) -> Response:
        posted = await _posted(self._pages, request)
        if posted is None:
            return self._pages.forbidden()
        session, fields = posted
        address = fields.get("address", "")
        try:
            body = SuppressionRequest(address=address.strip())
        except ValidationError as exc:
            return await self._render(session, "", 422, address=address, errors=_problems(exc))
        added, answer = await self._suppressions.add(session.user_id, body)
        outcome = "added" if added else "again"
        return see_other(f"/ui/suppressions?notice={outcome}&count={answer.suppressed_deliveries}")

    async def remove(self, request: Request) -> Response:
        posted = await _posted(self._pages, request)
        if posted is None:
            return self._pages.forbidden()
        session, fields = posted
        removed = await self._suppressions.remove(session.user_id, fields.get("address", ""))
        return see_other(f"/ui/suppressions?notice={'removed' if removed else 'not-suppressed'}")

    async def _render(
        self,
        session: UiSession,
        after: str,
        status_code: int = 200,
        *,
        notice: str | None = None,
        address: str = "",
        errors: dict[str, str] | None = None,
    ) -> Response:
        cursor = _cursor(after)
        listing = await self._suppressions.page(session.user_id, cursor, PAGE_SIZE)
        return self._pages.page(
            "suppressions.html",
            status_code,
            section="suppressions",
            session=session,
            listing=listing,
            after=cursor,
            notice=notice,
            address=address,
            errors=errors or {},
        )


def _added(notice: str, count: str) -> str | None:
    """The notice after an add: how many waiting deliveries it suppressed."""
    if notice not in ("added", "again") or _ident(count) is None:
        return None
    n = int(count)
    moved = f"{n} pending {'delivery' if n == 1 else 'deliveries'} suppressed."
    if notice == "added":
        return f"Address suppressed; {moved}"
    return f"That address was already suppressed; {moved}"


class _WebhookPages:
    """The signed-in user's webhook endpoints: a page of them (with one endpoint's
    recent attempts on request), create one, delete one."""

    def __init__(self, pages: Pages, webhooks: Webhooks) -> None:
        self._pages = pages
        self._webhooks = webhooks

    async def show(
        self, request: Request, after: str = "", notice: str = "", attempts: str = ""
    ) -> Response:
        session = await self._pages.signed_in(request)
        if session is None:
            return home()
        recent, of = None, _ident(attempts)
        if attempts:
            if of is None:
                return self._pages.not_found(session)
            try:
                recent = await self._webhooks.attempts(session.user_id, of, None, ATTEMPTS)
            except NotFound:
                return self._pages.not_found(session)
        return await self._render(
            session,
            after,
            notice=_NOTICES.get(notice),
            attempts=recent,
            attempts_of=of,
        )

    async def create(self, request: Request) -> Response:
        posted = await _posted(self._pages, request)
        if posted is None:
            return self._pages.forbidden()
        session, fields = posted
        chosen = parse_qs((await request.body()).decode("utf-8", "replace")).get("events", [])
        form = {
            "url": fields.get("url", "").strip(),
            "description": fields.get("description", "").strip() or None,
            "events": chosen,
            "batch": "batch" in fields,
        }
        try:
            created = await self._webhooks.create(
                session.user_id, WebhookRequest.model_validate(form)
            )
        except ValidationError as exc:
            return await self._render(session, "", 422, form=form, errors=_problems(exc))
        except Invalid as exc:
            return await self._render(session, "", 422, form=form, errors=dict(exc.problems))
        except Conflict as exc:
            return await self._render(session, "", 409, form=form, problem=str(exc))
        return await self._render(session, "", 201, created=created)

    async def delete(self, request: Request, webhook_id: str) -> Response:
        posted = await _posted(self._pages, request)
        if posted is None:
            return self._pages.forbidden()
        session, _fields = posted
        ident = _ident(webhook_id)
        if ident is None:
            return self._pages.not_found(session)
        try:
            await self._webhooks.delete(session.user_id, ident)
        except NotFound:
            return self._pages.not_found(session)
        return see_other("/ui/webhooks?notice=deleted")

    async def _render(
        self,
        session: UiSession,
        after: str,
        status_code: int = 200,
        *,
        form: dict[str, Any] | None = None,
        errors: dict[str, str] | None = None,
        created: WebhookCreated | None = None,
        problem: str | None = None,
        notice: str | None = None,
        attempts: AttemptPage | None = None,
        attempts_of: int | None = None,
    ) -> Response:
        cursor = after if _ident(after) is not None else None
        listing = await self._webhooks.page(session.user_id, cursor, PAGE_SIZE)
        return self._pages.page(
            "webhooks.html",
            status_code,
            section="webhooks",
            session=session,
            listing=listing,
            after=cursor,
            form=form or {"url": "", "description": None, "events": [ALL], "batch": False},
            errors=errors or {},
            created=created,
            problem=problem,
            all_types=ALL,
            event_types=[t.value for t in EventType],
            notice=notice,
            attempts=attempts,
            attempts_of=attempts_of,
        )
