"""The event feed: ``GET /api/v1/events``, the caller's events in the order they happened.

Like Stripe's events API, a client polls with the cursor of its last page and never
misses an event: ids become visible in increasing order (see
:mod:`mailsched.store.events`), so everything after a returned id is either on a
later page or not yet written. ``nextCursor`` is never null: it is the last
returned event's id, or, on an empty page, the ``after`` that was given (``"0"``
at the start). A client stores it and passes it back as ``after``, for ever.

No ``from __future__ import annotations``: FastAPI reads these annotations, and the
caller alias is local to the factory.
"""

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, BeforeValidator, ConfigDict, WithJsonSchema
from pydantic.alias_generators import to_camel
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.domain.events import Event, EventType
from mailsched.errors import Invalid, NotFound
from mailsched.producer.api import PageLimit, digits
from mailsched.producer.auth import Caller
from mailsched.producer.schemas import ERROR_RESPONSES, MAX_ID
from mailsched.store import campaigns as campaign_store
from mailsched.store import events as store
from mailsched.store.db import Database

_TYPES = ", ".join(t.value for t in EventType)


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class EventItem(_Camel):
    """One event: the body a webhook receives, with its id."""

    #: Increases in the order events became visible; the feed's cursor.
    event_id: int
    type: EventType
    #: When the change happened: RFC 3339 in UTC, with milliseconds.
    timestamp: Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
    #: ``campaignId``, ``deliveryId``, ``recipient``, ``attempt``, and what the type adds.
    data: dict[str, Any]


class EventPage(_Camel):
    """A page of events, oldest first; pass ``nextCursor`` as ``after`` for what follows."""

    items: list[EventItem]
    #: Never null: where the next page starts. The last item's id on a full page;
    #: otherwise the last event id looked through (past events of other users or
    #: types, never past one not yet visible), or the ``after`` given.
    next_cursor: str


def parse_types(values: Sequence[str]) -> list[str]:
    """``type`` parameters, each one type or several separated by commas; refuses
    unknown ones with a 422 naming ``type``."""
    known = {t.value for t in EventType}
    types = [part.strip() for value in values for part in value.split(",")]
    unknown = [t for t in types if t not in known]
    if unknown:
        raise Invalid([("type", f"unknown event type {unknown[0]!r}; the types: {_TYPES}")])
    return list(dict.fromkeys(types))


def page_of(events: Sequence[Event], cursor: int) -> EventPage:
    """The answer for ``events``, the next page starting after ``cursor``."""
    return EventPage(
        items=[EventItem.model_validate(ev.item()) for ev in events],
        next_cursor=str(cursor),
    )


async def feed(
    db: Database,
    user_id: int,
    after: int,
    limit: int,
    types: Sequence[str] = (),
    campaign_id: int | None = None,
) -> EventPage:
    """The user's events after ``after`` (of ``campaign_id`` only, if given: another
    user's campaign is :class:`NotFound`)."""

    async def work(conn: AsyncConnection) -> tuple[list[Event], int]:
        if campaign_id is not None:
            campaign = await campaign_store.get_campaign(conn, campaign_id)
            if campaign is None or campaign.user_id != user_id:
                raise NotFound(f"campaign {campaign_id} not found")
        return await store.page(conn, user_id, after, limit, types, campaign_id)

    return page_of(*await db.run(work))


def event_routes(db: Database, caller: Callable[..., Awaitable[Caller]]) -> APIRouter:
    """``/api/v1/events``: the caller's event feed."""
    router = APIRouter(prefix="/api/v1/events", tags=["events"], responses=ERROR_RESPONSES)
    CallerDep = Annotated[Caller, Depends(caller)]

    @router.get("")
    async def list_events(
        who: CallerDep,
        after: Annotated[
            str | None,
            Query(
                pattern=r"^[0-9]{1,18}$",
                description="Only events after this one: a previous page's nextCursor.",
            ),
        ] = None,
        limit: PageLimit = 100,
        types: Annotated[
            list[str] | None,
            Query(
                alias="type",
                description=f"Only these types; repeat it, or separate with commas: {_TYPES}.",
            ),
        ] = None,
        campaign_id: Annotated[
            int | None,
            Query(alias="campaignId", ge=1, le=MAX_ID, description="Only this campaign's."),
            BeforeValidator(digits),
        ] = None,
    ) -> EventPage:
        """The caller's events after ``after``, oldest first.

        A campaign that is not the caller's is a 404, as everywhere else.
        """
        wanted = parse_types(types or [])
        return await feed(db, who.user_id, int(after or 0), limit, wanted, campaign_id)

    return router
