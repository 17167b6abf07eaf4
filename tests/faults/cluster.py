"""One scenario's world: real ``mailsched api`` and ``mailsched worker`` processes on the
real stack, a :class:`FaultSink`, and the figures read back from the sink and the database."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from mailsched.store.db import Database
from tests.conftest import Stack
from tests.faults.harness import Figures, figures
from tests.support.fault_sink import FaultSink
from tests.support.processes import Mailsched, auth, create_key
from tests.support.smtp_sink import free_port

#: The shortened settings of every scenario (see the issue "Guarantees under faults").
WINDOW = 4.0
LEASE = 8.0
FAST = {
    "MAILSCHED_RATE_WINDOW_SECONDS": str(WINDOW),
    "MAILSCHED_LEASE_SECONDS": str(LEASE),
    "MAILSCHED_REQUEUE_AFTER_SECONDS": "5",
    "MAILSCHED_RETRY_BASE_SECONDS": "0.2",
    "MAILSCHED_RETRY_CAP_SECONDS": "1",
    "MAILSCHED_MAX_ATTEMPTS": "10",
    "MAILSCHED_SMTP_TIMEOUT_SECONDS": "10",
    "MAILSCHED_SHUTDOWN_GRACE_SECONDS": "5",
    "MAILSCHED_FROM": "news@example.com",
}


def query(database_url: str, sql: str, **params: Any) -> list[Any]:
    """Rows of one SQL statement on the test database."""

    async def run() -> list[Any]:
        db = Database.from_url(database_url, pool_size=1)
        try:

            async def work(conn: Any) -> list[Any]:
                return list(await conn.execute(text(sql), params))

            return await db.run(work)
        finally:
            await db.dispose()

    return asyncio.run(run())


class Cluster:
    """Processes of one scenario run; :meth:`close` stops whatever still runs."""

    def __init__(self, stack: Stack, sink: FaultSink, tmp: Path, **settings: str) -> None:
        self.stack = stack
        self.sink = sink
        self.tmp = tmp
        self.env = (
            stack.env()
            | FAST
            | {"MAILSCHED_PORT": str(free_port()), "MAILSCHED_SMTP_URL": sink.url}
            | settings
        )
        self.api: Mailsched | None = None
        self.workers: list[Mailsched] = []
        self.window = float(self.env["MAILSCHED_RATE_WINDOW_SECONDS"])
        #: Where a scenario files its figures (the ``report`` fixture).
        self.report: Any = None
        #: The API key's header, made on the first start of the API.
        self.headers: dict[str, str] = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.env['MAILSCHED_PORT']}"

    def start_api(self, name: str = "api") -> Mailsched:
        self.api = Mailsched(["api"], self.env, self.tmp, name).start()
        self.api.wait_ready(60)
        if not self.headers:
            self.headers = auth(create_key(self.env, self.tmp))
        return self.api

    def start_worker(self) -> Mailsched:
        return self.start_workers(1)[0]

    def start_workers(self, count: int) -> list[Mailsched]:
        """Start ``count`` workers at once; wait until each runs."""
        started = []
        for _ in range(count):
            worker = Mailsched(["worker"], self.env, self.tmp, f"worker{len(self.workers) + 1}")
            worker.start()
            assert worker.proc is not None
            self.sink.watch_pids.add(worker.proc.pid)
            self.workers.append(worker)
            started.append(worker)
        for worker in started:
            worker.wait_log("running", timeout=60)
        return started

    def close(self) -> None:
        for process in [*self.workers, self.api]:
            if process is None or process.proc is None or process.proc.poll() is not None:
                continue
            # A stopped process must be woken to hear SIGTERM.
            process.proc.send_signal(signal.SIGCONT)
            process.stop(timeout=15)

    def logs(self) -> str:
        parts = [f"--- {p.log_path.name}\n{p.output()[-4000:]}" for p in self._processes()]
        return "\n".join(parts)

    def _processes(self) -> list[Mailsched]:
        return [p for p in [self.api, *self.workers] if p is not None]

    # The API.

    def post(
        self, recipients: Sequence[str], *, delay: int, limit: int, start: str | None = None
    ) -> int:
        response = httpx.post(
            f"{self.base_url}/api/v1/email/campaign",
            json=campaign(recipients, delay=delay, limit=limit, start=start),
            headers=self.headers,
            timeout=120,
        )
        assert response.status_code == 201, response.text
        return int(response.json()["campaignId"])

    def view(self, campaign_id: int) -> dict[str, Any]:
        response = httpx.get(
            f"{self.base_url}/api/v1/email/campaign/{campaign_id}",
            headers=self.headers,
            timeout=10,
        )
        response.raise_for_status()
        view: dict[str, Any] = response.json()
        return view

    def wait_completed(self, campaign_id: int, timeout: float) -> float | None:
        """Wait for COMPLETED; return when it was seen (``time.time()``), or ``None``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.view(campaign_id)["status"] == "COMPLETED":
                    return time.time()
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        return None

    def wait_arrivals(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.sink.arrivals) < count:
            assert time.monotonic() < deadline, f"fewer than {count} arrivals:\n{self.logs()}"
            time.sleep(0.05)

    def times(self, campaign_id: int) -> list[float]:
        """When the campaign's messages arrived at the sink."""
        return [a.at for a in self.sink.arrivals if a.campaign_id == campaign_id]

    # The database.

    def sql(self, statement: str, **params: Any) -> list[Any]:
        return query(self.stack.database_url, statement, **params)

    def failed_recipients(self, campaign_id: int) -> list[str]:
        rows = self.sql(
            "SELECT recipient FROM deliveries WHERE campaign_id = :c AND status = 'FAILED'"
            " AND last_error IS NOT NULL AND last_error <> ''",
            c=campaign_id,
        )
        return [r[0] for r in rows]

    def window_events(self, campaign_id: int) -> int:
        """Send slots the database marks as possibly sent twice: 'orphaned' (the lease ran
        out while the send was in flight) and 'ambiguous' (the connection broke after the
        data). 0 while the ``outcome`` column has not landed."""
        has_outcome = self.sql(
            "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = DATABASE()"
            " AND table_name = 'send_slots' AND column_name = 'outcome'"
        )[0][0]
        if not has_outcome:
            return 0
        return int(
            self.sql(
                "SELECT COUNT(*) FROM send_slots WHERE campaign_id = :c"
                " AND UPPER(outcome) IN ('ORPHANED', 'AMBIGUOUS')",
                c=campaign_id,
            )[0][0]
        )

    def figures(
        self,
        scenario: str,
        run: int,
        campaign_id: int,
        recipients: Sequence[str],
        *,
        limit: int,
        delay: int = 0,
    ) -> Figures:
        arrivals = [(a.rcpt, a.at) for a in self.sink.arrivals if a.campaign_id == campaign_id]
        result = figures(
            scenario,
            run,
            expected=recipients,
            arrivals=arrivals,
            failed=self.failed_recipients(campaign_id),
            window_events=self.window_events(campaign_id),
            window=self.window,
            limit=limit,
            delay=delay,
        )
        try:
            possible = self.view(campaign_id).get("possibleDuplicates")
        except httpx.HTTPError:
            possible = None
        if possible is not None:
            result.notes.append(f"API possibleDuplicates={possible}")
        return result


def campaign(
    recipients: Sequence[str], *, delay: int, limit: int, start: str | None = None
) -> dict[str, Any]:
    return {
        "userId": 1,
        "subject": "Fault drill",
        "body": "Hello, this is a test email.",
        "startTime": start or "2026-01-25T12:00:00Z",
        "delaySeconds": delay,
        "hourlyLimit": limit,
        "recipients": list(recipients),
    }


def addresses(prefix: str, count: int) -> list[str]:
    return [f"{prefix}.user{i}@example.com" for i in range(count)]
