"""The webhook API's request and response bodies, in camelCase."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from mailsched.domain.events import EventType
from mailsched.errors import UnsafeUrl
from mailsched.store.webhooks import Attempt, Endpoint
from mailsched.webhooks import urls

#: Every event type, including those added later.
ALL = "*"
_TYPES = frozenset(t.value for t in EventType)


def _url(value: str) -> str:
    try:
        urls.parse(value)
    except UnsafeUrl as exc:
        raise ValueError(str(exc)) from None
    return value


def _event_type(value: str) -> str:
    if value != ALL and value not in _TYPES:
        raise ValueError(f"unknown event type; one of {', '.join(sorted(_TYPES))}, or {ALL}")
    return value


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class WebhookRequest(_Camel):
    """``POST /api/v1/webhooks``."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=False, extra="forbid")

    url: Annotated[str, Field(min_length=1), AfterValidator(_url)]
    #: Event types to send; ``["*"]`` (the default) for all, including later ones.
    events: Annotated[
        list[Annotated[str, AfterValidator(_event_type)]], Field(min_length=1, max_length=100)
    ] = [ALL]
    description: Annotated[str | None, Field(max_length=500)] = None
    #: Up to 500 events per request (see ``mailsched.webhooks.payloads``).
    batch: Annotated[bool, Field(strict=True)] = False

    def types(self) -> list[str] | None:
        """The subscribed types, each once, or ``None`` for all."""
        if ALL in self.events:
            return None
        return list(dict.fromkeys(self.events))


class WebhookItem(_Camel):
    """A webhook endpoint (never its secret)."""

    webhook_id: int
    url: str
    events: list[str]
    description: str | None
    batch: bool
    created_at: datetime
    #: Set when the endpoint answered 410 Gone: nothing is sent to it any more.
    disabled_at: datetime | None
    disabled_reason: str | None


class WebhookCreated(WebhookItem):
    """A new endpoint, with its signing secret: shown this once."""

    secret: str


class WebhookPage(_Camel):
    """A page of endpoints, oldest first; pass ``nextCursor`` as ``cursor`` for the next."""

    items: list[WebhookItem]
    next_cursor: str | None


class AttemptItem(_Camel):
    """One request made to an endpoint."""

    attempt_id: int
    #: The request's ``webhook-id`` header: the event id, or ``batch_<key>``.
    message_id: str
    #: The (first) event the request carried, and how many it carried.
    event_id: int
    event_count: int
    attempted_at: datetime
    #: The receiver's HTTP status, if it answered.
    status_code: int | None
    duration_ms: int
    #: Why the request failed without a status (timeout, refused address, …), or
    #: that the message was given up.
    error: str | None


class AttemptPage(_Camel):
    """A page of attempts, newest first; pass ``nextCursor`` as ``cursor`` for the next."""

    items: list[AttemptItem]
    next_cursor: str | None


def webhook_item(endpoint: Endpoint) -> WebhookItem:
    """An endpoint as the API shows it."""
    return WebhookItem(
        webhook_id=endpoint.id,
        url=endpoint.url,
        events=[ALL] if endpoint.event_types is None else list(endpoint.event_types),
        description=endpoint.description,
        batch=endpoint.batch,
        created_at=endpoint.created_at,
        disabled_at=endpoint.disabled_at,
        disabled_reason=endpoint.disabled_reason,
    )


def attempt_item(attempt: Attempt) -> AttemptItem:
    """An attempt as the API shows it."""
    return AttemptItem(
        attempt_id=attempt.id,
        message_id=attempt.message_id,
        event_id=attempt.event_id,
        event_count=attempt.event_count,
        attempted_at=attempt.attempted_at,
        status_code=attempt.status_code,
        duration_ms=attempt.duration_ms,
        error=attempt.error,
    )
