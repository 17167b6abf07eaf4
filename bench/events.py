"""Events and webhooks: events/s through each stage, and the time from a send to its webhook.

Run with the shared servers' settings in the environment::

    eval "$(scripts/services env)"
    .venv/bin/python -m bench.events                      # both, 100k events
    .venv/bin/python -m bench.events --only flow --events 10000

``flow`` is :mod:`bench.scenarios.event_flow` (MariaDB + Kafka, then SQLite; a
single-event endpoint, then a batching one); ``latency`` is
:mod:`bench.scenarios.webhook_latency` (``burst`` and ``steady`` to a single-event
endpoint, and ``burst`` to a batching one; MariaDB + Kafka, then ``mailsched run``
on SQLite). Prints a markdown table; writes every figure to
``bench/results/<timestamp>-events.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import machine
from bench.paths import RESULTS, scrub
from bench.procs import free_port
from bench.profiles import SETTINGS
from bench.quiet import wait_quiet
from bench.scenarios import event_flow, webhook_latency
from bench.sink import SmtpSink
from bench.stack import Servers

PARTS = ("flow", "latency")


async def run_all(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    servers = Servers.from_env()
    out: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine.machine(),
        "versions": machine.versions(await servers.mariadb_version()),
        "settings": SETTINGS,
        "flow": [],
        "latency": [],
        "errors": [],
    }
    stacks = (False,) if args.no_sqlite else (False, True)
    if "flow" in args.only:
        for sqlite in stacks:
            for batch in (False, True):
                await _step(
                    out["flow"],
                    out["errors"],
                    args.quiet_wait,
                    event_flow.run(
                        servers, work, args.events, args.single, sqlite=sqlite, batch=batch
                    ),
                )
    if "latency" in args.only:
        sink = SmtpSink(free_port())
        try:
            for sqlite in stacks:
                for shape, batch in (("burst", False), ("steady", False), ("burst", True)):
                    await _step(
                        out["latency"],
                        out["errors"],
                        args.quiet_wait,
                        webhook_latency.run(
                            servers,
                            work,
                            sink,
                            shape,
                            args.recipients,
                            SETTINGS,
                            sqlite=sqlite,
                            batch=batch,
                        ),
                    )
        finally:
            sink.stop()
    return out


async def _step(
    into: list[dict[str, Any]], errors: list[str], quiet_wait: float, work: Any
) -> None:
    """Run one measurement (after waiting for a quiet machine, up to ``quiet_wait`` s); a
    failure is recorded and the others still run."""
    quiet = await asyncio.to_thread(wait_quiet, limit=quiet_wait) if quiet_wait else None
    started = time.perf_counter()
    try:
        result = await work
    except Exception as exc:
        errors.append(scrub(f"{exc!r}\n{traceback.format_exc()[-1500:]}"))
        print(f"bench.events: failed: {exc!r}", flush=True)
        return
    result["quiet"] = quiet
    result["load_1m_after"] = round(os.getloadavg()[0], 2)
    result["duration_s"] = round(time.perf_counter() - started)
    print(f"  {_summary(result)}", flush=True)
    into.append(result)


def _summary(r: dict[str, Any]) -> str:
    if "send_to_webhook" in r:
        p = r["send_to_webhook"]
        return (
            f"{r['stack']} {r['shape']}, {r['endpoint']} endpoint: "
            f"{r['webhooks_arrived']:,}/{r['deliveries']:,} webhooks, "
            f"send→webhook p50 {p['p50_ms']:.0f} ms, p99 {p['p99_ms']:.0f} ms"
        )
    stages = [s for s in ("write", "relay", "intake", "deliver") if s in r]
    cells = ", ".join(f"{s} {r[s]['per_s']:,}/s" for s in stages)
    return f"{r['stack']} {r['endpoint']} endpoint, {r['events']:,} events: {cells}"


def markdown(r: dict[str, Any]) -> str:
    """The figures as a table, with what they were measured on."""
    m = r["machine"]
    lines = [
        f"`{r['command']}` on {r['date']}: {m['nproc']} x {m['cpu_model']}, "
        f"load average {m['loadavg_1m_at_start']} at start, mailsched "
        f"`{r['versions']['mailsched_git']}`",
        "",
        "| stack | measurement | figure |",
        "|---|---|---|",
    ]
    for f in r["flow"]:
        where = "Kafka events topic" if f["stack"] == "mariadb+kafka" else "fan-out (same txn)"
        rows = [
            ("write (`events.append`, 5,000/txn)", f["write"]),
            (f"relay → {where}", f["relay"]),
        ]
        if "intake" in f:
            rows.append(("intake: topic → fan-out", f["intake"]))
        rows.append((f"deliverer → receiver, {f['endpoint']} endpoint", f["deliver"]))
        for name, x in rows:
            extra = f", {x['requests']:,} requests" if "requests" in x else ""
            lines.append(
                f"| {f['stack']} | {name} | {x['per_s']:,} events/s "
                f"({x['events']:,} in {x['seconds']} s{extra}) |"
            )
    for t in r["latency"]:
        p, late = t["send_to_webhook"], t["sent_at_late"]
        lines.append(
            f"| {t['stack']} | send → webhook, {t['shape']}, {t['endpoint']} endpoint "
            f"({t['deliveries']:,} deliveries, "
            f"sent at {t['send_rate_per_s']}/s) | p50 {p['p50_ms']:.0f} ms, "
            f"p99 {p['p99_ms']:.0f} ms, max {p['max_ms']:.0f} ms "
            f"({t['webhooks_arrived']:,} arrived; sends late p99 {late['p99_ms']:.0f} ms) |"
        )
    return scrub("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__)
    parser.add_argument("--events", type=int, default=100_000, help="events written (flow)")
    parser.add_argument(
        "--single", type=int, default=20_000, help="events timed to a single-event endpoint"
    )
    parser.add_argument("--recipients", type=int, default=3000, help="the burst's campaign")
    parser.add_argument("--only", action="append", choices=PARTS)
    parser.add_argument("--no-sqlite", action="store_true", help="MariaDB + Kafka only")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each measurement, wait up to this long for no pytest in 30 s",
    )
    args = parser.parse_args(argv)
    args.only = tuple(args.only or PARTS)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    with tempfile.TemporaryDirectory(prefix="mailsched-bench-") as tmp:
        results = asyncio.run(run_all(args, Path(tmp)))
    results["command"] = " ".join(
        ["python -m bench.events", *(argv if argv is not None else sys.argv[1:])]
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{stamp}-events.json"
    path.write_text(scrub(json.dumps(results, indent=2, default=str)) + "\n")
    print(markdown(results))
    print(f"bench.events: results in bench/results/{path.name}")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
