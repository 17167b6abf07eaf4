"""2. Throughput: N deliveries due at once, dispatcher -> Kafka -> worker(s) -> smtp-sink.

Two mixes of the same N: ``ten large`` campaigns without rules (the bulk case), and
``many small`` campaigns of a few recipients each with ``delaySeconds: 1``, the work
of the ``smooth`` timeliness shape: every claim then spans many campaigns with one
delivery due each, which is what made small campaigns dearer to send.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench import dbstats, waits
from bench.client import campaign_body, far_future, http_client, post_all, posting_time
from bench.procs import Mailsched, cpu_seconds, service_processes
from bench.pyspy import Recording, summarize
from bench.sink import SmtpSink
from bench.stack import Servers, Stack, port_of


@dataclass(frozen=True, slots=True)
class Mix:
    """The campaigns of one run: how many, of how many recipients each, and their delay."""

    name: str
    campaigns: int
    recipients: int
    delay: int = 0

    @property
    def deliveries(self) -> int:
        return self.campaigns * self.recipients


def ten_large(total: int) -> Mix:
    return Mix("ten large", 10, total // 10)


def many_small(total: int, each: int) -> Mix:
    """``total // each`` campaigns of ``each``, a second apart: all first emails are due at
    once, and while the worker is slower than one email per campaign a second it never
    waits for a gap, so the rate is the worker's, not the plan's."""
    return Mix("many small", total // each, each, delay=1)


async def run(
    servers: Servers,
    workdir: Path,
    sink: SmtpSink,
    mix: Mix,
    workers: int,
    settings: dict[str, str],
    profile_dir: Path | None = None,
    processes: int = 1,
) -> dict[str, Any]:
    """Workers (each ``mailsched worker --processes <processes>``) join first; then ``mix``'s
    campaigns are posted, all starting at one instant a little later, so that posting is
    over before the first send. The rate is over the SENT times."""
    total = mix.deliveries
    async with Stack(servers, workdir, common=settings) as stack, http_client() as client:
        api = stack.start("api")
        command = "worker" if processes == 1 else f"worker --processes {processes}"
        procs = [stack.start(command, smtp_url=sink.url) for _ in range(workers)]
        lead = await _posting_time(client, api, stack, mix)
        start = datetime.now(UTC) + timedelta(seconds=2 + lead)
        bodies = (
            campaign_body(mix.recipients, start=start, delay=mix.delay, tag=f"t{k}")
            for k in range(mix.campaigns)
        )
        # Ten large bodies one after the other, as always; small ones 16 at a time.
        parallel, posting = 1 if mix.campaigns <= 10 else 16, time.perf_counter()
        await post_all(client, port_of(api), stack.api_key, bodies, parallel)
        posting = time.perf_counter() - posting
        overran = (datetime.now(UTC) - start).total_seconds()
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
            "mix": mix.name,
            "deliveries": total,
            "campaigns": mix.campaigns,
            "recipients_each": mix.recipients,
            "delay_s": mix.delay,
            "workers": workers,
            "processes": processes,
            "finished": done,
            "sent": sent,
            "emails_per_s": round(sent / span) if span else None,
            "posting_s": round(posting, 2),
            "posting_overran_start_s": round(max(0.0, overran), 2),
            "sink_messages": sink.messages - sink_before,
            "wall_s_from_due": round(wall, 2),
            "cpu_share_pct": cpu.shares(wall),
            "cpu_us_per_email": cpu.per_email_us(sent),
            "commands": [api.shell(), procs[0].shell()],
            "profiles": {k: summarize(r.out) for k, r in recordings.items()},
        }


async def _posting_time(client: httpx.AsyncClient, api: Mailsched, stack: Stack, mix: Mix) -> float:
    if mix.campaigns <= 10:
        return mix.deliveries / 20_000  # ten large bodies: their rows' insert dominates
    sample = [
        campaign_body(mix.recipients, start=far_future(), delay=mix.delay, tag=f"warm{k}")
        for k in range(min(200, mix.campaigns // 10))
    ]
    return await posting_time(client, port_of(api), stack.api_key, sample, mix.campaigns)


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
        self._after: dict[str, float] | None = None

    def _read(self) -> dict[str, float]:
        return {n: p.cpu_seconds() for n, p in self._ours.items()} | {
            n: cpu_seconds(p) for n, p in self._others.items()
        }

    def _used(self) -> dict[str, float]:
        """CPU seconds per process, read once at the first call: the end of the run."""
        if self._after is None:
            self._after = self._read()
        return {n: self._after[n] - self._before[n] for n in self._after}

    def shares(self, wall: float) -> dict[str, float]:
        """Percent of one core, per process, over ``wall`` seconds; ``machine``: of all cores."""
        shares: dict[str, float] = {n: round(100 * s / wall) for n, s in self._used().items()}
        idle = psutil.cpu_times().idle - self._idle_before
        cores = psutil.cpu_count() or 1
        shares["machine_busy_of_all_cores"] = round(100 * (1 - idle / (wall * cores)))
        return shares

    def per_email_us(self, emails: int) -> dict[str, float]:
        """CPU microseconds per email sent, per process (the shared servers' include
        whatever other clients made them do meanwhile)."""
        return {n: round(1e6 * s / emails) for n, s in self._used().items()} if emails else {}
