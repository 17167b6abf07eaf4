"""The schema, as SQLAlchemy Core tables. Alembic migrations create it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects import mysql

metadata = MetaData()

#: BIGINT on MySQL; INTEGER on SQLite, where only INTEGER PRIMARY KEY autoincrements.
Id = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python, naive UTC with microseconds in the database."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "mysql":
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def stored_time(dialect: Dialect) -> Callable[[datetime], object]:
    """:class:`UTCDateTime`'s own conversion on ``dialect``, for
    statements that bypass SQLAlchemy's parameter processing: it refuses naive times
    with the same ``ValueError``, and stores the same value, as every other write.

    Through ``dialect_impl``: the type's plain ``bind_processor`` would leave out
    the dialect's own one (SQLite's, which turns the time into text).
    """
    process = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert process is not None, "UTCDateTime converts every value"
    return process


def loaded_time(dialect: Dialect) -> Callable[[object], datetime | None]:
    """:class:`UTCDateTime`'s conversion of a value read on ``dialect``, for rows
    fetched by statements that bypass SQLAlchemy's result processing (see
    :func:`stored_time`): an aware UTC datetime, or ``None``."""
    process = UTCDateTime().dialect_impl(dialect).result_processor(dialect, None)
    assert process is not None, "UTCDateTime converts every value"
    return process


#: An address compared byte for byte (see ``suppressions``).
Address = String(320).with_variant(mysql.VARCHAR(320, collation="utf8mb4_bin"), "mysql")

campaigns = Table(
    "campaigns",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("user_id", BigInteger, nullable=False),
    Column("subject", String(998), nullable=False),
    Column("body", Text().with_variant(mysql.MEDIUMTEXT(), "mysql"), nullable=False),
    Column("start_time", UTCDateTime, nullable=False),
    Column("delay_seconds", Integer, nullable=False),
    Column("hourly_limit", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("recipient_count", Integer, nullable=False),
    # Send slots taken so far: the sequence number of the latest row in send_slots.
    Column("slot_seq", Integer, nullable=False, default=0),
    Column("created_at", UTCDateTime, nullable=False),
    Column("completed_at", UTCDateTime, nullable=True),
    Column("html_body", Text().with_variant(mysql.MEDIUMTEXT(), "mysql"), nullable=True),
    Column("templated", Boolean, nullable=False, default=False),
    # The sending calendar as JSON (``Schedule.to_json``), NULL for none.
    Column("schedule", Text, nullable=True),
    # Why it paused, when it paused by itself (the circuit breaker); NULL otherwise.
    Column("pause_reason", String(200), nullable=True),
    # The circuit breaker weighs only sends since then (a person resumed it after a trip).
    Column("breaker_since", UTCDateTime, nullable=True),
    Index("ix_campaigns_user", "user_id", "id"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("campaign_id", Id, ForeignKey("campaigns.id"), nullable=False),
    Column("recipient", String(320), nullable=False),
    # Personalization: the recipient's name and template variables (JSON object).
    Column("name", String(200), nullable=True),
    Column("vars", Text().with_variant(mysql.MEDIUMTEXT(), "mysql"), nullable=True),
    Column("scheduled_at", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", SmallInteger, nullable=False, default=0),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("queued_at", UTCDateTime, nullable=True),
    Column("sent_at", UTCDateTime, nullable=True),
    Column("last_error", String(500), nullable=True),
    # The recipient's own zone, for a "recipient" calendar; NULL: the campaign's.
    Column("timezone", String(64), nullable=True),
    # The first plan, once a re-plan moved ``scheduled_at`` (NULL: ``scheduled_at`` is
    # still it): lateness is measured against it, so re-planning cannot hide drift.
    Column("planned_at", UTCDateTime, nullable=True),
    # The dispatcher's claim: due rows of one status, oldest first.
    Index("ix_deliveries_due", "status", "scheduled_at"),
    # A campaign's rows by status: counts, the re-plan of its tail, completion.
    Index("ix_deliveries_campaign_status", "campaign_id", "status", "scheduled_at"),
    # A campaign's rows by address: an upload's duplicates. Case-insensitive, as
    # recipients are deduplicated: MySQL's collation is; on SQLite the migration
    # makes the index ``COLLATE NOCASE``.
    Index("ix_deliveries_recipient", "campaign_id", "recipient"),
)

#: One row per send attempt, numbered per campaign. The rolling-window rule needs
#: the send ``limit`` places back: with the numbering that is one primary-key
#: lookup, whatever the limit. ``finished_at`` is when the server answered (NULL
#: while in flight); the rules measure from it, so they hold where mail arrives.
send_slots = Table(
    "send_slots",
    metadata,
    Column("campaign_id", Id, ForeignKey("campaigns.id"), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("delivery_id", Id, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    # The worker that made the attempt: who sent what, when duplicates are investigated.
    Column("worker", String(64), nullable=False),
    # How the attempt ended (a SendOutcome); NULL while in flight.
    Column("outcome", String(16), nullable=True),
    # The SMTP relay that answered, by name (NULL for a file, or no answer).
    Column("relay", String(64), nullable=True),
    Index("ix_send_slots_delivery", "delivery_id"),
)

#: The shaping groups (see :mod:`mailsched.domain.shaping`): a row per group, locked
#: by every claim that sends into it, with its sends' numbering and what replies did
#: to it (slowed by ``factor`` until, or suspended until).
shaping_groups = Table(
    "shaping_groups",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False, default=0),
    Column("factor", Float, nullable=True),
    Column("slowed_until", UTCDateTime, nullable=True),
    Column("suspended_until", UTCDateTime, nullable=True),
    Column("reason", String(200), nullable=True),
)

#: Each send counted in a group, numbered per group like ``send_slots`` per campaign:
#: the rolling limits need the send ``count`` places back, one key lookup away. Its
#: end is its send slot's ``finished_at``. Kept two days (the longest window is one).
shaping_slots = Table(
    "shaping_slots",
    metadata,
    Column("grp", String(64), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("campaign_id", Id, nullable=False),
    Column("slot_seq", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Index("ix_shaping_slots_started", "started_at"),
)


#: API keys: the secret is shown once and stored as a SHA-256 digest (it is a
#: random 256-bit value, so a slow password hash would add nothing).
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("user_id", BigInteger, nullable=False),
    Column("prefix", String(16), nullable=False, unique=True),
    Column("secret_hash", String(64), nullable=False),
    Column("name", String(100), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
)

#: Idempotent creates: the first response to (user, key), for 24 hours.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("user_id", BigInteger, primary_key=True, autoincrement=False),
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

#: Addresses a user must not send to again (unsubscribed, or added by hand).
suppressions = Table(
    "suppressions",
    metadata,
    Column("user_id", BigInteger, primary_key=True, autoincrement=False),
    # Binary collation: MariaDB's default one would take jörg@ and jorg@ for the same.
    Column("address", Address, primary_key=True),
    # Where it came from: manual (the API or the dashboard), unsubscribe, bounce, complaint.
    Column("reason", String(32), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # What was reported (a bounce's status and diagnostic), if anything.
    Column("detail", String(500), nullable=True),
    # When it stops applying (a bounce's, by MAILSCHED_BOUNCE_SUPPRESSION_DAYS); NULL: never.
    Column("expires_at", UTCDateTime, nullable=True),
)

#: Deployment-wide secrets every process shares (the unsubscribe signing key).
secrets = Table(
    "secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(128), nullable=False),
)

#: The dead-letter outbox: a delivery that failed for good gets a row in the same
#: transaction that marks it FAILED, and the relay (beside the dispatcher) publishes
#: it to the dead-letter topic, deleting the row once the queue holds it. So a queue
#: that is down delays a dead letter; it never loses one, nor breaks a worker's batch.
dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("delivery_id", Id, nullable=False),
    Column("campaign_id", Id, nullable=False),
    Column("reason", String(500), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

#: The events outbox: one row per change, written in the transaction that makes
#: the change (see ``store/transitions.py``). ``id`` is not an autoincrement: it is
#: taken from ``sequences`` as the last step of that transaction, whose row lock
#: orders the commits that write events, so ids become visible in increasing order
#: and a reader that resumes after the last id it saw misses nothing.
events = Table(
    "events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=False),
    Column("user_id", BigInteger, nullable=False),
    Column("type", String(40), nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("campaign_id", Id, nullable=True),
    # The payload's data object, as JSON.
    Column("data", Text, nullable=False),
    # The feed: a user's events in order. A campaign's are filtered from the user's:
    # a page looks through a bounded range of ids, and every index here is written
    # once per event, in the worker's transaction.
    Index("ix_events_user", "user_id", "id"),
)

#: Named counters; ``events`` holds the last event id given out.
sequences = Table(
    "sequences",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

#: How far each relay of an append-only table has published (the last id it handed on).
relay_cursors = Table(
    "relay_cursors",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("position", BigInteger, nullable=False),
)

#: Webhook endpoints: where a user's events are POSTed. Rows are never deleted,
#: only marked ``deleted_at``: an id is never given out twice (SQLite would reuse
#: the largest), so attempts and messages can never be taken for another endpoint's.
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("user_id", BigInteger, nullable=False),
    Column("url", String(2048), nullable=False),
    Column("description", String(500), nullable=True),
    # The subscribed event types as a JSON list; NULL for all, including later ones.
    Column("event_types", Text, nullable=True),
    # "whsec_" + base64 of 32 random bytes; emptied when the endpoint is deleted.
    Column("secret", String(100), nullable=False),
    Column("batch", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("disabled_at", UTCDateTime, nullable=True),
    Column("disabled_reason", String(200), nullable=True),
    Column("deleted_at", UTCDateTime, nullable=True),
    Index("ix_webhook_endpoints_user", "user_id", "id"),
)

#: One row per (endpoint, event) to deliver. ``due_at`` is when it may next be
#: claimed: a claim moves it one lease ahead (so a crashed sender's message comes
#: back by itself), a failure to the next retry. NULL means finished (delivered or
#: given up): the row stays a day so that an event fanned out twice (a Kafka
#: redelivery) is not delivered twice. ``batch_key`` fixes a batching endpoint's
#: request membership at its first attempt, so its retries carry the same webhook-id.
webhook_messages = Table(
    "webhook_messages",
    metadata,
    Column("endpoint_id", Id, primary_key=True, autoincrement=False),
    Column("event_id", Id, primary_key=True, autoincrement=False),
    Column("due_at", UTCDateTime, nullable=True),
    Column("attempts", SmallInteger, nullable=False, default=0),
    Column("batch_key", BigInteger, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    # The claim (an endpoint's due rows, oldest first), the backlog per endpoint,
    # and the endpoints with something due (MIN(due_at) GROUP BY endpoint_id).
    Index("ix_webhook_messages_due", "endpoint_id", "due_at"),
    # The prune of finished rows, oldest first.
    Index("ix_webhook_messages_finished", "finished_at"),
)

#: Every request made to an endpoint, kept 7 days (see ``store/webhooks.py``).
webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("endpoint_id", Id, nullable=False),
    # The webhook-id header: the event id, or "batch_<key>".
    Column("message_id", String(64), nullable=False),
    # The (first) event the request carried, and how many.
    Column("event_id", Id, nullable=False),
    Column("event_count", Integer, nullable=False),
    Column("attempted_at", UTCDateTime, nullable=False),
    Column("status_code", SmallInteger, nullable=True),
    Column("duration_ms", Integer, nullable=False),
    Column("error", String(500), nullable=True),
    Index("ix_webhook_attempts_endpoint", "endpoint_id", "id"),
)

#: Dashboard sign-ins (``mailsched.ui``). The browser holds a random token; only its
#: SHA-256 is stored, so a copy of this table signs nobody in. ``key_id`` ties the
#: session to the API key it was opened with: a revoked key ends it.
ui_sessions = Table(
    "ui_sessions",
    metadata,
    Column("token_digest", String(64), primary_key=True),
    Column("user_id", BigInteger, nullable=False),
    Column("key_id", Id, ForeignKey("api_keys.id"), nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    # The prune of expired sessions.
    Index("ix_ui_sessions_expires", "expires_at"),
)

#: A raw inbound message, kept for inspection (at most MAILSCHED_INBOUND_MAX_MESSAGE_BYTES).
RawMessage = LargeBinary().with_variant(mysql.MEDIUMBLOB(), "mysql")

#: Every bounce and complaint received: what was reported, for which delivery.
bounces = Table(
    "bounces",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("user_id", BigInteger, nullable=False),
    Column("campaign_id", Id, nullable=True),
    Column("delivery_id", Id, nullable=True),
    Column("recipient", Address, nullable=False),
    # hard, soft or complaint.
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=True),
    Column("diagnostic", String(500), nullable=True),
    # smtp (the bounce mailbox), sendgrid, mailgun, postmark, ses.
    Column("source", String(16), nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Index("ix_bounces_campaign", "campaign_id", "id"),
    # An address's soft bounces (its streak).
    Index("ix_bounces_recipient", "user_id", "recipient", "kind"),
)

#: Per user and address: from which bounce on its soft bounces count (a suppression
#: of the address ends the streak; the next soft bounce starts another).
soft_bounce_streaks = Table(
    "soft_bounce_streaks",
    metadata,
    Column("user_id", BigInteger, primary_key=True, autoincrement=False),
    Column("address", Address, primary_key=True),
    Column("first_bounce_id", Id, nullable=False),
)

#: Inbound mail that changed nothing (no valid return path, nothing recognised),
#: kept for a person to look at.
inbound_messages = Table(
    "inbound_messages",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("received_at", UTCDateTime, nullable=False),
    Column("source", String(16), nullable=False),
    # forged, unrecognised, unknown_delivery ...
    Column("outcome", String(32), nullable=False),
    Column("mail_from", String(320), nullable=True),
    Column("rcpt_to", String(320), nullable=True),
    Column("size", Integer, nullable=False),
    Column("raw", RawMessage, nullable=False),
    Index("ix_inbound_messages_received", "received_at"),
)
