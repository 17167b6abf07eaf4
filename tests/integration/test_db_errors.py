"""MariaDB's refusals of a value are permanent errors, not "try again later"; a transaction
left idle by a frozen process is ended by the server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.errors import DataRefused, StoreUnavailable
from mailsched.store.db import Database, create_engine
from tests.conftest import _create_mysql_database, _drop_mysql_database, real_setting


@pytest.fixture
async def mariadb() -> AsyncIterator[Database]:
    url = await _create_mysql_database(real_setting("MAILSCHED_TEST_MYSQL_URL"))
    db = Database.from_url(url)
    try:
        await db.run(
            lambda conn: conn.execute(
                text(
                    "CREATE TABLE probe (short VARCHAR(2), small TINYINT, "
                    "num INT NOT NULL DEFAULT 0, day DATE, long_text TEXT)"
                )
            )
        )
        yield db
    finally:
        await db.dispose()
        await _drop_mysql_database(url)


@pytest.mark.parametrize(
    ("column", "value", "code"),
    [
        ("short", "abc", 1406),
        # A recipient's variables in deliveries.vars before it was MEDIUMTEXT.
        ("long_text", "x" * 70_000, 1406),
        ("small", 1000, 1264),
        ("num", "abc", 1366),
        ("day", "2026-13-45", 1292),
        ("num", None, 1048),
    ],
)
async def test_a_value_that_does_not_fit_is_refused_for_good(
    mariadb: Database, column: str, value: Any, code: int
) -> None:
    attempts = 0

    async def insert(conn: Any) -> None:
        nonlocal attempts
        attempts += 1
        await conn.execute(text(f"INSERT INTO probe ({column}) VALUES (:value)"), {"value": value})

    with pytest.raises(DataRefused) as refused:
        await mariadb.run(insert)
    assert not isinstance(refused.value, StoreUnavailable)
    assert refused.value.__cause__.orig.args[0] == code  # type: ignore[union-attr]
    assert attempts == 1

    async def count(conn: Any) -> int:
        return int((await conn.execute(text("SELECT COUNT(*) FROM probe"))).scalar_one())

    assert await mariadb.run(count) == 0


@pytest.mark.realstack
async def test_a_transaction_left_idle_loses_its_locks_and_its_session(
    mariadb: Database,
) -> None:
    """A frozen process (SIGSTOP) keeps its connection: without a server-side limit its
    row locks would hold up every other transaction for as long as it is frozen."""
    await mariadb.run(lambda conn: conn.execute(text("INSERT INTO probe (num) VALUES (1)")))
    url = mariadb.engine.url.render_as_string(hide_password=False)
    frozen = Database(create_engine(url, pool_size=1, idle_transaction_timeout=1), retries=0)
    locked, taken = asyncio.Event(), asyncio.Event()

    async def freeze(conn: AsyncConnection) -> None:
        await conn.execute(text("SELECT num FROM probe FOR UPDATE"))
        locked.set()
        await taken.wait()  # frozen: no statement until the other has the lock
        await conn.execute(text("SELECT 1"))

    async def take(conn: AsyncConnection) -> int:
        # Long enough for the server's idle limit, short of the test's patience.
        await conn.execute(text("SET SESSION innodb_lock_wait_timeout = 20"))
        num = await conn.scalar(text("SELECT num FROM probe FOR UPDATE"))
        taken.set()
        return int(num)

    async def other() -> int:
        await locked.wait()
        try:
            return await mariadb.run(take, retry=False)
        finally:
            taken.set()  # a take that failed must not leave the frozen one waiting

    try:
        frozen_run = asyncio.create_task(frozen.run(freeze))
        assert await other() == 1  # the lock was let go without the frozen one's help
        with pytest.raises(StoreUnavailable):
            await frozen_run
    finally:
        await frozen.dispose()
