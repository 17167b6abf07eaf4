"""The transition tables are the truth: every move mailsched makes is in them, and
every pair they leave out is refused."""

from __future__ import annotations

import itertools

import pytest

from mailsched.domain.events import EventType
from mailsched.domain.model import (
    CAMPAIGN_TRANSITIONS,
    DELIVERY_MOVES,
    DELIVERY_TRANSITIONS,
    CampaignStatus,
    DeliveryMove,
    DeliveryStatus,
    campaign_event,
    can_move,
)
from mailsched.errors import IllegalMove

S = DeliveryStatus

#: The table, written out: each allowed (from, to), and nothing else.
ALLOWED = {
    # A draft's recipients: planned when it is scheduled, or never sent.
    (S.DRAFT, S.SCHEDULED),
    (S.DRAFT, S.CANCELLED),
    (S.DRAFT, S.SUPPRESSED),
    (S.SCHEDULED, S.SCHEDULED),
    (S.SCHEDULED, S.QUEUED),
    (S.SCHEDULED, S.PAUSED),
    (S.SCHEDULED, S.CANCELLED),
    (S.SCHEDULED, S.SUPPRESSED),
    (S.QUEUED, S.SENDING),
    (S.QUEUED, S.SCHEDULED),
    (S.QUEUED, S.PAUSED),
    (S.QUEUED, S.CANCELLED),
    (S.QUEUED, S.SUPPRESSED),
    (S.SENDING, S.SENT),
    (S.SENDING, S.FAILED),
    (S.SENDING, S.SCHEDULED),
    (S.PAUSED, S.SCHEDULED),
    (S.PAUSED, S.CANCELLED),
    (S.PAUSED, S.SUPPRESSED),
    (S.FAILED, S.SCHEDULED),
    # What the recipient's server reports later: a bounce, a complaint.
    (S.SENT, S.BOUNCED),
    (S.SENT, S.COMPLAINED),
    (S.BOUNCED, S.COMPLAINED),
}


@pytest.mark.parametrize(("current", "new"), list(itertools.product(S, S)))
def test_the_delivery_table_allows_exactly_these_moves(
    current: DeliveryStatus, new: DeliveryStatus
) -> None:
    assert can_move(current, new) == ((current, new) in ALLOWED)


@pytest.mark.parametrize(("current", "new"), sorted(set(itertools.product(S, S)) - ALLOWED))
def test_a_move_outside_the_table_cannot_even_be_declared(
    current: DeliveryStatus, new: DeliveryStatus
) -> None:
    with pytest.raises(IllegalMove, match=f"{current} -> {new}"):
        DeliveryMove("illegal", frozenset({current}), new, None)


def test_final_statuses_never_move_but_for_what_comes_back() -> None:
    for status in (S.CANCELLED, S.SUPPRESSED, S.COMPLAINED):
        assert DELIVERY_TRANSITIONS[status] == frozenset()
    assert DELIVERY_TRANSITIONS[S.SENT] == {S.BOUNCED, S.COMPLAINED}
    assert DELIVERY_TRANSITIONS[S.BOUNCED] == {S.COMPLAINED}


#: Each move: where from, where to, and what it tells the outside world.
MOVES = {
    "schedule": ({S.DRAFT}, S.SCHEDULED, None),
    "dispatch": ({S.SCHEDULED}, S.QUEUED, None),
    "requeue": ({S.QUEUED}, S.SCHEDULED, None),
    "claim": ({S.QUEUED}, S.SENDING, None),
    "send": ({S.SENDING}, S.SENT, EventType.DELIVERY_SENT),
    "retry": ({S.SENDING}, S.SCHEDULED, EventType.DELIVERY_DEFERRED),
    "release": ({S.SENDING}, S.SCHEDULED, None),
    "take_over": ({S.SENDING}, S.SCHEDULED, EventType.DELIVERY_DEFERRED),
    "fail": ({S.SENDING}, S.FAILED, EventType.DELIVERY_FAILED),
    "pause": ({S.SCHEDULED, S.QUEUED}, S.PAUSED, None),
    "resume": ({S.PAUSED}, S.SCHEDULED, None),
    "cancel": (
        {S.DRAFT, S.SCHEDULED, S.QUEUED, S.PAUSED},
        S.CANCELLED,
        EventType.DELIVERY_CANCELLED,
    ),
    "suppress": (
        {S.DRAFT, S.SCHEDULED, S.QUEUED, S.PAUSED},
        S.SUPPRESSED,
        EventType.DELIVERY_SUPPRESSED,
    ),
    "replan": ({S.SCHEDULED, S.QUEUED}, S.SCHEDULED, None),
    "retry_failed": ({S.FAILED}, S.SCHEDULED, EventType.DELIVERY_DEFERRED),
    "bounce": ({S.SENT}, S.BOUNCED, EventType.DELIVERY_BOUNCED),
    "complain": ({S.SENT, S.BOUNCED}, S.COMPLAINED, EventType.DELIVERY_COMPLAINED),
}


@pytest.mark.parametrize("move", DELIVERY_MOVES, ids=lambda m: m.name)
def test_each_move_is_as_documented(move: DeliveryMove) -> None:
    assert (set(move.sources), move.target, move.event) == MOVES[move.name]


def test_every_allowed_pair_is_made_by_some_move() -> None:
    made = {(s, m.target) for m in DELIVERY_MOVES for s in m.sources}
    assert made == ALLOWED


def test_every_final_status_is_reached_with_an_event() -> None:
    for move in DELIVERY_MOVES:
        if move.target.is_final:
            assert move.event is not None, move.name


C = CampaignStatus


@pytest.mark.parametrize(("current", "new"), list(itertools.product(C, C)))
def test_the_campaign_table_refuses_every_other_move(
    current: CampaignStatus, new: CampaignStatus
) -> None:
    if (current, new) in CAMPAIGN_TRANSITIONS:
        assert campaign_event(current, new).startswith("campaign.")
    else:
        with pytest.raises(IllegalMove):
            campaign_event(current, new)


@pytest.mark.parametrize(
    ("current", "new", "event"),
    [
        (C.DRAFT, C.SCHEDULED, EventType.CAMPAIGN_SCHEDULED),
        (C.DRAFT, C.CANCELLED, EventType.CAMPAIGN_CANCELLED),
        (C.SCHEDULED, C.RUNNING, EventType.CAMPAIGN_STARTED),
        (C.RUNNING, C.PAUSED, EventType.CAMPAIGN_PAUSED),
        (C.SCHEDULED, C.PAUSED, EventType.CAMPAIGN_PAUSED),
        (C.PAUSED, C.RUNNING, EventType.CAMPAIGN_RESUMED),
        (C.PAUSED, C.SCHEDULED, EventType.CAMPAIGN_RESUMED),
        (C.COMPLETED, C.RUNNING, EventType.CAMPAIGN_RESUMED),
        (C.RUNNING, C.CANCELLED, EventType.CAMPAIGN_CANCELLED),
        (C.PAUSED, C.CANCELLED, EventType.CAMPAIGN_CANCELLED),
        (C.RUNNING, C.COMPLETED, EventType.CAMPAIGN_COMPLETED),
        (C.SCHEDULED, C.COMPLETED, EventType.CAMPAIGN_COMPLETED),
    ],
)
def test_campaign_moves_and_their_events(
    current: CampaignStatus, new: CampaignStatus, event: EventType
) -> None:
    assert campaign_event(current, new) == event


def test_final_campaigns_never_move_except_a_retry_of_a_completed_one() -> None:
    assert [pair for pair in CAMPAIGN_TRANSITIONS if pair[0] == C.CANCELLED] == []
    assert [pair for pair in CAMPAIGN_TRANSITIONS if pair[0] == C.COMPLETED] == [
        (C.COMPLETED, C.RUNNING)
    ]
