"""MariaDB's refusals of a value are permanent errors, not "try again later"."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text

from mailsched.errors import DataRefused, StoreUnavailable
from mailsched.store.db import Database
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
