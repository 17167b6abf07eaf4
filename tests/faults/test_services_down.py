"""Faults of the services: Kafka killed, Kafka wiped, MariaDB killed, mid-campaign."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from tests.faults import services
from tests.faults.cluster import Cluster, addresses, campaign
from tests.faults.conftest import Report
from tests.faults.harness import recovery

pytestmark = [pytest.mark.e2e, pytest.mark.realstack]

LIMIT = 10


def _midway(cluster: Cluster, name: str, run: int, fault: Callable[[], None]) -> float:
    """A 40-recipient campaign; ``fault`` after the first window's sends, then the
    services are started again. Returns when they were back."""
    recipients = addresses(name.split()[0].lower(), 40)
    started = time.time()
    cluster.start_api()
    cluster.start_worker()
    campaign_id = cluster.post(recipients, delay=0, limit=LIMIT)
    cluster.wait_arrivals(LIMIT + 2, timeout=30)
    fault()
    services.start()
    fault_end = time.time()
    completed = cluster.wait_completed(campaign_id, timeout=90)

    f = cluster.figures(name, run, campaign_id, recipients, limit=LIMIT)
    f.recovery, f.recovery_kind = recovery(fault_end, cluster.times(campaign_id), completed)
    f.seconds = time.time() - started
    problems = cluster.report.add(f) if cluster.report else []
    assert completed is not None, cluster.logs()
    assert not problems, f
    return fault_end


def test_kafka_killed_and_restarted(cluster: Cluster, report: Report, run: int) -> None:
    cluster.report = report

    def fault() -> None:
        services.kill_kafka()
        time.sleep(2)
        # Kafka can take no writes now: the API says which dependency, not the error.
        ready = _readiness_when_down(cluster)
        assert ready.status_code == 503, ready.text
        assert ready.json() == {
            "status": "unavailable",
            "checks": {"database": "ok", "kafka": "unavailable"},
        }

    _midway(cluster, "Kafka kill -9 + restart", run, fault)


def _readiness_when_down(cluster: Cluster, within: float = 30.0) -> httpx.Response:
    """``/readyz`` once it reports a dependency down (or the last answer after ``within``)."""
    deadline = time.monotonic() + within
    while True:
        response = httpx.get(f"{cluster.base_url}/readyz", timeout=10)
        if response.status_code != 200 or time.monotonic() > deadline:
            return response
        time.sleep(0.5)


def test_kafka_data_wiped(cluster: Cluster, report: Report, run: int) -> None:
    """Topics, offsets and the group are gone: the queue re-creates its topics and the
    reaper re-dispatches what was QUEUED when the messages vanished."""
    cluster.report = report
    _midway(cluster, "Kafka data wiped", run, services.wipe_kafka)


def test_mariadb_killed_and_restarted(cluster: Cluster, report: Report, run: int) -> None:
    """And while it is down, a POST is answered 503 (never 500, never 201)."""
    cluster.report = report
    answers: list[int] = []

    def fault() -> None:
        services.kill_mariadb()
        response = httpx.post(
            f"{cluster.base_url}/api/v1/email/campaign",
            json=campaign(["down@example.com"], delay=0, limit=1),
            headers=cluster.headers,
            timeout=60,
        )
        answers.append(response.status_code)
        assert response.status_code == 503, response.text
        assert response.headers.get("Retry-After")

    _midway(cluster, "MariaDB kill -9 + restart", run, fault)
    assert answers == [503]
