"""The API's request and response bodies, in the specification's camelCase."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    model_validator,
)
from pydantic.alias_generators import to_camel

from mailsched.domain.model import CampaignStatus, DeliveryStatus

MAX_DELAY_SECONDS = 86_400


def _email(value: str) -> str:
    if len(value) > 320:
        raise ValueError("an address has at most 320 characters")
    try:
        address = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from exc
    # RFC 5321 4.5.3.1.1; email-validator lets longer local parts through.
    if len(address.local_part.encode()) > 64:
        raise ValueError("the part before the @-sign has at most 64 octets")
    return address.normalized


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _one_line(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("must not contain CR or LF")
    return value


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class CampaignRequest(_Camel):
    """``POST /api/v1/email/campaign``: exactly the specification's body."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=False, extra="forbid", str_strip_whitespace=False
    )

    user_id: int = Field(ge=1, strict=True)
    subject: Annotated[str, Field(min_length=1, max_length=998), AfterValidator(_one_line)]
    body: str = Field(min_length=1)
    start_time: Annotated[AwareDatetime, AfterValidator(_utc)]
    delay_seconds: int = Field(ge=0, le=MAX_DELAY_SECONDS, strict=True)
    hourly_limit: int = Field(ge=1, strict=True)
    recipients: list[Annotated[str, AfterValidator(_email)]] = Field(min_length=1)

    _duplicates: int = PrivateAttr(default=0)

    @model_validator(mode="after")
    def _drop_duplicates(self) -> CampaignRequest:
        seen: set[str] = set()
        unique: list[str] = []
        for address in self.recipients:
            key = address.casefold()
            if key not in seen:
                seen.add(key)
                unique.append(address)
        self._duplicates = len(self.recipients) - len(unique)
        self.recipients = unique
        return self

    @property
    def duplicates_dropped(self) -> int:
        return self._duplicates


class CampaignCreated(_Camel):
    """The 201 answer to a new campaign; the send times are the planned ones."""

    campaign_id: int
    status: CampaignStatus
    recipient_count: int
    duplicates_dropped: int
    first_send_at: datetime
    last_send_at: datetime


class CampaignView(_Camel):
    """``GET /api/v1/email/campaign/{id}``."""

    campaign_id: int
    user_id: int
    subject: str
    status: CampaignStatus
    start_time: datetime
    delay_seconds: int
    hourly_limit: int
    recipient_count: int
    counts: dict[DeliveryStatus, int]
    planned_first_send_at: datetime | None
    planned_last_send_at: datetime | None
    first_sent_at: datetime | None
    last_sent_at: datetime | None
    #: Sends whose outcome is uncertain: the worker died or the connection broke
    #: after the message went out. Each may have reached the recipient twice.
    possible_duplicates: int
    created_at: datetime
    completed_at: datetime | None


class DeliveryItem(_Camel):
    """One recipient's delivery."""

    delivery_id: int
    recipient: str
    scheduled_at: datetime
    status: DeliveryStatus
    attempts: int
    sent_at: datetime | None
    last_error: str | None


class DeliveryPage(_Camel):
    """A page of deliveries; pass ``nextCursor`` as ``cursor`` for the next one."""

    items: list[DeliveryItem]
    next_cursor: str | None


class RetryStarted(_Camel):
    """The answer to a retry of a campaign's failed deliveries."""

    campaign_id: int
    retried: int


class FieldError(BaseModel):
    """One reason a request was refused."""

    field: str
    message: str


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer."""

    error: str
    detail: str | list[FieldError]
