"""The dashboard's cost with a big campaign: ``python -m bench.ui_page``.

In-process, like the tests: the app as ``mailsched api`` serves it (the API and
the dashboard over one fresh database, MariaDB and then SQLite), called through
httpx's ASGI transport, so the figures are the server's work without a network.

One campaign of ``--deliveries`` recipients (100,000) is created through the
API's own POST; then, in SQL for speed, 60% of its deliveries are marked SENT at
their planned time plus 0-6 s (the plan spreads them over 5 hours), 5% FAILED
with one of four SMTP replies, and the rest stay SCHEDULED. 19 small campaigns
(10 recipients) fill the list's first page. Signed in through the form, it
times, the first request and then the median of ``--warm`` more:

- the campaign's page, ``GET /ui/campaigns/{id}``;
- the list's progress feed for the page's 20 campaigns, ``GET /ui/data/progress``;
- the campaign list, ``GET /ui/``;

with the CPU time of this process (the median of the warm ones: steadier than the
wall clock when others share the machine), and counts the SQL statements each of
these runs (SQLAlchemy's ``before_cursor_execute``, one per statement; on MariaDB
BEGIN and COMMIT are not among them, on SQLite the driver's BEGIN is)::

    eval "$(scripts/services env)"
    .venv/bin/python -m bench.ui_page [--deliveries 100000] [--warm 5] [--stack sqlite]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection

from bench import machine
from bench.databases import fresh_database
from mailsched.producer.api import Limits, create_app
from mailsched.producer.auth import Authenticator, caller_dependency
from mailsched.producer.campaigns import Campaigns
from mailsched.store import keys
from mailsched.store.db import Database
from mailsched.store.migrate import upgrade
from mailsched.ui.routes import ui_routes

URL = "/api/v1/email/campaign"
START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
#: Where the campaign stands when the page is read: 3 of its 5 hours gone.
NOW = START + timedelta(hours=3)
REPLIES = (
    "550 5.1.1 <user> recipient unknown",
    "552 5.2.2 mailbox full",
    "554 5.7.1 message rejected as spam",
    "421 4.7.0 try again later",
)


def _body(recipients: int, subject: str) -> dict[str, Any]:
    return {
        "userId": 1,
        "subject": subject,
        "body": "Hello from the dashboard bench.",
        "startTime": START.isoformat().replace("+00:00", "Z"),
        "delaySeconds": 0,
        "hourlyLimit": max(1, recipients // 5),  # the plan spans 5 hours
        "recipients": [f"user{i}@example.com" for i in range(recipients)],
    }


@asynccontextmanager
async def migrated_database(stack: str, workdir: Path) -> AsyncIterator[Database]:
    """A migrated database of its own (see :func:`bench.databases.fresh_database`)."""
    async with fresh_database(stack, workdir) as url:
        db = Database.from_url(url)
        try:
            await upgrade(db)
            yield db
        finally:
            await db.dispose()


async def _mark(db: Database, campaign_id: int) -> dict[str, int]:
    """60% SENT (planned time + 0-6 s), 5% FAILED with one of four replies."""

    async def work(conn: AsyncConnection) -> dict[str, int]:
        first, last = (
            await conn.execute(
                text("SELECT MIN(id), MAX(id) FROM deliveries WHERE campaign_id = :c"),
                {"c": campaign_id},
            )
        ).one()
        span = last - first + 1
        sent_cut, failed_cut = first + span * 60 // 100, first + span * 65 // 100
        if db.dialect == "sqlite":
            sent_at = "strftime('%Y-%m-%d %H:%M:%f', scheduled_at, '+' || (id % 7) || ' seconds')"
        else:
            sent_at = "scheduled_at + INTERVAL (id % 7) SECOND"
        await conn.execute(
            text(
                f"UPDATE deliveries SET status = 'SENT', sent_at = {sent_at}"
                " WHERE campaign_id = :c AND id < :cut"
            ),
            {"c": campaign_id, "cut": sent_cut},
        )
        replies = " ".join(f"WHEN {i} THEN '{r}'" for i, r in enumerate(REPLIES))
        await conn.execute(
            text(
                f"UPDATE deliveries SET status = 'FAILED', last_error = CASE id % 4 {replies} END"
                " WHERE campaign_id = :c AND id >= :lo AND id < :hi"
            ),
            {"c": campaign_id, "lo": sent_cut, "hi": failed_cut},
        )
        await conn.execute(
            text("UPDATE campaigns SET status = 'RUNNING' WHERE id = :c"), {"c": campaign_id}
        )
        rows = await conn.execute(
            text("SELECT status, COUNT(*) FROM deliveries WHERE campaign_id = :c GROUP BY status"),
            {"c": campaign_id},
        )
        return {str(status): int(n) for status, n in rows}

    return await db.run(work)


class Statements:
    """Counts the SQL statements the engine runs."""

    def __init__(self, db: Database) -> None:
        self.count = 0
        event.listen(db.engine.sync_engine, "before_cursor_execute", self._seen)

    def _seen(self, *_: object) -> None:
        self.count += 1


async def _timed(
    client: httpx.AsyncClient, path: str, warm: int, statements: Statements
) -> dict[str, Any]:
    times: list[float] = []
    cpu: list[float] = []
    sizes: set[int] = set()
    counted: set[int] = set()
    for _ in range(1 + warm):
        before = statements.count
        began, began_cpu = time.perf_counter(), time.process_time()
        answer = await client.get(path)
        times.append(time.perf_counter() - began)
        cpu.append(time.process_time() - began_cpu)
        counted.add(statements.count - before)
        if answer.status_code != 200:
            raise RuntimeError(f"{path}: {answer.status_code} {answer.text[:200]}")
        sizes.add(len(answer.content))
    return {
        "first_s": round(times[0], 3),
        "warm_median_s": round(_median(times[1:]), 3),
        "warm_range_s": [round(min(times[1:]), 3), round(max(times[1:]), 3)],
        # This process's CPU: steadier than the wall clock on a shared machine, but
        # without the database server's own work.
        "warm_median_cpu_s": round(_median(cpu[1:]), 3),
        "bytes": sorted(sizes),
        "statements": sorted(counted),
    }


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def measure(stack: str, deliveries: int, warm: int, workdir: Path) -> dict[str, Any]:
    clock: Callable[[], datetime] = lambda: NOW  # noqa: E731
    async with migrated_database(stack, workdir) as db:

        async def new_key(conn: AsyncConnection) -> str:
            return (await keys.create_key(conn, 1, "bench", NOW))[1]

        key = await db.run(new_key)
        campaigns = Campaigns(db, timedelta(hours=1), clock)
        auth = Authenticator(db, 10_000_000)
        ui = ui_routes(campaigns, auth, db, "http://bench", clock)
        app = create_app(
            campaigns,
            caller_dependency(auth),
            routers=(ui,),
            limits=Limits(max_recipients=max(deliveries, 100_000)),
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", timeout=600
        ) as client:
            bearer = {"Authorization": f"Bearer {key}"}
            began = time.perf_counter()
            created = await client.post(URL, json=_body(deliveries, "Big"), headers=bearer)
            if created.status_code != 201:
                raise RuntimeError(f"create: {created.status_code} {created.text[:300]}")
            create_s = time.perf_counter() - began
            big = int(created.json()["campaignId"])
            counts = await _mark(db, big)
            small = []
            for i in range(19):
                answer = await client.post(URL, json=_body(10, f"Small {i}"), headers=bearer)
                small.append(int(answer.json()["campaignId"]))
            signed = await client.post("/ui/sign-in", data={"key": key})
            if signed.status_code != 303:
                raise RuntimeError(f"sign-in: {signed.status_code}")
            statements = Statements(db)
            ids = ",".join(str(i) for i in [*reversed(small), big])
            return {
                "stack": stack,
                "deliveries": deliveries,
                "counts": counts,
                "create_s": round(create_s, 2),
                "campaign_page": await _timed(client, f"/ui/campaigns/{big}", warm, statements),
                "progress_20": await _timed(
                    client, f"/ui/data/progress?ids={ids}", warm, statements
                ),
                "progress_1": await _timed(
                    client, f"/ui/data/progress?ids={big}", warm, statements
                ),
                "list": await _timed(client, "/ui/", warm, statements),
            }


def _print(result: dict[str, Any]) -> None:
    print(f"\n{result['stack']}: {result['deliveries']} deliveries {result['counts']}")
    print(f"  created through the API in {result['create_s']} s")
    for name in ("campaign_page", "progress_20", "progress_1", "list"):
        r = result[name]
        low, high = r["warm_range_s"]
        print(
            f"  {name:<14} first {r['first_s']:.3f} s, warm median {r['warm_median_s']:.3f} s"
            f" ({low:.3f}-{high:.3f}; CPU {r['warm_median_cpu_s']:.3f} s),"
            f" {r['statements']} statements, {r['bytes']} bytes"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ui_page", description=__doc__)
    parser.add_argument("--deliveries", type=int, default=100_000)
    parser.add_argument("--warm", type=int, default=5)
    parser.add_argument("--stack", action="append", choices=("mariadb", "sqlite"))
    args = parser.parse_args(argv)
    print(f"mailsched {machine.git_rev()}; {machine.machine()}")
    with tempfile.TemporaryDirectory() as workdir:
        for stack in args.stack or ("mariadb", "sqlite"):
            _print(asyncio.run(measure(stack, args.deliveries, args.warm, Path(workdir))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
