"""The API's request and response bodies, in the specification's camelCase."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from mailsched.domain.calendar import (
    DAY,
    RECIPIENT,
    WEEKDAYS,
    Schedule,
    Window,
    clock_seconds,
    clock_text,
    zone_names,
)
from mailsched.domain.model import CampaignStatus, DeliveryStatus
from mailsched.mail.headers import header_break, header_text
from mailsched.producer.addresses import normalize_address

MAX_DELAY_SECONDS = 86_400
#: The largest id (and userId) the database's 64-bit keys hold.
MAX_ID = 2**63 - 1
#: More sends an hour than any server takes: in effect no limit.
MAX_HOURLY_LIMIT = 1_000_000_000


def _email(value: str) -> str:
    return normalize_address(value)


_Scalar = str | int | float | bool
_MAX_VARS = 50
_MAX_VAR_TEXT = 1000
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True, slots=True)
class Recipient:
    """One recipient: the address, and optionally a name and template variables."""

    email: str
    name: str | None = None
    vars: dict[str, _Scalar] | None = None
    #: The recipient's own IANA zone, for a schedule in each recipient's zone.
    timezone: str | None = None


def _recipient(value: object) -> Recipient:
    """A recipient from either form the API takes: ``"a@b.c"`` or
    ``{email, name?, vars?, timezone?}``."""
    if isinstance(value, Recipient):
        return value
    if isinstance(value, str):
        return Recipient(_email(value))
    if not isinstance(value, dict):
        raise ValueError("must be an address, or an object {email, name?, vars?}")
    unknown = set(value) - {"email", "name", "vars", "timezone"}
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}; allowed: email, name, vars, timezone")
    address = value.get("email")
    if not isinstance(address, str):
        raise ValueError("email: an address is required")
    return Recipient(
        _email(address),
        _name(value.get("name")),
        _vars(value.get("vars")),
        _zone(value.get("timezone"), "timezone: "),
    )


def _zone(value: object, what: str = "") -> str | None:
    """An IANA zone name the ``tzdata`` package holds, or ``None``."""
    if value is None:
        return None
    if not isinstance(value, str) or value not in zone_names():
        raise ValueError(
            f"{what}unknown time zone {value!r}; use an IANA name such as Europe/Berlin"
        )
    return value


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _name(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= 200:
        raise ValueError("name: a string of 1 to 200 characters")
    if _CONTROL.search(value) or header_break(value):
        raise ValueError("name: must not contain control characters (CR, LF, ...)")
    return value


def _vars(value: object) -> dict[str, _Scalar] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > _MAX_VARS:
        raise ValueError(f"vars: an object of at most {_MAX_VARS} variables")
    for key, item in value.items():
        if not isinstance(key, str) or not _VAR_NAME.fullmatch(key):
            raise ValueError(f"vars: {key!r} is not a variable name (letters, digits, _)")
        if not isinstance(item, str | int | float | bool) or (
            isinstance(item, str) and len(item) > _MAX_VAR_TEXT
        ):
            raise ValueError(f"vars.{key}: a string (at most {_MAX_VAR_TEXT}), number or bool")
    return dict(value)


_RECIPIENT_SCHEMA = {
    "anyOf": [
        {"type": "string", "format": "email", "maxLength": 320},
        {
            "type": "object",
            "properties": {
                "email": {"type": "string", "format": "email", "maxLength": 320},
                "name": {"type": "string", "minLength": 1, "maxLength": 200},
                "timezone": {"type": "string", "description": "IANA zone, e.g. Europe/Berlin"},
                "vars": {
                    "type": "object",
                    "maxProperties": _MAX_VARS,
                    "additionalProperties": {
                        "anyOf": [
                            {"type": "string", "maxLength": _MAX_VAR_TEXT},
                            {"type": "number"},
                            {"type": "boolean"},
                        ]
                    },
                },
            },
            "required": ["email"],
            "additionalProperties": False,
        },
    ]
}

#: One recipient's checks, field by field, for uploads (each message names its field).
recipient_name = _name
recipient_vars = _vars


def recipient_zone(value: object) -> str | None:
    return _zone(value, "timezone: ")


RecipientField = Annotated[
    Recipient,
    PlainValidator(_recipient),
    PlainSerializer(
        lambda r: (
            r.email
            if r.name is None and r.vars is None and r.timezone is None
            else {k: v for k, v in asdict(r).items() if k != "timezone" or v is not None}
        )
    ),
    WithJsonSchema(_RECIPIENT_SCHEMA),
]


#: The start of an RFC 3339 date-time. pydantic would also take a unix time, as a
#: number or a string of digits; the API documents only the date-time.
_DATE_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ]")


def _date_time_text(value: object) -> object:
    if not isinstance(value, str) or not _DATE_TIME.match(value):
        raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2026-01-25T12:00:00Z")
    return value


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError as error:
        # 0001-01-01T00:00+14:00 and 9999-12-31T23:00-12:00 have no UTC datetime.
        raise ValueError("must fall within the years 1 to 9999 once in UTC") from error


def _one_line(value: str) -> str:
    return header_text(value)


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


def _known_zone(value: str) -> str:
    if value != RECIPIENT:
        _zone(value)
    return value


def _required_zone(value: str) -> str:
    _zone(value)
    return value


_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _date_text(value: object) -> object:
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise ValueError("must be a date, YYYY-MM-DD")
    return value


def _clock(value: object) -> int:
    if not isinstance(value, str):
        raise ValueError("must be a time of day, HH:MM or HH:MM:SS")
    return clock_seconds(value)


ClockTime = Annotated[
    int,
    PlainValidator(_clock),
    PlainSerializer(clock_text),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^(([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?|24:00(:00)?)$",
            "examples": ["09:00", "17:30", "24:00"],
        }
    ),
]
MAX_WINDOWS = 12
MAX_EXCLUDED_DATES = 1000
MAX_JITTER_SECONDS = 86_400


class WindowSpec(_Camel):
    """A daily window, local wall-clock time ``[start, end)``; ``end`` may be ``24:00``."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=False, extra="forbid")

    start: ClockTime
    end: ClockTime

    @model_validator(mode="after")
    def _not_empty(self) -> WindowSpec:
        if self.start == DAY:
            raise ValueError("start: must be before 24:00")
        if self.start == self.end:
            raise ValueError("start and end must differ (00:00 to 24:00 is the whole day)")
        return self


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_ALL_DAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class ScheduleSpec(_Camel):
    """When, in local time, the campaign's sends may start."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=False, extra="forbid")

    timezone: Annotated[str, AfterValidator(_known_zone)] = Field(
        description='An IANA zone for the whole campaign, or "recipient"'
    )
    fallback_timezone: Annotated[str, AfterValidator(_required_zone)] | None = None
    days: list[Weekday] = Field(
        default_factory=lambda: list(_ALL_DAYS),
        min_length=1,
        max_length=7,
    )
    windows: list[WindowSpec] = Field(min_length=1, max_length=MAX_WINDOWS)
    exclude_dates: list[Annotated[date, BeforeValidator(_date_text)]] = Field(
        default_factory=list, max_length=MAX_EXCLUDED_DATES
    )
    jitter_seconds: int = Field(default=0, ge=0, le=MAX_JITTER_SECONDS, strict=True)

    def domain(self) -> Schedule:
        """The schedule for the planner (``fallbackTimezone`` is checked by the service)."""
        return Schedule(
            timezone=self.timezone,
            # A window ending at 00:00 ends at midnight: 24:00.
            windows=tuple(Window(w.start, w.end or DAY) for w in self.windows),
            days=frozenset(WEEKDAYS.index(d) for d in self.days),
            exclude=frozenset(self.exclude_dates),
            fallback=self.fallback_timezone,
            jitter=self.jitter_seconds,
        )


class CampaignRequest(_Camel):
    """``POST /api/v1/email/campaign``: exactly the specification's body."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=False, extra="forbid", str_strip_whitespace=False
    )

    user_id: int = Field(ge=1, le=MAX_ID, strict=True)
    subject: Annotated[str, Field(min_length=1, max_length=998), AfterValidator(_one_line)]
    body: str = Field(min_length=1)
    html_body: str | None = Field(default=None, min_length=1)
    start_time: Annotated[AwareDatetime, BeforeValidator(_date_time_text), AfterValidator(_utc)]
    delay_seconds: int = Field(ge=0, le=MAX_DELAY_SECONDS, strict=True)
    hourly_limit: int = Field(ge=1, le=MAX_HOURLY_LIMIT, strict=True)
    #: Create a DRAFT without recipients: upload them (``POST …/recipients``), then
    #: schedule it (``POST …/schedule``).
    draft: bool = Field(False, strict=True)
    recipients: list[RecipientField] = Field(default_factory=list, validate_default=True)
    schedule: ScheduleSpec | None = None

    @field_validator("recipients")
    @classmethod
    def _some_recipients(cls, value: list[Recipient], info: ValidationInfo) -> list[Recipient]:
        if info.data.get("draft"):
            if value:
                raise ValueError("a draft takes none here: upload them to the draft")
        elif not value:
            raise ValueError("should have at least 1 item (or create a draft, and upload them)")
        return value

    _duplicates: int = PrivateAttr(default=0)

    @model_validator(mode="after")
    def _drop_duplicates(self) -> CampaignRequest:
        seen: set[str] = set()
        unique: list[Recipient] = []
        for recipient in self.recipients:
            key = recipient.email.casefold()
            if key not in seen:
                seen.add(key)
                unique.append(recipient)
        self._duplicates = len(self.recipients) - len(unique)
        self.recipients = unique
        return self

    @property
    def duplicates_dropped(self) -> int:
        return self._duplicates


class CampaignCreated(_Camel):
    """The 201 answer to a new campaign; the send times are the planned ones (``None``
    for a draft, which plans nothing until it is scheduled)."""

    campaign_id: int
    status: CampaignStatus
    recipient_count: int
    duplicates_dropped: int
    first_send_at: datetime | None
    last_send_at: datetime | None


class RowProblem(_Camel):
    """Why one uploaded row was refused: its line in the upload (1 is a CSV's header),
    the column or key at fault, and what is wrong."""

    line: int
    field: str
    message: str


class RecipientsAdded(_Camel):
    """The answer to an upload of recipients to a draft."""

    campaign_id: int
    #: Rows read (a CSV's header and blank lines are not rows).
    received: int
    #: Rows stored as new recipients.
    added: int
    #: Rows whose address the upload had already given, or the draft already held.
    duplicates_dropped: int
    #: Rows refused (stored only with ``skipInvalid=true``, and then left out).
    invalid: int
    #: The first 100 refused rows.
    problems: list[RowProblem]
    #: The draft's recipients after this upload.
    recipient_count: int


class CampaignScheduled(_Camel):
    """The answer to scheduling a draft: its plan, as a create's would be."""

    campaign_id: int
    status: CampaignStatus
    recipient_count: int
    #: Recipients the user had suppressed: stored, never sent to.
    suppressed: int
    first_send_at: datetime | None
    last_send_at: datetime | None


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
    #: The sending calendar, as given (``None``: send whenever the rules allow).
    schedule: dict[str, Any] | None = None
    #: When the last send is planned (recomputed whenever the campaign is planned
    #: again); the completion time once completed; ``None`` while paused or cancelled.
    estimated_completion_at: datetime | None = None
    #: Why the campaign paused by itself (the circuit breaker: its bounce or complaint
    #: rate); null unless it is PAUSED for that reason.
    pause_reason: str | None = None


class PlannedDelivery(_Camel):
    """One recipient's planned send in a dry-run plan."""

    recipient: str
    #: The zone whose windows this send follows ("UTC" without a schedule).
    timezone: str
    scheduled_at: datetime


class CampaignPlan(_Camel):
    """``POST /api/v1/email/campaign/plan``: what a create would plan, stored nowhere."""

    recipient_count: int
    duplicates_dropped: int
    #: Recipients the user suppressed: they would be stored, and never sent to.
    suppressed: int
    first_send_at: datetime | None
    last_send_at: datetime | None
    #: Sends per local date of the schedule's zone (per UTC date without one, or for
    #: "recipient"), in date order.
    per_day: dict[str, int]
    #: The first ``limit`` planned sends, in the order they go out.
    deliveries: list[PlannedDelivery]


class DeliveryItem(_Camel):
    """One recipient's delivery."""

    delivery_id: int
    recipient: str
    scheduled_at: datetime
    status: DeliveryStatus
    attempts: int
    sent_at: datetime | None
    last_error: str | None
    #: The recipient's own zone, under a schedule in each recipient's zone.
    timezone: str | None = None
    #: The SMTP relay that answered its latest attempt (by its name, ``host:port``
    #: unless its URL gave one); ``None`` before any answer, or for ``.eml`` files.
    relay: str | None = None
    #: When it was first planned: ``scheduledAt`` moves when the campaign is planned
    #: again (it fell behind, or a server or shaping group asked it to wait), this does
    #: not; an operator's resume or retry plans anew.
    planned_at: datetime | None = None


class DeliveryPage(_Camel):
    """A page of deliveries; pass ``nextCursor`` as ``cursor`` for the next one."""

    items: list[DeliveryItem]
    next_cursor: str | None


class RetryStarted(_Camel):
    """The answer to a retry of a campaign's failed deliveries."""

    campaign_id: int
    retried: int


class CampaignControl(_Camel):
    """The answer to pause, resume and cancel.

    ``inFlight`` deliveries had already been claimed by a worker when the command
    took effect: they may still complete. Nothing else of the campaign starts.
    """

    campaign_id: int
    status: CampaignStatus
    in_flight: int


class CampaignSummary(_Camel):
    """One campaign in a listing."""

    campaign_id: int
    status: CampaignStatus
    subject: str
    recipient_count: int
    start_time: datetime
    created_at: datetime
    completed_at: datetime | None


class CampaignPage(_Camel):
    """A page of the caller's campaigns, newest first."""

    items: list[CampaignSummary]
    next_cursor: str | None


class FieldError(BaseModel):
    """One reason a request was refused."""

    field: str
    message: str


class LineError(BaseModel):
    """One refused row of an upload."""

    line: int
    field: str
    message: str


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer (an upload's 422 names lines too, and counts the
    refused rows in ``invalid``)."""

    error: str
    detail: str | list[FieldError] | list[LineError]
    invalid: int | None = None


#: The error answers every API route may give, for the OpenAPI description.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No valid API key"},
    403: {"model": ErrorBody, "description": "The key's user may not do this"},
    404: {"model": ErrorBody, "description": "No such campaign (for this user)"},
    409: {"model": ErrorBody, "description": "Conflicts with the current state"},
    413: {"model": ErrorBody, "description": "Too large"},
    422: {"model": ErrorBody, "description": "Invalid input; each bad field is named"},
    429: {"model": ErrorBody, "description": "Too many requests for this key"},
    503: {"model": ErrorBody, "description": "The database cannot be reached"},
}
