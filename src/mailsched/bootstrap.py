"""The one place that wires mailsched together.

``build(settings)`` picks each boundary's implementation from the settings:
MySQL or SQLite, Kafka or the in-process queue, SMTP or the ``.eml`` outbox.
Nothing connects before it is called.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.config import Settings
from mailsched.consumer.letters import LetterFactory
from mailsched.consumer.sender import WorkerDeps
from mailsched.consumer.worker import Worker
from mailsched.domain.events import Event
from mailsched.domain.shaping import Shaping
from mailsched.errors import ConfigError
from mailsched.inbound.feedback import Feedback
from mailsched.inbound.webhooks import inbound_routes
from mailsched.mail import Mailer
from mailsched.mail.dkim import DkimSigner
from mailsched.mail.message import sender_domain
from mailsched.mail.outbox import OutboxMailer
from mailsched.mail.relays import Relays
from mailsched.mail.smtp import SmtpMailer
from mailsched.mail.verp import ReturnPath
from mailsched.metrics import Metrics
from mailsched.producer.api import Limits
from mailsched.producer.auth import Authenticator, Caller, caller_dependency
from mailsched.producer.campaigns import Campaigns
from mailsched.producer.dispatcher import Dispatcher
from mailsched.producer.event_intake import EventIntake
from mailsched.producer.events import event_routes
from mailsched.producer.relay import (
    DeadLetterOutbox,
    EventOutbox,
    EventPruner,
    EventSink,
    Relay,
)
from mailsched.producer.suppressions import suppression_routes, unsubscribe_routes
from mailsched.queue import DeliveryQueue
from mailsched.queue.kafka import KafkaQueue
from mailsched.queue.memory import MemoryQueue
from mailsched.store import secrets
from mailsched.store.db import Database
from mailsched.store.dead_letters import DeadLetterRow
from mailsched.ui.routes import ui_routes
from mailsched.unsubscribe import UnsubscribeSigner
from mailsched.webhooks.api import webhook_routes
from mailsched.webhooks.deliver import WebhookDeliverer
from mailsched.webhooks.fanout import FanOut

if TYPE_CHECKING:
    from mailsched.inbound.server import InboundServer
    from mailsched.queue.kafka_events import KafkaEventConsumer, KafkaEventSink, ReceivedEvent

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The real clock."""
    return datetime.now(UTC)


def process_name() -> str:
    """A name for this process that is unique across hosts and restarts (lease owner, client id)."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{os.urandom(3).hex()}"


@dataclass
class Components:
    """The wired parts of one process. Close with :meth:`aclose`."""

    settings: Settings
    db: Database
    queue: DeliveryQueue
    clock: Clock
    name: str
    #: The queue lives in this process: what it held died with the previous one.
    in_process_queue: bool
    metrics: Metrics = field(default_factory=Metrics)
    _mailer: Mailer | None = field(default=None, repr=False)
    _shaping: Shaping | None = field(default=None, repr=False)
    _auth: Authenticator | None = field(default=None, repr=False)
    _caller: Callable[..., Awaitable[Caller]] | None = field(default=None, repr=False)
    _kafka_sink: KafkaEventSink | None = field(default=None, repr=False)
    _event_consumer: KafkaEventConsumer | None = field(default=None, repr=False)
    _deliverer: WebhookDeliverer | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.db.on_events = self._count_events

    def _count_events(self, written: Mapping[str, int]) -> None:
        for kind, count in written.items():
            self.metrics.events.labels(kind).inc(count)

    def caller(self) -> Callable[..., Awaitable[Caller]]:
        """The API's authentication dependency (one per process: it holds the rate limits)."""
        if self._caller is None:
            self._caller = caller_dependency(self.authenticator())
        return self._caller

    def authenticator(self) -> Authenticator:
        """The key checker the API and the dashboard share (one per process)."""
        if self._auth is None:
            self._auth = Authenticator(self.db, self.settings.requests_per_minute)
        return self._auth

    def campaigns(self) -> Campaigns:
        return Campaigns(
            self.db,
            self.settings.rate_window,
            self.clock,
            max_body_bytes=self.settings.max_body_bytes,
            max_recipients=self.settings.max_recipients,
            margin=self.settings.plan_margin,
        )

    def limits(self) -> Limits:
        """How big a request, or a campaign made in the dashboard, may be."""
        return Limits(
            max_recipients=self.settings.max_recipients,
            max_body_bytes=self.settings.max_body_bytes,
            max_request_bytes=self.settings.max_request_bytes,
        )

    def dispatcher(self) -> Dispatcher:
        return Dispatcher(self.db, self.queue, self.settings.dispatcher(), self.clock, self.metrics)

    def relay(self) -> Relay[DeadLetterRow]:
        """The relay of dead letters from their outbox table to the queue (beside a dispatcher)."""
        return Relay("dead-letter", self.db, DeadLetterOutbox(self.queue))

    def event_relay(self) -> Relay[Event]:
        """The relay of events from their table to :meth:`event_sink` (beside a dispatcher)."""
        events = self.settings.events()
        return Relay(
            "event",
            self.db,
            EventOutbox(self.event_sink(), self.metrics, self.clock),
            batch_size=events.relay_batch_size,
            interval=events.relay_interval,
            on_relayed=self._relayed,
        )

    def _relayed(self, count: int) -> None:
        self.metrics.relayed.inc(count)
        if self._deliverer is not None and self.in_process_queue:
            self._deliverer.wake()  # the relay wrote webhook messages: no need to poll

    def event_pruner(self) -> EventPruner:
        """Deletes published events after the retention period (beside the relay)."""
        return EventPruner(self.db, self.settings.events().retention, self.clock)

    def event_sink(self) -> EventSink:
        """Where the relay publishes: the events topic on Kafka; without Kafka, the
        webhooks' own table, in the relay's transaction."""
        kafka = self.settings.kafka()
        if kafka is None:
            return FanOut(self.clock)
        if self._kafka_sink is None:
            from mailsched.queue.kafka_events import KafkaEventSink

            self._kafka_sink = KafkaEventSink(kafka, self.settings.events(), self.name)
        return self._kafka_sink

    def event_intake(self) -> EventIntake[ReceivedEvent]:
        """``mailsched webhooks``' reader of the events topic, in its own consumer group."""
        kafka = self.settings.kafka()
        if kafka is None:
            raise ConfigError("reading the events topic needs MAILSCHED_KAFKA_BOOTSTRAP_SERVERS")
        from mailsched.queue.kafka_events import KafkaEventConsumer

        if self._event_consumer is None:
            self._event_consumer = KafkaEventConsumer(
                kafka, self.settings.events(), self.settings.webhooks().group_id, self.name
            )
        return EventIntake(
            self.db, self._event_consumer, FanOut(self.clock), on_written=self._fanned_out
        )

    def _fanned_out(self) -> None:
        if self._deliverer is not None:
            self._deliverer.wake()

    def webhook_deliverer(self) -> WebhookDeliverer:
        """The deliverer of webhook messages (``mailsched webhooks``, ``mailsched run``)."""
        if self._deliverer is None:
            self._deliverer = WebhookDeliverer(
                self.db, self.settings.webhooks(), self.clock, self.metrics
            )
        return self._deliverer

    def readiness_checks(self) -> dict[str, Callable[[], Awaitable[None]]]:
        """What ``/readyz`` asks: the database, and Kafka (can it take writes?) when it is
        the queue."""
        checks: dict[str, Callable[[], Awaitable[None]]] = {"database": self.db.ping}
        if isinstance(self.queue, KafkaQueue):
            checks["kafka"] = self.queue.check_writable
        return checks

    def shaping(self) -> Shaping:
        """The groups of MAILSCHED_SHAPING_FILE, read once."""
        if self._shaping is None:
            self._shaping = self.settings.shaping()
        return self._shaping

    def mailer(self) -> Mailer:
        """The mail transport, opened on first use (only workers need one)."""
        if self._mailer is None:
            self._mailer = self._make_mailer()
        return self._mailer

    def _make_mailer(self) -> Mailer:
        relays = self.settings.relays()
        if not relays:
            return OutboxMailer(self.settings.outbox_dir)
        (first, *others) = relays
        if not others and first.max_per_second is None and first.max_per_day is None:
            return SmtpMailer(first)
        metrics = self.metrics
        for relay in relays:
            metrics.relay_up.labels(relay.name).set(1)
        return Relays(
            [(SmtpMailer(r, fail_fast=True), r.max_per_second, r.max_per_day) for r in relays],
            self.settings.smtp_probe_seconds,
            observe=lambda relay, result: metrics.relay_sends.labels(relay, result).inc(),
            health=lambda relay, up: metrics.relay_up.labels(relay).set(1 if up else 0),
        )

    async def unsubscribe_signer(self) -> UnsubscribeSigner:
        """The signer of unsubscribe links: MAILSCHED_SECRET_KEY, or a key every process
        shares through the database (made on first use). Call after migrating."""
        if self.settings.secret_key is not None:
            return UnsubscribeSigner(self.settings.secret_key.get_secret_value().encode())

        async def work(conn: AsyncConnection) -> str:
            return await secrets.get_or_create(conn, "unsubscribe")

        return UnsubscribeSigner(bytes.fromhex(await self.db.run(work)))

    async def return_path(self) -> ReturnPath | None:
        """The VERP return paths of MAILSCHED_BOUNCE_ADDRESS, or ``None`` without it.

        Their key is derived from MAILSCHED_SECRET_KEY, or else shared through the
        database: the workers that make the addresses and ``mailsched inbound``,
        which checks them, must hold the same one. Call after migrating.
        """
        inbound = self.settings.inbound()
        if inbound is None:
            return None
        if self.settings.secret_key is not None:
            secret = self.settings.secret_key.get_secret_value().encode()
            # Derived, so that the key never equals the unsubscribe links' one.
            key = hmac.new(secret, b"mailsched verp", hashlib.sha256).digest()
        else:

            async def work(conn: AsyncConnection) -> str:
                return await secrets.get_or_create(conn, "verp")

            key = bytes.fromhex(await self.db.run(work))
        try:
            return ReturnPath(inbound.bounce_address, key)
        except ValueError as exc:
            raise ConfigError(f"MAILSCHED_BOUNCE_ADDRESS: {exc}") from exc

    def feedback(self) -> Feedback:
        """What bounces and complaints do, wherever they come from."""
        return Feedback(self.db, self.settings.feedback(), self.clock)

    async def inbound_server(self) -> InboundServer | None:
        """The bounce mailbox's SMTP server, or ``None`` without MAILSCHED_BOUNCE_ADDRESS.
        Call after migrating (its key may be shared through the database)."""
        inbound = self.settings.inbound()
        return_path = await self.return_path()
        if inbound is None or return_path is None:
            return None
        from mailsched.inbound.mailbox import Mailbox
        from mailsched.inbound.server import InboundServer

        mailbox = Mailbox(inbound, return_path, self.feedback(), self.metrics)
        return InboundServer(inbound, mailbox, self.metrics)

    def public_routes(
        self, signer: UnsubscribeSigner, on_created: Callable[[], None] | None = None
    ) -> tuple[APIRouter, ...]:
        """The routes beside the campaigns': suppressions, the recipients' unsubscribe,
        the event feed, the webhook endpoints, the providers' event webhooks under
        ``/inbound/`` and the dashboard under ``/ui/``.
        ``on_created`` wakes the dispatcher when the dashboard makes work due."""
        return (
            suppression_routes(self.db, self.caller(), self.clock),
            unsubscribe_routes(self.db, signer, self.clock),
            event_routes(self.db, self.caller()),
            webhook_routes(self.db, self.caller(), self.clock, self.settings.webhooks()),
            inbound_routes(
                self.feedback(),
                self.db,
                self.settings.providers(),
                sender_domain(self.settings.from_),
                self.clock,
            ),
            ui_routes(
                self.campaigns(),
                self.authenticator(),
                self.db,
                self.settings.base_url,
                self.clock,
                window=self.settings.rate_window,
                on_resumed=on_created,
                allow_private_urls=self.settings.webhooks().allow_private_urls,
                limits=self.limits(),
                shaping=self.shaping(),
            ),
        )

    def worker(self, signer: UnsubscribeSigner, return_path: ReturnPath | None = None) -> Worker:
        """A worker whose letters carry ``signer``'s unsubscribe links and, given
        :meth:`return_path`'s, each delivery's own envelope sender; with the
        MAILSCHED_DKIM_* settings, each letter is DKIM-signed."""
        links = functools.partial(
            signer.links, self.settings.base_url, sender_domain(self.settings.from_)
        )
        dkim = self.settings.dkim()
        return Worker(
            WorkerDeps(
                db=self.db,
                queue=self.queue,
                mailer=self.mailer(),
                letters=LetterFactory(
                    self.settings.from_,
                    links=links,
                    max_body_bytes=self.settings.max_body_bytes,
                    return_path=None if return_path is None else return_path.address,
                    sign=None if dkim is None else DkimSigner.from_config(dkim).sign,
                ),
                config=self.settings.worker(),
                window=self.settings.rate_window,
                clock=self.clock,
                owner=self.name,
                metrics=self.metrics,
                shaping=self.shaping(),
                connections=WorkerDeps.connection_limits(self.shaping()),
                margin=self.settings.plan_margin,
            )
        )

    async def aclose(self) -> None:
        """Close everything that was opened, queue and mail first, database last."""
        try:
            await self.queue.close()
            if self._mailer is not None:
                await self._mailer.close()
            if self._deliverer is not None:
                await self._deliverer.aclose()
            if self._event_consumer is not None:
                await self._event_consumer.close()
            if self._kafka_sink is not None:
                await self._kafka_sink.close()
        finally:
            await self.db.dispose()


async def build(settings: Settings, clock: Clock = utc_now) -> Components:
    """Open the database and the queue that ``settings`` name."""
    name = process_name()
    # A transaction left idle for a lease (its process frozen) is ended by the server,
    # so its locks cannot outlast the leases the reaper must take back.
    db = Database.from_url(settings.database_url, idle_transaction_timeout=settings.lease_seconds)
    kafka = settings.kafka()
    queue: DeliveryQueue
    if kafka is None:
        queue = MemoryQueue()
    else:
        kafka_queue = KafkaQueue(kafka, client_id=name)
        try:
            await kafka_queue.ensure_topics()
            from mailsched.queue.kafka_events import ensure_events_topic

            await ensure_events_topic(kafka, settings.events(), name)
        except BaseException:
            await kafka_queue.close()
            await db.dispose()
            raise
        queue = kafka_queue
    return Components(settings, db, queue, clock, name, in_process_queue=kafka is None)
