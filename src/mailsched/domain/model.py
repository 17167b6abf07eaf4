"""Campaigns, deliveries and the statuses they move through."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from mailsched.domain.calendar import Calendar, Schedule, calendar
from mailsched.domain.events import EventType
from mailsched.domain.plan import Rules
from mailsched.errors import IllegalMove


class CampaignStatus(StrEnum):
    """Where a campaign is in its life. A DRAFT takes uploaded recipients and sends
    nothing until it is scheduled."""

    DRAFT = "DRAFT"
    SCHEDULED = "SCHEDULED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"

    @property
    def sends(self) -> bool:
        """Whether deliveries of a campaign in this status may be sent."""
        return self in (CampaignStatus.SCHEDULED, CampaignStatus.RUNNING)


class DeliveryStatus(StrEnum):
    """Where one recipient's email is.

    DRAFT is a recipient uploaded to a draft campaign, not yet planned. SCHEDULED
    lives only in the database, QUEUED is on the queue, SENDING is
    claimed by a worker under a lease, PAUSED waits for its campaign to resume;
    SENT, FAILED, CANCELLED and SUPPRESSED (the recipient unsubscribed) are final
    for sending. A SENT email may still come back: BOUNCED (the recipient's
    server reported a permanent failure) or COMPLAINED (the recipient reported
    it as spam).
    """

    DRAFT = "DRAFT"
    SCHEDULED = "SCHEDULED"
    QUEUED = "QUEUED"
    SENDING = "SENDING"
    PAUSED = "PAUSED"
    SENT = "SENT"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    SUPPRESSED = "SUPPRESSED"
    BOUNCED = "BOUNCED"
    COMPLAINED = "COMPLAINED"

    @property
    def is_final(self) -> bool:
        return self in FINAL_DELIVERY_STATUSES


class SendOutcome(StrEnum):
    """How one send attempt (one send slot) ended."""

    SENT = "SENT"
    RETRY = "RETRY"
    SLOWED = "SLOWED"
    FAILED = "FAILED"
    #: Never started: the lease was too close to its end.
    RELEASED = "RELEASED"
    #: The connection broke after the data went out: the server may have it.
    AMBIGUOUS = "AMBIGUOUS"
    #: The worker vanished mid-send and its lease ran out: the server may have it.
    ORPHANED = "ORPHANED"


#: Outcomes after which the recipient may get the email twice (the RFC 1047 window).
POSSIBLE_DUPLICATE_OUTCOMES = frozenset({SendOutcome.AMBIGUOUS, SendOutcome.ORPHANED})


FINAL_DELIVERY_STATUSES = frozenset(
    {
        DeliveryStatus.SENT,
        DeliveryStatus.FAILED,
        DeliveryStatus.CANCELLED,
        DeliveryStatus.SUPPRESSED,
        DeliveryStatus.BOUNCED,
        DeliveryStatus.COMPLAINED,
    }
)

#: Deliveries that were sent, whatever came back since.
SENT_DELIVERY_STATUSES = frozenset(
    {DeliveryStatus.SENT, DeliveryStatus.BOUNCED, DeliveryStatus.COMPLAINED}
)

#: Deliveries not yet claimed by a worker: what pause, cancel and re-plans move.
UNCLAIMED_DELIVERY_STATUSES = frozenset(
    {DeliveryStatus.DRAFT, DeliveryStatus.SCHEDULED, DeliveryStatus.QUEUED, DeliveryStatus.PAUSED}
)

_STOPPABLE = {DeliveryStatus.PAUSED, DeliveryStatus.CANCELLED, DeliveryStatus.SUPPRESSED}

#: Every move a delivery may make: the truth, which :mod:`mailsched.store.transitions`
#: checks each change against. SENDING -> SCHEDULED is a retry (or a lease
#: takeover); QUEUED -> SCHEDULED is a re-plan or a lost queue message;
#: SCHEDULED -> SCHEDULED is a re-plan (a new time, the same status);
#: FAILED -> SCHEDULED is an operator's retry of failed deliveries; SENT ->
#: BOUNCED or COMPLAINED is what the recipient's server reported later (a
#: complaint may follow a bounce report of the same email).
DELIVERY_TRANSITIONS: dict[DeliveryStatus, frozenset[DeliveryStatus]] = {
    DeliveryStatus.DRAFT: frozenset(
        {DeliveryStatus.SCHEDULED, DeliveryStatus.CANCELLED, DeliveryStatus.SUPPRESSED}
    ),
    DeliveryStatus.SCHEDULED: frozenset(
        {DeliveryStatus.SCHEDULED, DeliveryStatus.QUEUED, *_STOPPABLE}
    ),
    DeliveryStatus.QUEUED: frozenset(
        {DeliveryStatus.SENDING, DeliveryStatus.SCHEDULED, *_STOPPABLE}
    ),
    DeliveryStatus.SENDING: frozenset(
        {DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.SCHEDULED}
    ),
    DeliveryStatus.PAUSED: frozenset(
        {DeliveryStatus.SCHEDULED, DeliveryStatus.CANCELLED, DeliveryStatus.SUPPRESSED}
    ),
    DeliveryStatus.SENT: frozenset({DeliveryStatus.BOUNCED, DeliveryStatus.COMPLAINED}),
    DeliveryStatus.FAILED: frozenset({DeliveryStatus.SCHEDULED}),
    DeliveryStatus.CANCELLED: frozenset(),
    DeliveryStatus.SUPPRESSED: frozenset(),
    DeliveryStatus.BOUNCED: frozenset({DeliveryStatus.COMPLAINED}),
    DeliveryStatus.COMPLAINED: frozenset(),
}


def can_move(current: DeliveryStatus, new: DeliveryStatus) -> bool:
    """Whether a delivery may go from ``current`` to ``new``."""
    return new in DELIVERY_TRANSITIONS[current]


@dataclass(frozen=True, slots=True)
class DeliveryMove:
    """One kind of change: deliveries in ``sources`` go to ``target``.

    ``event`` is what the change tells the outside world; ``None`` marks the
    queue's own bookkeeping (due, on the queue, claimed, handed back), which
    no reader can observe and which would otherwise double the rows written per
    email. Building a move the table does not allow raises :class:`IllegalMove`.
    """

    name: str
    sources: frozenset[DeliveryStatus]
    target: DeliveryStatus
    event: EventType | None

    def __post_init__(self) -> None:
        illegal = sorted(s for s in self.sources if not can_move(s, self.target))
        if illegal:
            raise IllegalMove(f"{self.name}: {', '.join(illegal)} -> {self.target} is not allowed")


def _move(
    name: str, sources: set[DeliveryStatus], target: DeliveryStatus, event: EventType | None
) -> DeliveryMove:
    return DeliveryMove(name, frozenset(sources), target, event)


_S, _Q, _G = DeliveryStatus.SCHEDULED, DeliveryStatus.QUEUED, DeliveryStatus.SENDING
_P, _F = DeliveryStatus.PAUSED, DeliveryStatus.FAILED
_D = DeliveryStatus.DRAFT

#: A draft was scheduled: its recipients are planned (``campaign.scheduled`` tells of it).
SCHEDULE = _move("schedule", {_D}, _S, None)
#: Due: the dispatcher put it on the queue.
DISPATCH = _move("dispatch", {_S}, _Q, None)
#: Back from the queue: its message was lost, its worker stopped, or it came early.
REQUEUE = _move("requeue", {_Q}, _S, None)
#: A worker's claim: it starts sending under a lease.
CLAIM = _move("claim", {_Q}, _G, None)
SEND = _move("send", {_G}, DeliveryStatus.SENT, EventType.DELIVERY_SENT)
#: A failed attempt with attempts left, or a server's "slow down".
RETRY = _move("retry", {_G}, _S, EventType.DELIVERY_DEFERRED)
#: Not sent at all (its lease would have ended first): due again at once.
RELEASE = _move("release", {_G}, _S, None)
#: Its worker's lease ran out: taken back, due now (the send is in doubt).
TAKE_OVER = _move("take_over", {_G}, _S, EventType.DELIVERY_DEFERRED)
FAIL = _move("fail", {_G}, DeliveryStatus.FAILED, EventType.DELIVERY_FAILED)
#: Its campaign paused (``campaign.paused`` tells of the whole).
PAUSE = _move("pause", {_S, _Q}, _P, None)
RESUME = _move("resume", {_P}, _S, None)
CANCEL = _move("cancel", {_D, _S, _Q, _P}, DeliveryStatus.CANCELLED, EventType.DELIVERY_CANCELLED)
SUPPRESS = _move(
    "suppress", {_D, _S, _Q, _P}, DeliveryStatus.SUPPRESSED, EventType.DELIVERY_SUPPRESSED
)
#: Planned again at a new time (the campaign fell behind, resumed, or slowed down).
REPLAN = _move("replan", {_S, _Q}, _S, None)
#: An operator asked for the campaign's failed deliveries to be tried again.
RETRY_FAILED = _move("retry_failed", {_F}, _S, EventType.DELIVERY_DEFERRED)
#: The recipient's server reported a permanent failure (a hard bounce).
BOUNCE = _move("bounce", {DeliveryStatus.SENT}, DeliveryStatus.BOUNCED, EventType.DELIVERY_BOUNCED)
#: The recipient reported the email as spam (a feedback loop's complaint).
COMPLAIN = _move(
    "complain",
    {DeliveryStatus.SENT, DeliveryStatus.BOUNCED},
    DeliveryStatus.COMPLAINED,
    EventType.DELIVERY_COMPLAINED,
)

DELIVERY_MOVES: tuple[DeliveryMove, ...] = (
    SCHEDULE, DISPATCH, REQUEUE, CLAIM, SEND, RETRY, RELEASE, TAKE_OVER, FAIL,
    PAUSE, RESUME, CANCEL, SUPPRESS, REPLAN, RETRY_FAILED, BOUNCE, COMPLAIN,
)  # fmt: skip

#: Every move a campaign may make, and the event it is.
CAMPAIGN_TRANSITIONS: dict[tuple[CampaignStatus, CampaignStatus], EventType] = {
    (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED): EventType.CAMPAIGN_SCHEDULED,
    (CampaignStatus.DRAFT, CampaignStatus.CANCELLED): EventType.CAMPAIGN_CANCELLED,
    (CampaignStatus.SCHEDULED, CampaignStatus.RUNNING): EventType.CAMPAIGN_STARTED,
    (CampaignStatus.SCHEDULED, CampaignStatus.PAUSED): EventType.CAMPAIGN_PAUSED,
    (CampaignStatus.SCHEDULED, CampaignStatus.CANCELLED): EventType.CAMPAIGN_CANCELLED,
    # Nothing to send (every recipient suppressed, say).
    (CampaignStatus.SCHEDULED, CampaignStatus.COMPLETED): EventType.CAMPAIGN_COMPLETED,
    (CampaignStatus.RUNNING, CampaignStatus.PAUSED): EventType.CAMPAIGN_PAUSED,
    (CampaignStatus.RUNNING, CampaignStatus.CANCELLED): EventType.CAMPAIGN_CANCELLED,
    (CampaignStatus.RUNNING, CampaignStatus.COMPLETED): EventType.CAMPAIGN_COMPLETED,
    # Resumed before its first send, or after.
    (CampaignStatus.PAUSED, CampaignStatus.SCHEDULED): EventType.CAMPAIGN_RESUMED,
    (CampaignStatus.PAUSED, CampaignStatus.RUNNING): EventType.CAMPAIGN_RESUMED,
    (CampaignStatus.PAUSED, CampaignStatus.CANCELLED): EventType.CAMPAIGN_CANCELLED,
    # An operator retried its failed deliveries.
    (CampaignStatus.COMPLETED, CampaignStatus.RUNNING): EventType.CAMPAIGN_RESUMED,
}


def campaign_event(current: CampaignStatus, new: CampaignStatus) -> EventType:
    """The event of a campaign's move; :class:`IllegalMove` if the table does not allow it."""
    try:
        return CAMPAIGN_TRANSITIONS[current, new]
    except KeyError:
        raise IllegalMove(f"campaign: {current} -> {new} is not allowed") from None


@dataclass(frozen=True, slots=True)
class Campaign:
    """A stored campaign: what was asked for, and how far sending got."""

    id: int
    user_id: int
    subject: str
    body: str
    start_time: datetime
    delay_seconds: int
    hourly_limit: int
    status: CampaignStatus
    recipient_count: int
    slot_seq: int
    created_at: datetime
    completed_at: datetime | None
    html_body: str | None = None
    #: Subject or bodies use template syntax: rendered per recipient.
    templated: bool = False
    #: When, in local time, sends may start (``None``: whenever the rules allow).
    schedule: Schedule | None = None
    #: Why it paused by itself (the circuit breaker); ``None`` otherwise.
    pause_reason: str | None = None
    #: The circuit breaker weighs only sends since then (resumed after a trip).
    breaker_since: datetime | None = None

    def opening(self, zone: str | None) -> Calendar | None:
        """The calendar of a recipient of this campaign (its own ``zone``, if any)."""
        if self.schedule is None:
            return None
        return calendar(self.schedule, self.schedule.zone_of(zone))

    def rules(self, window: timedelta) -> Rules:
        """The campaign's sending rules, with the deployment's length of an "hour"."""
        return Rules(timedelta(seconds=self.delay_seconds), self.hourly_limit, window)
