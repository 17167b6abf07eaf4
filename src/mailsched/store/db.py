"""The engine, its transactions, and SQLAlchemy's errors translated to ours.

SQLite (embedded) and MySQL/MariaDB (production) differ only here:

* SQLite runs every transaction as ``BEGIN IMMEDIATE``, so the single writer is
  taken up front and two transactions never deadlock upgrading a read lock; WAL
  lets readers go on meanwhile.
* MySQL runs under READ COMMITTED: measured here, two dispatchers claiming with
  ``SKIP LOCKED`` under REPEATABLE READ deadlock on gap locks, and under READ
  COMMITTED they did not. Deadlocks (1213) and lock wait timeouts (1205) are
  retried all the same.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import event, exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from mailsched.errors import DataRefused, DuplicateKey, StoreError, StoreUnavailable
from mailsched.store import events

log = logging.getLogger(__name__)

T = TypeVar("T")

#: MySQL errors that mean "run the transaction again".
_RETRY_CODES = frozenset({1205, 1213})
#: MySQL client/server errors that mean "the server cannot be reached".
_UNREACHABLE_CODES = frozenset({1040, 1053, 2002, 2003, 2005, 2006, 2013, 2014, 2055, 4031})
#: MySQL errors that mean "this value does not fit its column": too long (1406),
#: out of range (1264, 1690), not of its type (1366, 1292, 1265), no NULL (1048).
_DATA_CODES = frozenset({1048, 1264, 1265, 1292, 1366, 1406, 1690})


def async_url(url: str) -> str:
    """Turn a user-facing URL into one naming the async driver mailsched uses."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if backend in ("mysql", "mariadb"):
        query = {"charset": "utf8mb4", **parsed.query}
        return parsed.set(drivername="mysql+asyncmy", query=query).render_as_string(
            hide_password=False
        )
    raise StoreError(f"unsupported database URL scheme {parsed.drivername!r}")


def create_engine(
    url: str, pool_size: int = 10, idle_transaction_timeout: float | None = None
) -> AsyncEngine:
    """An engine for ``url`` with mailsched's transaction rules (see the module docstring).

    With ``idle_transaction_timeout``, the server ends a session whose transaction
    sat that long without a statement (MySQL and MariaDB; see
    :func:`_end_idle_transactions`).
    """
    real_url = async_url(url)
    if real_url.startswith("sqlite"):
        engine = create_async_engine(real_url, connect_args={"timeout": 30})
        _sqlite_begin_immediate(engine)
        return engine
    engine = create_async_engine(
        real_url,
        isolation_level="READ COMMITTED",
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_recycle=1800,
    )
    if idle_transaction_timeout is not None:
        _end_idle_transactions(engine, max(1, math.ceil(idle_transaction_timeout)))
    return engine


def _end_idle_transactions(engine: AsyncEngine, seconds: int) -> None:
    """Have the server end a session whose transaction waits ``seconds`` for its client.

    A process that is frozen (SIGSTOP, a VM paused, a debugger) rather than dead
    keeps its TCP connection, so the server keeps its transaction's row locks:
    a campaign's other workers and the reaper then wait on them for as long as it
    is frozen, and the reaper cannot take back even its expired leases. The server
    rolls such a transaction back and closes the session (MariaDB's
    ``idle_transaction_timeout``; MySQL, which has none, closes an idle session
    after ``wait_timeout`` in or out of a transaction, and the pool's pre-ping
    replaces it). The process learns of it at its next statement (error 4031 or
    2013: :class:`StoreUnavailable`).
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT VERSION()")
            (version,) = cursor.fetchone()
            name = "idle_transaction_timeout" if "mariadb" in version.lower() else "wait_timeout"
            cursor.execute(f"SET SESSION {name} = {seconds:d}")
        finally:
            cursor.close()


def _sqlite_begin_immediate(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself, not the driver.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _mysql_code(error: exc.DBAPIError) -> int | None:
    args = getattr(error.orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _is_retryable(error: exc.DBAPIError) -> bool:
    if _mysql_code(error) in _RETRY_CODES:
        return True
    return isinstance(error, exc.OperationalError) and "database is locked" in str(error.orig)


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn SQLAlchemy and driver errors into :class:`StoreError` and its kinds:
    :class:`StoreUnavailable`, :class:`DuplicateKey`, :class:`DataRefused`."""
    try:
        yield
    except exc.DBAPIError as error:
        if error.connection_invalidated or _mysql_code(error) in _UNREACHABLE_CODES:
            raise StoreUnavailable(f"database unreachable: {error.orig}") from error
        if isinstance(error, exc.IntegrityError) and (
            _mysql_code(error) == 1062 or "UNIQUE constraint failed" in str(error.orig)
        ):
            raise DuplicateKey(f"duplicate key: {error.orig}") from error
        if isinstance(error, exc.DataError) or _mysql_code(error) in _DATA_CODES:
            raise DataRefused(f"value refused: {error.orig}") from error
        raise StoreError(f"database error: {error.orig}") from error
    except (OSError, TimeoutError) as error:
        raise StoreUnavailable(f"database unreachable: {error}") from error
    except exc.SQLAlchemyError as error:
        raise StoreError(str(error)) from error


class Database:
    """The one way services reach the database: a unit of work per call of :meth:`run`."""

    def __init__(self, engine: AsyncEngine, retries: int = 8) -> None:
        self.engine = engine
        self._retries = retries
        #: Told of the events each committed unit of work wrote (the metrics).
        self.on_events: Callable[[Mapping[str, int]], None] | None = None

    @classmethod
    def from_url(
        cls, url: str, pool_size: int = 10, idle_transaction_timeout: float | None = None
    ) -> Database:
        return cls(create_engine(url, pool_size, idle_transaction_timeout))

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"mysql"``."""
        return self.engine.dialect.name

    async def run(
        self, work: Callable[[AsyncConnection], Awaitable[T]], *, retry: bool = True
    ) -> T:
        """Run ``work`` in one transaction: commit if it returns, roll back if it raises.

        Deadlocks and lock timeouts run ``work`` again from the start (unless not
        ``retry``), so it must not have effects outside the transaction that cannot
        be repeated (the outbox relay's publish may be: its readers take a message
        twice; a streamed request body cannot be read twice).

        The events that ``work`` staged (:func:`mailsched.store.events.stage`) are
        written last, just before the commit: see :mod:`mailsched.store.events`.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                with translate_errors():
                    async with self.engine.begin() as conn:
                        events.discard(conn)
                        result = await work(conn)
                        written = await events.flush(conn)
                if written and self.on_events is not None:
                    self.on_events(written)
                return result
            except StoreError as error:
                cause = error.__cause__
                if (
                    attempt > self._retries
                    or not retry
                    or not isinstance(cause, exc.DBAPIError)
                    or not _is_retryable(cause)
                ):
                    raise
                log.info("transaction retried after %s (attempt %d)", cause.orig, attempt)
                await asyncio.sleep(random.uniform(0.005, 0.02) * attempt)

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the database answers."""
        with translate_errors():
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
