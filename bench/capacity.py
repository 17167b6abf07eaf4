"""Per-component capacity: the figures docs/scaling.md builds its model on.

Run with the shared servers' settings in the environment::

    eval "$(scripts/services env)"
    .venv/bin/python -m bench.capacity                  # everything, about 3 minutes
    .venv/bin/python -m bench.capacity --only kafka     # one part

Every part uses mailsched's own code, in this process or in child processes (one
asyncio loop and one database pool each, as a ``mailsched`` process has), on a
fresh database and topics of its own (:class:`bench.stack.Stack`), dropped after:

* ``db``: a backlog of ``--backlog`` SCHEDULED deliveries, all due (planned in the
  past), in 10 campaigns without rules. Then, each stage timed over the rows the one
  before left:

  - **dispatcher claim**: :func:`mailsched.store.dispatch.claim_due` (1,000 rows a
    transaction, committed, nothing published) in a loop until the backlog is
    empty, by one claiming process, then (the rows put back to SCHEDULED) by two;
  - **dispatcher, end to end**: ``Dispatcher.dispatch_once`` with the real
    ``KafkaQueue`` (claim, publish, wait for ``acks=all``, commit), one process;
  - **worker claim**: :func:`mailsched.consumer.claim.claim` (the campaigns' locks,
    suppressions, history, permit, send slots, SENDING) in batches of 200 queued
    deliveries, one process and then two (each its own campaigns);
  - **outcome write**: :func:`mailsched.store.sending.record` of those batches as
    SENT (the deliveries, their slots, a ``delivery.sent`` event each), one process
    and then two;
  - **event relay**: the ``Relay`` + ``EventOutbox`` + ``KafkaEventSink`` that
    ``mailsched api`` runs, over the events the outcome stage wrote.

* ``kafka``: ``--messages`` delivery records (mailsched's key and value, from
  :mod:`mailsched.queue.kafka_codec`) published through ``KafkaQueue.publish`` in
  sends of 1,000 (the dispatcher's batch, each awaited as the dispatcher does) to a
  topic of 1 partition, then of 4; then read back through ``KafkaQueue.receive(200)``
  and ``ack`` (the worker's calls) by one consumer.

Beside each rate: the CPU seconds that MariaDB, Kafka and the bench's processes used
over it (shared servers: other clients' work counts too; the load average is
recorded). Writes ``bench/results/<timestamp>-capacity.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from bench import dbstats, machine
from bench.paths import RESULTS, scrub
from bench.procs import cpu_seconds, service_processes
from bench.quiet import wait_quiet
from bench.scenarios.event_flow import settings_of, time_relay
from bench.stack import Servers, Stack
from mailsched.bootstrap import build
from mailsched.config import KafkaConfig
from mailsched.consumer.claim import ClaimRequest, claim
from mailsched.domain.model import SendOutcome
from mailsched.queue import DueDelivery
from mailsched.queue import kafka_codec as codec
from mailsched.queue.kafka import KafkaQueue
from mailsched.store.db import Database
from mailsched.store.dispatch import claim_due
from mailsched.store.sending import Outcomes, record
from mailsched.store.transitions import Facts

PARTS = ("db", "kafka")
CAMPAIGNS = 10
DISPATCH_BATCH = 1000
WORKER_BATCH = 200
PUBLISH_BATCH = 1000
OWNER = "bench-capacity"

#: A worker's claimed batch: per campaign, the first send slot's number and the
#: deliveries (id, recipient, attempt) in slot order.
Taken = dict[int, tuple[int, list[tuple[int, str, int]]]]


class CpuMeter:
    """CPU seconds the shared servers and this process used between start and stop."""

    def __init__(self) -> None:
        self._servers = service_processes()
        self._before: dict[str, float] = {}
        self._wall = 0.0

    def _read(self) -> dict[str, float]:
        seen = {name: cpu_seconds(proc) for name, proc in self._servers.items()}
        seen["bench"] = time.process_time()
        return seen

    def start(self) -> None:
        self._before, self._wall = self._read(), time.perf_counter()

    def stop(self, children_cpu_s: float = 0.0) -> dict[str, Any]:
        after = self._read()
        used = {n: round(after[n] - self._before.get(n, after[n]), 2) for n in after}
        used["bench"] = round(used["bench"] + children_cpu_s, 2)
        used["wall_s"] = round(time.perf_counter() - self._wall, 2)
        used["load_1m"] = round(os.getloadavg()[0], 2)
        return used


def _rate(rows: int, seconds: float, cpu: dict[str, Any], **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "rows": rows,
        "seconds": round(seconds, 2),
        "per_s": round(rows / seconds) if seconds > 0 else None,
        "cpu_s": cpu,
    }
    if rows:
        out["mariadb_us_per_row"] = round(1e6 * cpu.get("mariadbd", 0.0) / rows, 1)
        out["kafka_us_per_row"] = round(1e6 * cpu.get("kafka", 0.0) / rows, 1)
        out["client_us_per_row"] = round(1e6 * cpu["bench"] / rows, 1)
    return out | extra


# ---------------------------------------------------------------- child processes


async def _sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.time()))


def _claim_child(url: str, start_at: float) -> dict[str, Any]:
    """One dispatcher's claims (no publish), until nothing is due."""

    async def main() -> dict[str, Any]:
        db = Database.from_url(url)
        try:
            await db.ping()
            await _sleep_until(start_at)
            cpu, started = time.process_time(), time.perf_counter()
            rows = 0
            marks: list[tuple[float, int]] = []  # (seconds since start, rows so far)

            async def work(conn: AsyncConnection) -> int:
                now = datetime.now(UTC)
                due = await claim_due(conn, now + timedelta(seconds=1), DISPATCH_BATCH, now)
                return len(due)

            while claimed := await db.run(work):
                rows += claimed
                marks.append((time.perf_counter() - started, rows))
            return {
                "rows": rows,
                "seconds": time.perf_counter() - started,
                "cpu_s": time.process_time() - cpu,
                "per_s_by_third": _thirds(marks),
            }
        finally:
            await db.dispose()

    return asyncio.run(main())


def _thirds(marks: list[tuple[float, int]]) -> list[int]:
    """Rows/s over the first, middle and last third of the transactions: does the rate
    hold as the backlog is worked through?"""
    if len(marks) < 3:
        return []
    cuts = [0, len(marks) // 3, 2 * len(marks) // 3, len(marks) - 1]
    rates = []
    for a, b in itertools.pairwise(cuts):
        (t0, r0), (t1, r1) = marks[a], marks[b]
        rates.append(round((r1 - r0) / (t1 - t0)) if t1 > t0 else 0)
    return rates


def _take_child(url: str, start_at: float, batches: list[dict[int, list[int]]]) -> dict[str, Any]:
    """A worker's claims of ``batches`` (by campaign), one transaction each."""

    async def main() -> dict[str, Any]:
        db = Database.from_url(url)
        try:
            await db.ping()
            await _sleep_until(start_at)
            cpu, started = time.process_time(), time.perf_counter()
            taken: list[Taken] = []
            replanned = 0
            for batch in batches:

                async def work(conn: AsyncConnection, batch: dict[int, list[int]] = batch) -> Any:
                    request = ClaimRequest(
                        deliveries=batch,
                        now=datetime.now(UTC),
                        owner=OWNER,
                        lease=timedelta(minutes=5),
                        hold=timedelta(seconds=2),
                        window=timedelta(hours=1),
                    )
                    return await claim(conn, request)

                claims = await db.run(work)
                one: Taken = {}
                for cid, c in claims.items():
                    replanned += c.replanned
                    if c.admitted:
                        rows = [(r.id, r.recipient, r.attempts + 1) for r in c.admitted]
                        one[cid] = (c.first_seq, rows)
                taken.append(one)
            return {
                "rows": sum(len(r) for t in taken for _, r in t.values()),
                "seconds": time.perf_counter() - started,
                "cpu_s": time.process_time() - cpu,
                "replanned": replanned,
                "taken": taken,
            }
        finally:
            await db.dispose()

    return asyncio.run(main())


def _record_child(url: str, start_at: float, batches: list[Taken]) -> dict[str, float]:
    """A worker's outcome writes: every delivery of each claimed batch SENT."""

    async def main() -> dict[str, float]:
        db = Database.from_url(url)
        try:
            await db.ping()
            await _sleep_until(start_at)
            cpu, started = time.process_time(), time.perf_counter()
            rows = 0
            for batch in batches:

                async def work(conn: AsyncConnection, batch: Taken = batch) -> int:
                    now = datetime.now(UTC)
                    outcomes = {
                        cid: _all_sent(cid, first, rows, now)
                        for cid, (first, rows) in batch.items()
                    }
                    return await record(conn, OWNER, outcomes, now, dict.fromkeys(batch, 1))

                lost = await db.run(work)
                rows += sum(len(r) for _, r in batch.values()) - lost
            return {
                "rows": rows,
                "seconds": time.perf_counter() - started,
                "cpu_s": time.process_time() - cpu,
            }
        finally:
            await db.dispose()

    return asyncio.run(main())


def _all_sent(cid: int, first: int, rows: list[tuple[int, str, int]], now: datetime) -> Outcomes:
    ids = [i for i, _, _ in rows]
    return Outcomes(
        sent=[(i, now) for i in ids],
        finished=[(first + k, now, SendOutcome.SENT) for k in range(len(ids))],
        replies={i: (250, f"2.0.0 Ok: queued as {i:010X}") for i in ids},
        facts={i: Facts(cid, 1, recipient, attempt) for i, recipient, attempt in rows},
        relays={first + k: "primary" for k in range(len(ids))},
    )


async def _in_children(
    pool: ProcessPoolExecutor, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]]
) -> tuple[list[Any], dict[str, Any]]:
    """Run ``fn`` in one child per ``args``, all starting at one moment; the children's
    results and the CPU used meanwhile."""
    loop = asyncio.get_running_loop()
    start_at = time.time() + 4.0  # spawned children import mailsched first
    futures = [loop.run_in_executor(pool, fn, a[0], start_at, *a[1:]) for a in args]
    await _sleep_until(start_at)
    meter = CpuMeter()
    meter.start()
    results = await asyncio.gather(*futures)
    return results, meter.stop(sum(r["cpu_s"] for r in results))


def _combined(results: list[dict[str, Any]], cpu: dict[str, Any], **extra: Any) -> dict[str, Any]:
    rows = sum(r["rows"] for r in results)
    seconds = max(r["seconds"] for r in results)
    return _rate(rows, seconds, cpu, processes=len(results), **extra)


# ---------------------------------------------------------------- the database pipeline


async def _execute(db: Database, sql: str) -> int:
    async def work(conn: AsyncConnection) -> int:
        return (await conn.execute(text(sql))).rowcount

    return await db.run(work)


async def _put_back(db: Database) -> None:
    """Every QUEUED delivery back to SCHEDULED, for the next claiming run."""
    sql = (
        "UPDATE deliveries SET status='SCHEDULED', queued_at=NULL WHERE status='QUEUED' LIMIT 50000"
    )
    while await _execute(db, sql):
        pass


async def _queued(db: Database, skip: int, count: int) -> list[tuple[int, int]]:
    async def work(conn: AsyncConnection) -> list[tuple[int, int]]:
        rows = await conn.execute(
            text(
                "SELECT id, campaign_id FROM deliveries WHERE status='QUEUED' "
                f"ORDER BY id LIMIT {int(count)} OFFSET {int(skip)}"
            )
        )
        return [(r.id, r.campaign_id) for r in rows]

    return await db.run(work)


def _batches(rows: list[tuple[int, int]]) -> list[dict[int, list[int]]]:
    """Batches of 200 in id order, as a worker's receive hands them out, by campaign."""
    out: list[dict[int, list[int]]] = []
    for start in range(0, len(rows), WORKER_BATCH):
        batch: dict[int, list[int]] = {}
        for did, cid in rows[start : start + WORKER_BATCH]:
            batch.setdefault(cid, []).append(did)
        out.append(batch)
    return out


def _by_campaign(rows: list[tuple[int, int]], parts: int) -> list[list[tuple[int, int]]]:
    """Split rows so each part has its own campaigns (workers own partitions: campaigns)."""
    split: list[list[tuple[int, int]]] = [[] for _ in range(parts)]
    campaigns = sorted({cid for _, cid in rows})
    which = {cid: k % parts for k, cid in enumerate(campaigns)}
    for row in rows:
        split[which[row[1]]].append(row)
    return split


async def _count(db: Database, status: str) -> int:
    async def work(conn: AsyncConnection) -> int:
        query = text("SELECT COUNT(*) FROM deliveries WHERE status = :s")
        return int((await conn.execute(query, {"s": status})).scalar_one())

    return await db.run(work)


async def run_db(
    servers: Servers, workdir: Path, backlog: int, worker_rows: int, say: Callable[[str], None]
) -> dict[str, Any]:
    out: dict[str, Any] = {"backlog": backlog, "campaigns": CAMPAIGNS}
    spawn = multiprocessing.get_context("spawn")
    async with Stack(servers, workdir) as stack:
        url, db = stack.database_url, stack.db
        first = datetime.now(UTC) - timedelta(seconds=backlog + 3600)
        per_campaign = -(-backlog // CAMPAIGNS)
        out["insert_s"] = round(await dbstats.bulk_backlog(db, backlog, per_campaign, first), 1)
        # Campaigns without rules: every queued delivery may start at once.
        await _execute(db, "UPDATE campaigns SET delay_seconds=0, hourly_limit=1000000000")
        say(f"backlog of {backlog:,} due deliveries inserted in {out['insert_s']} s")

        with ProcessPoolExecutor(max_workers=2, mp_context=spawn) as pool:
            for procs in (1, 2):
                results, cpu = await _in_children(pool, _claim_child, [(url,)] * procs)
                thirds = [x.pop("per_s_by_third") for x in results]
                out[f"dispatch_claim_{procs}"] = r = _combined(results, cpu, per_s_by_third=thirds)
                say(f"claim_due, {procs} process(es): {r['per_s']:,} rows/s (by third: {thirds})")
                await _put_back(db)

        components = await build(settings_of(stack))
        try:
            dispatcher = components.dispatcher()
            meter = CpuMeter()
            meter.start()
            started, rows = time.perf_counter(), 0
            while moved := await dispatcher.dispatch_once():
                rows += moved
            seconds = time.perf_counter() - started
            out["dispatch_publish_1"] = r = _rate(rows, seconds, meter.stop(), processes=1)
            say(f"dispatcher (claim + Kafka publish + commit): {r['per_s']:,} rows/s")

            with ProcessPoolExecutor(max_workers=2, mp_context=spawn) as pool:
                taken: dict[int, list[Taken]] = {}
                for procs in (1, 2):
                    # The first run's rows are SENDING by now: each run takes the next ones.
                    rows_ = await _queued(db, 0, worker_rows)
                    parts = _by_campaign(rows_, procs)
                    claims: list[tuple[Any, ...]] = [(url, _batches(p)) for p in parts]
                    results, cpu = await _in_children(pool, _take_child, claims)
                    taken[procs] = [t for r in results for t in r.pop("taken")]
                    replanned = sum(r["replanned"] for r in results)
                    out[f"worker_claim_{procs}"] = r = _combined(results, cpu, replanned=replanned)
                    say(f"worker claim, {procs} process(es): {r['per_s']:,} deliveries/s")
                for procs in (1, 2):
                    parts_: list[list[Taken]] = [[] for _ in range(procs)]
                    for batch in taken[procs]:
                        # Each process keeps the campaigns it claimed (consecutive ids).
                        if batch:
                            parts_[min(batch) % procs].append(batch)
                    writes: list[tuple[Any, ...]] = [(url, p) for p in parts_ if p]
                    results, cpu = await _in_children(pool, _record_child, writes)
                    out[f"outcome_{procs}"] = r = _combined(results, cpu)
                    say(f"outcome write, {procs} process(es): {r['per_s']:,} deliveries/s")
            out["sent"] = await _count(db, "SENT")

            meter.start()
            relay = await time_relay(components)
            out["event_relay"] = r = _rate(relay["events"], relay["seconds"], meter.stop())
            say(f"event relay → Kafka: {r['per_s']:,} events/s")
            out["tables"] = await _table_sizes(db)
        finally:
            await components.aclose()
    return out


async def _table_sizes(db: Database) -> dict[str, dict[str, int]]:
    """InnoDB's own (approximate) rows and bytes of each table, after ANALYZE."""

    async def work(conn: AsyncConnection) -> dict[str, dict[str, int]]:
        for table in ("deliveries", "send_slots", "events"):
            await conn.exec_driver_sql(f"ANALYZE TABLE {table}")
        rows = await conn.execute(
            text(
                "SELECT table_name AS tbl, table_rows AS n, data_length AS d, index_length AS i "
                "FROM information_schema.tables WHERE table_schema = DATABASE()"
            )
        )
        return {r.tbl: {"rows": int(r.n or 0), "data": int(r.d), "index": int(r.i)} for r in rows}

    return await db.run(work)


# ---------------------------------------------------------------- Kafka


async def run_kafka(
    servers: Servers, tag: str, partitions: int, messages: int, say: Callable[[str], None]
) -> dict[str, Any]:
    topic = f"{tag}.p{partitions}"
    config = KafkaConfig(servers.kafka, topic, partitions, topic + ".dlq", topic + ".g", 1)
    queue = KafkaQueue(config, client_id=f"{tag}-capacity")
    # Delivery ids and campaign ids of the sizes a busy installation has; 1,000
    # campaigns, so the keys spread over the partitions.
    deliveries = [DueDelivery(1_000_000_000 + i, 100_000 + i % 1000) for i in range(messages)]
    sample = deliveries[len(deliveries) // 2]
    size = len(codec.key(sample)) + len(codec.encode(sample, time.time()))
    out: dict[str, Any] = {"partitions": partitions, "messages": messages, "record_bytes": size}
    try:
        await queue.ensure_topics()
        meter = CpuMeter()
        meter.start()
        started = time.perf_counter()
        for k in range(0, messages, PUBLISH_BATCH):
            await queue.publish(deliveries[k : k + PUBLISH_BATCH])
        seconds = time.perf_counter() - started
        out["publish"] = r = _rate(messages, seconds, meter.stop())
        say(f"Kafka publish, {partitions} partition(s): {r['per_s']:,} records/s")

        got, first = 0, None
        deadline = time.monotonic() + 300
        while got < messages and time.monotonic() < deadline:
            batch = await queue.receive(WORKER_BATCH, 1.0)
            if not batch:
                continue
            if first is None:  # timed from the first record: the group's join left out
                first = time.perf_counter()
                meter.start()
            await queue.ack(batch)
            got += len(batch)
        assert first is not None, "nothing was read back"
        seconds = time.perf_counter() - first
        out["consume"] = r = _rate(got, seconds, meter.stop())
        say(f"Kafka receive + ack, {partitions} partition(s): {r['per_s']:,} records/s")
    finally:
        await queue.close()
        _delete(servers.kafka, [topic, topic + ".dlq"], [topic + ".g"])
    return out


def _delete(bootstrap: str, topics: list[str], groups: list[str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    for future in admin.delete_topics(topics, operation_timeout=30).values():
        with contextlib.suppress(Exception):
            future.result(timeout=30)
    for future in admin.delete_consumer_groups(groups).values():
        with contextlib.suppress(Exception):
            future.result(timeout=30)


# ---------------------------------------------------------------- the command


async def run_all(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    servers = Servers.from_env()
    out: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine.machine(),
        "versions": machine.versions(await servers.mariadb_version()),
        "kafka": [],
        "errors": [],
    }
    if args.quiet_wait:
        out["quiet"] = await asyncio.to_thread(wait_quiet, limit=args.quiet_wait)

    def say(line: str) -> None:
        print(f"  {line}", flush=True)

    if "db" in args.only:
        try:
            out["db"] = await run_db(servers, work, args.backlog, args.worker_rows, say)
        except Exception as exc:
            out["errors"].append(scrub(repr(exc)))
            say(f"db: failed: {exc!r}")
    if "kafka" in args.only:
        tag = f"mailsched.bench.{os.urandom(4).hex()}"
        for partitions in args.partitions:
            try:
                out["kafka"].append(await run_kafka(servers, tag, partitions, args.messages, say))
            except Exception as exc:
                out["errors"].append(scrub(repr(exc)))
                say(f"kafka: failed: {exc!r}")
    return out


def markdown(r: dict[str, Any]) -> str:
    """The figures as a table, with what they were measured on."""
    m = r["machine"]
    lines = [
        f"`{r['command']}` on {r['date']}: {m['nproc']} x {m['cpu_model']}, "
        f"load average {m['loadavg_1m_at_start']} at start, mailsched "
        f"`{r['versions']['mailsched_git']}`",
        "",
        "| component | rate | CPU per row (µs): MariaDB / Kafka / client | load |",
        "|---|---|---|---|",
    ]

    def row(name: str, x: dict[str, Any], unit: str) -> None:
        cpu = (
            f"{x.get('mariadb_us_per_row', 0):.0f} / {x.get('kafka_us_per_row', 0):.0f} / "
            f"{x.get('client_us_per_row', 0):.0f}"
        )
        lines.append(
            f"| {name} | **{x['per_s']:,} {unit}/s** ({x['rows']:,} in {x['seconds']} s) "
            f"| {cpu} | {x['cpu_s']['load_1m']} |"
        )

    db = r.get("db")
    if db:
        for procs in (1, 2):
            row(
                f"dispatcher claim (`claim_due`), {procs} process(es)",
                db[f"dispatch_claim_{procs}"],
                "rows",
            )
        row("dispatcher end to end (claim + publish + commit)", db["dispatch_publish_1"], "rows")
        for procs in (1, 2):
            row(
                f"worker claim (`claim.claim`), {procs} process(es)",
                db[f"worker_claim_{procs}"],
                "deliveries",
            )
        for procs in (1, 2):
            row(
                f"outcome write (`sending.record`), {procs} process(es)",
                db[f"outcome_{procs}"],
                "deliveries",
            )
        row("event relay → Kafka events topic", db["event_relay"], "events")
    for k in r["kafka"]:
        p = k["partitions"]
        row(
            f"Kafka publish, {p} partition(s), {k['record_bytes']} B records",
            k["publish"],
            "records",
        )
        row(f"Kafka receive(200) + ack, {p} partition(s)", k["consume"], "records")
    return scrub("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__)
    parser.add_argument("--backlog", type=int, default=300_000, help="due deliveries (db)")
    parser.add_argument(
        "--worker-rows", type=int, default=60_000, help="deliveries per worker-claim run (db)"
    )
    parser.add_argument("--messages", type=int, default=200_000, help="records (kafka)")
    parser.add_argument(
        "--partitions", type=int, action="append", help="partitions of a topic (kafka; repeatable)"
    )
    parser.add_argument("--only", action="append", choices=PARTS)
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to this long for no pytest in 30 s",
    )
    args = parser.parse_args(argv)
    args.only = tuple(args.only or PARTS)
    args.partitions = args.partitions or [1, 4]
    if args.worker_rows * 2 > args.backlog:
        parser.error("--backlog must hold two worker-claim runs of --worker-rows")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    with tempfile.TemporaryDirectory(prefix="mailsched-bench-") as tmp:
        results = asyncio.run(run_all(args, Path(tmp)))
    results["command"] = " ".join(
        ["python -m bench.capacity", *(argv if argv is not None else sys.argv[1:])]
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{stamp}-capacity.json"
    path.write_text(scrub(json.dumps(results, indent=2, default=str)) + "\n")
    print(markdown(results))
    print(f"bench.capacity: results in bench/results/{path.name}")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
