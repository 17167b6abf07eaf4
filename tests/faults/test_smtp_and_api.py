"""A misbehaving SMTP server, and the API killed in the middle of a large POST."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
from sqlalchemy import text

from mailsched.store.db import create_engine
from tests.faults.cluster import Cluster, addresses, campaign
from tests.faults.conftest import Report
from tests.faults.harness import Figures

pytestmark = [pytest.mark.e2e, pytest.mark.realstack]


def test_smtp_server_refuses_stalls_and_drops(cluster: Cluster, report: Report, run: int) -> None:
    """451 to 30% of DATA, 550 for some recipients, slow replies, connections dropped at
    DATA before and after the message is kept: every recipient is delivered or FAILED
    with a reason (exactly the refused ones), and duplicates are counted."""
    started = time.time()
    recipients, limit = addresses("smtp", 40), 15
    refused = set(recipients[3::10])
    sink = cluster.sink
    sink.tempfail_rate, sink.drop_rate, sink.drop_after_data_rate = 0.3, 0.05, 0.05
    sink.reply_delay = 0.05
    sink.permfail = refused
    cluster.start_api()
    cluster.start_worker()
    campaign_id = cluster.post(recipients, delay=0, limit=limit)
    completed = cluster.wait_completed(campaign_id, timeout=90)

    f = cluster.figures("SMTP 4xx 30%, 5xx, slow, drops", run, campaign_id, recipients, limit=limit)
    failed = set(cluster.failed_recipients(campaign_id))
    f.seconds = time.time() - started
    if failed != refused:
        f.problems.append(f"FAILED {sorted(failed ^ refused)} besides/instead of the 550s")
    problems = report.add(f)
    assert completed is not None, cluster.logs()
    assert not problems, f


#: When to kill the API, per run: once its insert is under way ("insert"), or this many
#: seconds after the POST went out.
KILL_AT: tuple[str | float, ...] = ("insert", 1.0, "insert", 3.0, 0.4)
BIG = 50_000


def _wait_for_insert(cluster: Cluster, answered: list[int | str], timeout: float) -> bool:
    """Wait until a transaction on the test database has written rows (not committed yet);
    false if the client got its answer first (the insert can be over within 0.1 s)."""
    probe = text(
        "SELECT t.trx_rows_modified FROM information_schema.innodb_trx t"
        " JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id"
        " WHERE p.db = DATABASE() AND t.trx_rows_modified > 0"
    )

    async def poll() -> bool:
        engine = create_engine(cluster.stack.database_url, pool_size=1)
        try:
            async with engine.connect() as conn:
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline and not answered:
                    if (await conn.execute(probe)).first() is not None:
                        return True
                    await conn.rollback()  # a fresh snapshot of the server's state
                    await asyncio.sleep(0.005)
                return False
        finally:
            await engine.dispose()

    return asyncio.run(poll())


def test_api_killed_during_a_large_post_stores_all_or_nothing(
    cluster: Cluster, report: Report, run: int
) -> None:
    """kill -9 of the API while it takes a 50k-recipient POST: after a restart the campaign
    exists with every recipient or not at all, and fully if the client got a 201."""
    started = time.time()
    recipients = addresses("big", BIG)
    body = campaign(recipients, delay=0, limit=1000, start="2030-01-01T00:00:00Z")
    api = cluster.start_api()
    answer: list[int | str] = []

    def post() -> None:
        try:
            response = httpx.post(
                f"{cluster.base_url}/api/v1/email/campaign",
                json=body,
                headers=cluster.headers,
                timeout=120,
            )
            answer.append(response.status_code)
        except httpx.HTTPError as exc:
            answer.append(type(exc).__name__)

    client = threading.Thread(target=post)
    client.start()
    when = KILL_AT[(run - 1) % len(KILL_AT)]
    if isinstance(when, float):
        time.sleep(when)
    else:
        when = "insert" if _wait_for_insert(cluster, answer, 60) else "answer (insert missed)"
    api.kill()
    killed_at = time.time()
    client.join(30)
    cluster.start_api("api-again")
    ready = time.time()

    campaigns = cluster.sql("SELECT id, recipient_count FROM campaigns")
    rows = cluster.sql("SELECT COUNT(*) FROM deliveries")[0][0]
    f = Figures("API kill -9 during 50k POST", run, BIG, recovery=ready - killed_at)
    f.recovery_kind = "API ready again"
    f.delivered = rows  # stored, here: nothing is sent before 2030
    f.notes.append(f"killed at {when}; client saw {answer}; campaigns {campaigns}; rows {rows}")
    if campaigns:
        f.lost = BIG - rows
        if len(campaigns) != 1 or campaigns[0][1] != BIG:
            f.problems.append(f"campaign rows {campaigns}")
    elif answer == [201]:
        f.lost = BIG
    elif rows:
        f.problems.append(f"{rows} deliveries without a campaign")
    f.seconds = time.time() - started
    problems = report.add(f)
    print(f.notes[-1])
    assert not problems, f
