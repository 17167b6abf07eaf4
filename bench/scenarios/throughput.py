"""2. Throughput: N deliveries due at once, dispatcher -> Kafka -> worker(s) -> smtp-sink."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

from bench import dbstats, waits
from bench.client import campaign_body, http_client, post
from bench.procs import Mailsched, cpu_seconds, service_processes
from bench.pyspy import Recording, summarize
from bench.sink import SmtpSink
from bench.stack import Servers, Stack, port_of

CAMPAIGNS = 10


async def run(
    servers: Servers,
    workdir: Path,
    sink: SmtpSink,
    total: int,
    workers: int,
    settings: dict[str, str],
    profile_dir: Path | None = None,
    processes: int = 1,
) -> dict[str, Any]:
    """Workers (each ``mailsched worker --processes <processes>``) join first; then 10
    campaigns are posted, all due at one instant a little later, so that posting is over
    before the first send. The rate is over the SENT times."""
    async with Stack(servers, workdir, common=settings) as stack, http_client() as client:
        api = stack.start("api")
        command = "worker" if processes == 1 else f"worker --processes {processes}"
        procs = [stack.start(command, smtp_url=sink.url) for _ in range(workers)]
        start = datetime.now(UTC) + timedelta(seconds=2 + total / 20_000)
        for k in range(CAMPAIGNS):
            body = campaign_body(total // CAMPAIGNS, start=start, tag=f"t{k}")
            await post(client, port_of(api), body, stack.api_key)
        await waits.until(start - timedelta(seconds=1.5))
        recordings = _record(profile_dir, api, procs[0])
        cpu = _CpuMeter(
            {"api": api, **{f"worker{i + 1}": w for i, w in enumerate(procs)}}, sink.pid
        )
        sink_before, wall_started = sink.messages, time.perf_counter()
        done = await waits.finished(stack, total, within=max(120.0, total / 100))
        wall = time.perf_counter() - wall_started
        for recording in recordings.values():
            recording.stop()
        sent, span = await dbstats.send_span(stack.db)
        return {
            "deliveries": total,
            "campaigns": CAMPAIGNS,
            "workers": workers,
            "processes": processes,
            "finished": done,
            "sent": sent,
            "emails_per_s": round(sent / span) if span else None,
            "sink_messages": sink.messages - sink_before,
            "wall_s_from_due": round(wall, 2),
            "cpu_share_pct": cpu.shares(wall),
            "commands": [api.shell(), procs[0].shell()],
            "profiles": {k: summarize(r.out) for k, r in recordings.items()},
        }


def _record(profile_dir: Path | None, api: Mailsched, worker: Mailsched) -> dict[str, Recording]:
    if profile_dir is None:
        return {}
    return {
        "worker": Recording(worker.pid, profile_dir / "worker.pyspy.txt"),
        "api_dispatcher": Recording(api.pid, profile_dir / "api.pyspy.txt"),
    }


class _CpuMeter:
    """CPU seconds each process (ours and the shared servers) used since construction."""

    def __init__(self, procs: dict[str, Mailsched], sink_pid: int) -> None:
        self._ours = procs
        self._others = service_processes() | {"smtp-sink": psutil.Process(sink_pid)}
        self._before = self._read()
        self._idle_before = psutil.cpu_times().idle

    def _read(self) -> dict[str, float]:
        return {n: p.cpu_seconds() for n, p in self._ours.items()} | {
            n: cpu_seconds(p) for n, p in self._others.items()
        }

    def shares(self, wall: float) -> dict[str, float]:
        """Percent of one core, per process, over ``wall`` seconds; ``machine``: of all cores."""
        after = self._read()
        shares: dict[str, float] = {
            n: round(100 * (after[n] - self._before[n]) / wall) for n in after
        }
        idle = psutil.cpu_times().idle - self._idle_before
        cores = psutil.cpu_count() or 1
        shares["machine_busy_of_all_cores"] = round(100 * (1 - idle / (wall * cores)))
        return shares
