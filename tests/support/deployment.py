"""mailsched as real processes on either stack, for end-to-end tests.

Embedded: one ``mailsched run`` (SQLite, the in-process queue, webhooks delivered
in-process). Real: ``mailsched api``, ``mailsched worker`` and ``mailsched webhooks``
on MariaDB + Kafka, and ``mailsched inbound`` with a bounce address. Either way a
test talks to one API, and may kill -9 any role and start it again on the same
database. :class:`Api` calls the public API as a user's application does.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka.admin import AdminClient

from tests.conftest import Stack
from tests.support.processes import Mailsched, auth, create_key
from tests.support.smtp_sink import free_port


class Deployment:
    """The processes of one stack, started with :meth:`start` (blocking)."""

    def __init__(self, stack: Stack, env: dict[str, str], cwd: Path) -> None:
        self.stack = stack
        self.env = stack.env() | {"MAILSCHED_PORT": str(free_port())} | env
        if self.bounces:
            # The bounce mailbox listens too: on a port of its own, not the default.
            self.env.setdefault("MAILSCHED_INBOUND_PORT", str(free_port()))
        self.cwd = cwd
        self.key = ""
        self.processes: dict[str, Mailsched] = {}
        self._starts: Counter[str] = Counter()

    @property
    def embedded(self) -> bool:
        return self.stack.kafka_bootstrap_servers is None

    @property
    def bounces(self) -> bool:
        """A bounce address is set: the bounce mailbox runs."""
        return bool(self.env.get("MAILSCHED_BOUNCE_ADDRESS"))

    @property
    def roles(self) -> tuple[str, ...]:
        if self.embedded:
            return ("run",)
        return ("api", "worker", "webhooks") + (("inbound",) if self.bounces else ())

    @property
    def inbound_port(self) -> int:
        """The bounce mailbox's SMTP port (with a bounce address)."""
        return int(self.env["MAILSCHED_INBOUND_PORT"])

    @property
    def api(self) -> Mailsched:
        """The process that serves the API."""
        return self.processes["run" if self.embedded else "api"]

    @property
    def base_url(self) -> str:
        return self.api.base_url

    def start(self) -> Deployment:
        """Start every role, wait for the API, and get a key for user 1."""
        for role in self.roles:
            self._spawn(role)
        self.api.wait_ready()
        if self.bounces:
            inbound = self.processes["run" if self.embedded else "inbound"]
            inbound.wait_log("inbound SMTP server listening on")
        # `mailsched run` prints a key on its first start; the real stack has none.
        self.key = self.api.development_key() if self.embedded else create_key(self.env, self.cwd)
        return self

    def kill(self, role: str) -> None:
        """kill -9 ``role``'s process (and wait for it to be gone)."""
        self.processes[role].kill()

    def restart(self, role: str) -> None:
        """Start ``role`` again, on the same database, port and topics; wait for the API."""
        self._spawn(role)
        if self.processes[role] is self.api:
            self.api.wait_ready()

    def wait_joined(self, timeout: float = 60) -> None:
        """On Kafka: wait until the worker and the webhooks process own partitions, so
        that what follows does not wait for their first rebalance."""
        if self.embedded:
            return
        admin = AdminClient({"bootstrap.servers": self.env["MAILSCHED_KAFKA_BOOTSTRAP_SERVERS"]})
        groups = [self.env["MAILSCHED_KAFKA_GROUP_ID"], self.env["MAILSCHED_WEBHOOK_GROUP_ID"]]
        deadline = time.monotonic() + timeout
        while True:
            described = admin.describe_consumer_groups(groups)
            members = [
                sum(
                    1
                    for m in described[g].result(timeout=10).members
                    if m.assignment.topic_partitions
                )
                for g in groups
            ]
            if all(members):
                return
            assert time.monotonic() < deadline, f"no member owns partitions: {members}"
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM every process still running, the API last."""
        for role in reversed(self.roles):
            process = self.processes.get(role)
            if process is not None and process.proc is not None and process.proc.poll() is None:
                process.stop()

    def output(self, tail: int = 3000) -> str:
        """The end of every log, for a failure's message."""
        logs = sorted(self.cwd.glob("*.log"))
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-tail:]}" for p in logs)

    def tracebacks(self) -> list[str]:
        """The logs that hold a traceback."""
        return [p.name for p in sorted(self.cwd.glob("*.log")) if "Traceback" in p.read_text()]

    def _spawn(self, role: str) -> None:
        self._starts[role] += 1
        count = self._starts[role]
        name = role if count == 1 else f"{role}{count}"
        self.processes[role] = Mailsched([role], self.env, self.cwd, name).start()


class Api:
    """The public API, as a user's application calls it."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def webhook(self, url: str) -> dict[str, Any]:
        """A new endpoint for every event type, with its secret."""
        response = await self.client.post("/api/v1/webhooks", json={"url": url})
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def campaign(self, body: dict[str, Any]) -> dict[str, Any]:
        """A new campaign: its id and planned first and last sends."""
        response = await self.client.post("/api/v1/email/campaign", json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def completed(self, campaign_id: int, within: float = 60) -> None:
        deadline = time.monotonic() + within
        while True:
            response = await self.client.get(f"/api/v1/email/campaign/{campaign_id}")
            view = response.json()
            if view["status"] == "COMPLETED":
                return
            assert time.monotonic() < deadline, f"not completed in {within} s: {view}"
            await asyncio.sleep(0.2)

    async def feed(self, campaign_id: int) -> list[dict[str, Any]]:
        """Every event of the campaign, from the feed, following ``nextCursor``."""
        items: list[dict[str, Any]] = []
        after = "0"
        while True:
            params: dict[str, str | int] = {
                "campaignId": campaign_id,
                "after": after,
                "limit": 1000,
            }
            response = await self.client.get("/api/v1/events", params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            if not page["items"]:
                return items
            items += page["items"]
            after = page["nextCursor"]

    async def attempts(self, webhook_id: int) -> list[dict[str, Any]]:
        """The endpoint's attempts (the last thousand), newest first."""
        response = await self.client.get(
            f"/api/v1/webhooks/{webhook_id}/attempts", params={"limit": 1000}
        )
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items


@asynccontextmanager
async def deployed(
    stack: Stack, env: dict[str, str], cwd: Path
) -> AsyncIterator[tuple[Deployment, Api]]:
    """The stack's processes, started; stopped (SIGTERM) when the block ends.

    Its blocking waits run in threads, so that servers on the test's event loop (a
    webhook receiver) go on serving meanwhile.
    """
    app = Deployment(stack, env, cwd)
    try:
        await asyncio.to_thread(app.start)
        async with httpx.AsyncClient(
            base_url=app.base_url, headers=auth(app.key), timeout=10
        ) as client:
            yield app, Api(client)
    finally:
        await asyncio.to_thread(app.stop)
