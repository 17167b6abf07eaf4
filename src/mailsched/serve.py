"""Run a process's roles (API, dispatcher, worker, webhooks, the bounce mailbox) until
SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from enum import StrEnum

import uvicorn
from prometheus_client import start_http_server
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.bootstrap import Components, build
from mailsched.config import Settings
from mailsched.errors import ConfigError
from mailsched.producer.api import create_app
from mailsched.producer.dispatcher import Dispatcher
from mailsched.store import keys
from mailsched.store.migrate import upgrade
from mailsched.unsubscribe import UnsubscribeSigner

log = logging.getLogger(__name__)


class Role(StrEnum):
    """What a process does."""

    API = "api"
    DISPATCHER = "dispatcher"
    WORKER = "worker"
    #: Delivers webhooks; on Kafka, also reads the events topic into their table.
    WEBHOOKS = "webhooks"
    #: The bounce mailbox's SMTP server; in ``mailsched run`` only with a bounce address.
    INBOUND = "inbound"


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: :func:`serve` owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(settings: Settings, roles: frozenset[Role]) -> None:
    """Migrate the database, then run ``roles`` until a stop signal, then shut down in order."""
    components = await build(settings)
    try:
        await upgrade(components.db)
        if roles == frozenset(Role) and components.in_process_queue:
            await _first_start_key(components)
        await _run(components, settings, roles)
    finally:
        await components.aclose()


async def _first_start_key(components: Components) -> None:
    """``mailsched run`` on an empty database: a key for user 1, so curl works at once."""

    async def work(conn: AsyncConnection) -> str | None:
        if await keys.count_keys(conn):
            return None
        _key_id, key = await keys.create_key(conn, 1, "development", components.clock())
        return key

    key = await components.db.run(work)
    if key is not None:
        print(
            "Development API key for userId 1 (shown once; `mailsched keys create` makes more):",
            flush=True,
        )
        print(key, flush=True)


async def _run(components: Components, settings: Settings, roles: frozenset[Role]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    tasks, server = await _start(components, settings, roles, stop)
    log.info(
        "%s running (%s) as %s", ", ".join(sorted(roles)), _describe(settings), components.name
    )

    finished = asyncio.create_task(asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED))
    await asyncio.wait(
        [finished, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
    )
    stop.set()
    if server is not None:
        server.should_exit = True
    log.info("stopping: finishing the work in flight")
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for task, result in zip(tasks, results, strict=True):
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            log.error("%s stopped with an error: %r", task.get_name(), result)
            raise result
    log.info("stopped")


async def _start(
    components: Components, settings: Settings, roles: frozenset[Role], stop: asyncio.Event
) -> tuple[list[asyncio.Task[None]], _Server | None]:
    """Start the roles' tasks; the API server is returned too, to be told to exit."""
    signer = await components.unsubscribe_signer()
    tasks: list[asyncio.Task[None]] = []
    dispatcher = components.dispatcher() if Role.DISPATCHER in roles else None
    if dispatcher is not None:
        if components.in_process_queue:
            await dispatcher.recover_in_process_queue()
        tasks.append(asyncio.create_task(dispatcher.run(stop), name="dispatcher"))
        tasks.extend(_relay_tasks(components, stop))
    if Role.WORKER in roles:
        worker = components.worker(signer, await components.return_path())
        tasks.append(asyncio.create_task(worker.run(stop), name="worker"))
    if Role.WEBHOOKS in roles:
        tasks.extend(_webhook_tasks(components, stop))
    if Role.INBOUND in roles:
        tasks.extend(await _inbound_tasks(components, roles, stop))
    if Role.API not in roles and roles & {Role.WORKER, Role.WEBHOOKS, Role.INBOUND}:
        _serve_metrics(components, settings)
    server: _Server | None = None
    if Role.API in roles:
        server = _api_server(components, settings, signer, dispatcher)
        tasks.append(asyncio.create_task(server.serve(), name="api"))
    return tasks, server


def _api_server(
    components: Components,
    settings: Settings,
    signer: UnsubscribeSigner,
    dispatcher: Dispatcher | None,
) -> _Server:
    app = create_app(
        components.campaigns(),
        components.caller(),
        on_created=dispatcher.wake if dispatcher else None,
        checks=components.readiness_checks(),
        metrics=components.metrics,
        routers=components.public_routes(signer, dispatcher.wake if dispatcher else None),
        limits=components.limits(),
    )
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None, access_log=False
    )
    return _Server(config)


def _relay_tasks(components: Components, stop: asyncio.Event) -> list[asyncio.Task[None]]:
    """Beside a dispatcher: the relays of dead letters and of events, and the pruner
    of old events."""
    return [
        asyncio.create_task(components.relay().run(stop), name="relay"),
        asyncio.create_task(components.event_relay().run(stop), name="event-relay"),
        asyncio.create_task(components.event_pruner().run(stop), name="event-pruner"),
    ]


def _webhook_tasks(components: Components, stop: asyncio.Event) -> list[asyncio.Task[None]]:
    """The webhook deliverer, and on Kafka the reader of the events topic that feeds it
    (without Kafka, the event relay writes the webhooks' table itself)."""
    tasks: list[asyncio.Task[None]] = []
    if not components.in_process_queue:
        intake = components.event_intake()
        tasks.append(asyncio.create_task(intake.run(stop), name="event-intake"))
    deliverer = components.webhook_deliverer()
    tasks.append(asyncio.create_task(deliverer.run(stop), name="webhooks"))
    return tasks


async def _inbound_tasks(
    components: Components, roles: frozenset[Role], stop: asyncio.Event
) -> list[asyncio.Task[None]]:
    """The bounce mailbox, listening before this returns; ``mailsched run`` without a
    bounce address has none, ``mailsched inbound`` without one is a mistake."""
    server = await components.inbound_server()
    if server is None:
        if roles == {Role.INBOUND}:
            raise ConfigError("`mailsched inbound` needs MAILSCHED_BOUNCE_ADDRESS")
        return []
    await server.start()
    return [asyncio.create_task(server.run(stop), name="inbound")]


def _serve_metrics(components: Components, settings: Settings) -> None:
    """A worker, webhooks or inbound process has no API: it serves /metrics on its own port,
    from a thread."""
    try:
        server, _thread = start_http_server(
            settings.metrics_port, settings.metrics_host, registry=components.metrics.registry
        )
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {settings.metrics_host}:{settings.metrics_port} ({exc}); "
            "set MAILSCHED_METRICS_PORT (0 picks a free port)"
        ) from exc
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, server.server_port)


def _describe(settings: Settings) -> str:
    relays = settings.relays()
    names = ", ".join(relay.name for relay in relays)
    mail = f"smtp {names}" if relays else f"outbox {settings.outbox_dir}"
    queue = f"kafka {settings.kafka_bootstrap_servers}" if settings.kafka() else "in-process queue"
    db = settings.database_url.split("://", 1)[0]
    return f"{db} database, {queue}, {mail}"
