"""Fixtures for both stacks: embedded (SQLite + in-process queue) and real (MariaDB + Kafka).

The real stack is started by ``scripts/services start``; its addresses come from
``eval "$(scripts/services env)"``. Without them the real-stack tests skip on a
laptop, and fail in CI (``CI`` set): CI must not pass by skipping them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from mailsched.config import Settings
from mailsched.store.db import Database, create_engine
from mailsched.store.migrate import upgrade
from tests.support.smtp_sink import SmtpSink

#: Fixtures shared across the suite: the real browser.
pytest_plugins = ["tests.support.browser"]


def real_setting(name: str) -> str:
    """A real-stack setting from the environment; skip (laptop) or fail (CI) without it."""
    value = os.environ.get(name)
    if value:
        return value
    message = f"{name} is not set: run `scripts/services start` and eval `scripts/services env`"
    if os.environ.get("CI"):
        pytest.fail(f"the real stack is required in CI: {message}")
    pytest.skip(message)


@dataclass(frozen=True)
class Stack:
    """Where a test's mailsched points: a database URL, and Kafka or not."""

    name: str
    database_url: str
    kafka_bootstrap_servers: str | None = None
    kafka_topic: str = "mailsched.deliveries"

    def env(self) -> dict[str, str]:
        """The MAILSCHED_* variables that select this stack."""
        env = {"MAILSCHED_DATABASE_URL": self.database_url}
        if self.kafka_bootstrap_servers:
            env |= {
                "MAILSCHED_KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap_servers,
                "MAILSCHED_KAFKA_TOPIC": self.kafka_topic,
                "MAILSCHED_KAFKA_DEAD_LETTER_TOPIC": f"{self.kafka_topic}.dlq",
                "MAILSCHED_KAFKA_GROUP_ID": f"{self.kafka_topic}.workers",
                "MAILSCHED_KAFKA_PARTITIONS": "6",
                # Each test's events on a topic of its own, read by a group of its own.
                "MAILSCHED_KAFKA_EVENTS_TOPIC": f"{self.kafka_topic}.events",
                "MAILSCHED_WEBHOOK_GROUP_ID": f"{self.kafka_topic}.webhooks",
            }
        return env


async def _create_mysql_database(server_url: str) -> str:
    """A fresh, empty database on the test server; returns its URL."""
    url = make_url(server_url)
    name = f"mailsched_test_{secrets.token_hex(4)}"
    engine = create_engine(url.set(database="").render_as_string(hide_password=False))
    async with engine.begin() as conn:
        await conn.execute(text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
    await engine.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


async def _drop_mysql_database(database_url: str) -> None:
    url = make_url(database_url)
    engine = create_engine(url.set(database="").render_as_string(hide_password=False))
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP DATABASE IF EXISTS {url.database}"))
    await engine.dispose()


@pytest.fixture(autouse=True)
def _no_inherited_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start from mailsched's defaults, as the processes they start do.

    ``scripts/services env`` exports ``MAILSCHED_DATABASE_URL`` and
    ``MAILSCHED_KAFKA_BOOTSTRAP_SERVERS`` for people; a test that loads
    ``Settings`` for the embedded stack must not pick them up and run on Kafka.
    The ``MAILSCHED_TEST_*`` variables, which name the real stack, are not
    settings and remain.
    """
    for name, field in Settings.model_fields.items():
        monkeypatch.delenv(field.alias or f"MAILSCHED_{name.upper()}", raising=False)


@pytest.fixture(params=["sqlite", "mariadb"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database of each kind, dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mailsched.db'}"
        return
    url = await _create_mysql_database(real_setting("MAILSCHED_TEST_MYSQL_URL"))
    try:
        yield url
    finally:
        await _drop_mysql_database(url)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A migrated database of each kind."""
    database = Database.from_url(database_url)
    await upgrade(database)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture(params=["embedded", "real"])
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    """Each deployment shape: SQLite + in-process queue, and MariaDB + Kafka."""
    if request.param == "embedded":
        yield Stack("embedded", f"sqlite:///{tmp_path / 'mailsched.db'}")
        return
    async with _real_stack() as real:
        yield real


@pytest.fixture
async def real_stack() -> AsyncIterator[Stack]:
    """MariaDB + Kafka only: the production topology."""
    async with _real_stack() as real:
        yield real


@asynccontextmanager
async def _real_stack() -> AsyncIterator[Stack]:
    kafka = real_setting("MAILSCHED_TEST_KAFKA_BOOTSTRAP_SERVERS")
    url = await _create_mysql_database(real_setting("MAILSCHED_TEST_MYSQL_URL"))
    try:
        yield Stack("real", url, kafka, f"mailsched.test.{secrets.token_hex(4)}")
    finally:
        await _drop_mysql_database(url)


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A real SMTP server on loopback that records every arrival."""
    sink = SmtpSink().start()
    try:
        yield sink
    finally:
        sink.stop()
