"""A campaign page's live feed: its recent events, and the event feed the page's
script follows to know when to fetch its live parts again.

Both read through the event feed's own code (:func:`mailsched.producer.events.feed`
and :func:`mailsched.store.events.latest`), so the page sees what a webhook or a
client of ``GET /api/v1/events`` sees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.events import Event
from mailsched.errors import NotFound
from mailsched.producer.events import feed
from mailsched.store import events as store
from mailsched.store.db import Database
from mailsched.ui.web import Pages, secured

#: An id or a cursor in a URL: ASCII digits within a BIGINT.
_ID = re.compile(r"[0-9]{1,18}")
#: Events the campaign page lists.
RECENT = 10
#: Events one poll of the page's script reads at most (it only needs to know of one).
POLL_LIMIT = 100


@dataclass(frozen=True, slots=True)
class Line:
    """One event as the page lists it."""

    type: str
    at: datetime
    recipient: str
    detail: str


@dataclass(frozen=True, slots=True)
class Recent:
    """The campaign's last events, newest first, and the feed's cursor to follow from."""

    lines: list[Line]
    cursor: int


async def recent(db: Database, user_id: int, campaign_id: int) -> Recent:
    """The campaign's last :data:`RECENT` events (the caller has checked that it is
    ``user_id``'s)."""

    async def work(conn: AsyncConnection) -> tuple[list[Event], int]:
        return await store.latest(conn, user_id, campaign_id, RECENT)

    found, cursor = await db.run(work)
    return Recent([_line(ev) for ev in found], cursor)


def _line(event: Event) -> Line:
    data = event.data
    reply = " ".join(str(data[k]) for k in ("smtpCode", "smtpReply") if data.get(k) is not None)
    detail = data.get("reason") or reply
    if not detail and data.get("attempt"):
        detail = f"attempt {data['attempt']}"
    return Line(event.type, event.occurred_at, str(data.get("recipient") or ""), str(detail))


def live_routes(pages: Pages, db: Database) -> APIRouter:
    """``/ui/data/events``: whether a campaign has new events since a cursor."""
    router = APIRouter()

    @router.get("/data/events")
    async def campaign_events(request: Request, campaign: str = "", after: str = "") -> Response:
        session = await pages.signed_in(request)
        if session is None:
            return secured(JSONResponse({"error": "not signed in"}, status_code=401))
        if not (_ID.fullmatch(campaign) and _ID.fullmatch(after)):
            return secured(JSONResponse({"error": "campaign and after: digits"}, status_code=422))
        try:
            page = await feed(db, session.user_id, int(after), POLL_LIMIT, (), int(campaign))
        except NotFound:
            return secured(JSONResponse({"error": "no such campaign"}, status_code=404))
        return secured(JSONResponse({"count": len(page.items), "nextCursor": page.next_cursor}))

    return router
