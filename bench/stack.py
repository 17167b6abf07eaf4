"""A fresh mailsched installation per measurement: its own database and Kafka topics.

Other people use the same MariaDB and Kafka at the same time (the test suite),
so nothing here touches a database or topic it did not create.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka.admin import AdminClient
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from bench.procs import Mailsched, free_port
from mailsched.store.db import Database, async_url
from mailsched.store.migrate import upgrade


@dataclass(frozen=True, slots=True)
class Servers:
    """The MariaDB server and Kafka brokers (``eval "$(scripts/services env)"``)."""

    mysql_url: str
    kafka: str

    @classmethod
    def from_env(cls) -> Servers:
        try:
            return cls(
                os.environ["MAILSCHED_DATABASE_URL"],
                os.environ["MAILSCHED_KAFKA_BOOTSTRAP_SERVERS"],
            )
        except KeyError as missing:
            raise SystemExit(f"bench: {missing} is not set; run it through scripts/bench") from None

    async def mariadb_version(self) -> str:
        engine = create_async_engine(async_url(self.mysql_url))
        try:
            async with engine.connect() as conn:
                return str((await conn.execute(text("SELECT VERSION()"))).scalar_one())
        finally:
            await engine.dispose()


@dataclass
class Stack:
    """One fresh database (MariaDB, or SQLite in ``workdir``) and, with MariaDB, fresh topics."""

    servers: Servers
    workdir: Path
    sqlite: bool = False
    common: dict[str, str] = field(default_factory=dict)
    procs: list[Mailsched] = field(default_factory=list)
    api_key: str | None = None

    def __post_init__(self) -> None:
        tag = secrets.token_hex(4)
        self.name = f"mailsched_bench_{tag}"
        if self.sqlite:
            self.database_url = f"sqlite:///{self.workdir / (self.name + '.db')}"
        else:
            self.database_url = (
                make_url(self.servers.mysql_url).set(database=self.name).render_as_string(False)
            )
        self.topic = f"mailsched.bench.{tag}"
        self.db = Database.from_url(self.database_url)

    async def __aenter__(self) -> Stack:
        if not self.sqlite:
            await self._server_sql(f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4")
        try:
            await upgrade(self.db)
            self.api_key = await _api_key(self.db)
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        try:
            for proc in reversed(self.procs):
                proc.stop()
            await self.db.dispose()
        finally:
            if not self.sqlite:
                try:
                    await self._server_sql(f"DROP DATABASE IF EXISTS `{self.name}`")
                finally:
                    self._delete_topics()

    def settings(self, **extra: str) -> dict[str, str]:
        """The MAILSCHED_* settings of a process on this stack."""
        env = {
            "MAILSCHED_DATABASE_URL": self.database_url,
            "MAILSCHED_LOG_LEVEL": "INFO",
            # Several processes per host: each its own metrics port (older builds ignore it).
            "MAILSCHED_METRICS_PORT": "0",
            # The bench is one client posting hundreds of campaigns a second, up to 100k each.
            "MAILSCHED_REQUESTS_PER_MINUTE": "10000000",
            "MAILSCHED_MAX_RECIPIENTS": "1000000",
        }
        if not self.sqlite:
            env |= {
                "MAILSCHED_KAFKA_BOOTSTRAP_SERVERS": self.servers.kafka,
                "MAILSCHED_KAFKA_TOPIC": self.topic,
                "MAILSCHED_KAFKA_DEAD_LETTER_TOPIC": self.topic + ".dlq",
                "MAILSCHED_KAFKA_GROUP_ID": self.topic + ".workers",
                # The events topic and the webhooks' group, this stack's own too (older
                # builds, without events, ignore them).
                "MAILSCHED_KAFKA_EVENTS_TOPIC": self.topic + ".events",
                "MAILSCHED_WEBHOOK_GROUP_ID": self.topic + ".webhooks",
            }
        return env | self.common | {f"MAILSCHED_{k.upper()}": v for k, v in extra.items()}

    def start(self, command: str, **extra: str) -> Mailsched:
        """Start ``mailsched <command>``; an API is waited for, and so is a worker's first
        partition assignment."""
        if command in ("api", "run"):
            extra.setdefault("port", str(free_port()))
        log = self.workdir / f"{self.name}-{command}-{len(self.procs)}.log"
        proc = Mailsched(command, self.settings(**extra), log)
        self.procs.append(proc)
        if command in ("api", "run"):
            proc.wait_healthy(int(extra["port"]))
        elif command.split()[0] == "worker":
            # Each process of `worker --processes N` joins the group: wait for them all,
            # or the last to join would rebalance the group mid-run.
            words = command.split()
            processes = int(words[words.index("--processes") + 1]) if "--processes" in words else 1
            proc.wait_log("assigned", times=processes)
        return proc

    async def _server_sql(self, statement: str) -> None:
        engine = create_async_engine(async_url(self.servers.mysql_url))
        try:
            async with engine.begin() as conn:
                await conn.execute(text(statement))
        finally:
            await engine.dispose()

    def _delete_topics(self) -> None:
        admin = AdminClient({"bootstrap.servers": self.servers.kafka, "log_level": 3})
        topics = [self.topic, self.topic + ".dlq", self.topic + ".events"]
        for future in admin.delete_topics(topics, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                future.result(timeout=30)
        groups = [self.topic + ".workers", self.topic + ".webhooks"]
        for future in admin.delete_consumer_groups(groups).values():
            with contextlib.suppress(Exception):
                future.result(timeout=30)


async def _api_key(db: Database) -> str | None:
    """A key for user 1, on builds whose API wants one."""
    try:
        from mailsched.store import keys
    except ImportError:
        return None

    async def work(conn: AsyncConnection) -> tuple[int, str]:
        return await keys.create_key(conn, 1, "bench", datetime.now(UTC))

    return (await db.run(work))[1]


def port_of(proc: Mailsched) -> int:
    return int(proc.settings["MAILSCHED_PORT"])
