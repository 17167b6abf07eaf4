"""The production topology as real processes: ``mailsched api`` and two ``mailsched worker``
on MariaDB + Kafka, delivering over SMTP."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import pytest
from confluent_kafka.admin import AdminClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.store.db import Database
from mailsched.store.tables import send_slots
from tests.conftest import Stack
from tests.e2e.test_run import campaign, wait_completed
from tests.support.processes import Mailsched, auth, create_key
from tests.support.rules import max_in_window, min_gap
from tests.support.smtp_sink import SmtpSink, free_port

pytestmark = pytest.mark.e2e

WINDOW = 2.0
LIMIT = 50


def group_members(bootstrap: str, group: str) -> int:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return sum(1 for m in description.members if m.assignment.topic_partitions)


def sends_per_worker(database_url: str) -> dict[str, int]:
    """How many sends each worker process made, from the send-slot ledger."""

    async def query() -> dict[str, int]:
        db = Database.from_url(database_url)
        try:

            async def work(conn: AsyncConnection) -> dict[str, int]:
                rows = await conn.execute(
                    select(send_slots.c.worker, func.count()).group_by(send_slots.c.worker)
                )
                return {worker: count for worker, count in rows}

            return await db.run(work)
        finally:
            await db.dispose()

    return asyncio.run(query())


def test_api_and_two_workers_deliver_three_campaigns_exactly_once(
    real_stack: Stack, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    real = real_stack
    env = real.env() | {
        "MAILSCHED_PORT": str(free_port()),
        "MAILSCHED_SMTP_URL": smtp_sink.url,
        "MAILSCHED_RATE_WINDOW_SECONDS": str(WINDOW),
        # Two partitions, two workers: each owns one. Campaign keys 1 and 3 hash to
        # partition 1 and key 2 to partition 0 (murmur2), so both workers must work.
        "MAILSCHED_KAFKA_PARTITIONS": "2",
    }
    assert real.kafka_bootstrap_servers is not None
    group = env["MAILSCHED_KAFKA_GROUP_ID"]
    api = Mailsched(["api"], env, tmp_path, "api").start()
    workers = [Mailsched(["worker"], env, tmp_path, f"worker{i}").start() for i in (1, 2)]
    try:
        api.wait_ready()
        key = create_key(env, tmp_path)
        deadline = time.monotonic() + 60
        while group_members(real.kafka_bootstrap_servers, group) < 2:
            assert time.monotonic() < deadline, "the two workers did not both join the group"
            time.sleep(0.2)

        ids = []
        recipients: dict[int, list[str]] = {}
        for c in range(3):
            addresses = [f"c{c}.user{i}@example.com" for i in range(200)]
            response = httpx.post(
                f"{api.base_url}/api/v1/email/campaign",
                json=campaign(addresses, delay=0, limit=LIMIT),
                headers=auth(key),
            )
            assert response.status_code == 201, response.text
            ids.append(response.json()["campaignId"])
            recipients[ids[-1]] = addresses
        started = time.monotonic()
        for campaign_id in ids:
            view = wait_completed(api.base_url, campaign_id, timeout=90, key=key)
            assert view["status"] == "COMPLETED", view
            assert view["counts"]["SENT"] == 200
        elapsed = time.monotonic() - started
        assert httpx.get(f"{api.base_url}/readyz").json()["checks"] == {
            "database": "ok",
            "kafka": "ok",
        }
        for worker in workers:
            scraped = httpx.get(worker.metrics_url()).text
            assert 'mailsched_sends_total{outcome="SENT"}' in scraped
    finally:
        for process in (*workers, api):
            process.stop()

    counts = smtp_sink.per_recipient()
    expected = Counter(a.lower() for addresses in recipients.values() for a in addresses)
    assert counts == expected, "lost or duplicated emails"
    by_campaign: dict[int, list[float]] = defaultdict(list)
    for arrival in smtp_sink.arrivals:
        by_campaign[arrival.campaign_id].append(arrival.at)
    for campaign_id, times in by_campaign.items():
        assert max_in_window(times, WINDOW) <= LIMIT, campaign_id
    work = sends_per_worker(real.database_url)
    assert sum(work.values()) == 600
    pids = {name.split("-")[-2] for name in work}
    assert pids == {str(w.proc.pid) for w in workers if w.proc}, f"a worker did no work: {work}"
    print(f"3 campaigns x 200 with 2 workers: delivered in {elapsed:.1f} s")


def test_sigterm_finishes_in_flight_work_and_a_new_worker_carries_on(
    real_stack: Stack, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    env = real_stack.env() | {
        "MAILSCHED_PORT": str(free_port()),
        "MAILSCHED_SMTP_URL": smtp_sink.url,
    }
    recipients = [f"user{i}@example.com" for i in range(8)]
    with Mailsched(["api"], env, tmp_path, "api") as api:
        api.wait_ready()
        key = create_key(env, tmp_path)
        first = Mailsched(["worker"], env, tmp_path, "worker1").start()
        response = httpx.post(
            f"{api.base_url}/api/v1/email/campaign",
            json=campaign(recipients, delay=1, limit=100),
            headers=auth(key),
        )
        campaign_id = response.json()["campaignId"]
        smtp_sink.wait_for(3, timeout=30)
        stopping = time.monotonic()
        assert first.stop(timeout=15) == 0, first.output()
        stop_seconds = time.monotonic() - stopping
        assert "stopped" in first.output()
        with Mailsched(["worker"], env, tmp_path, "worker2"):
            view = wait_completed(api.base_url, campaign_id, timeout=60, key=key)
        assert view["status"] == "COMPLETED", view
    # A graceful stop leaves nothing in doubt: exactly once, and no burst.
    assert smtp_sink.per_recipient() == Counter(recipients)
    assert view["possibleDuplicates"] == 0
    assert min_gap([a.at for a in smtp_sink.arrivals]) >= 1.0
    print(f"worker stopped gracefully in {stop_seconds:.2f} s")
