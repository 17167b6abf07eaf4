"""``mailsched worker --processes 2`` on MariaDB + Kafka: two children share the work,
a SIGTERM stops both gracefully, and a child's crash brings the whole down."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import Stack
from tests.e2e.test_run import campaign, wait_completed
from tests.e2e.test_services import group_members, sends_per_worker
from tests.support.processes import Mailsched, auth, create_key
from tests.support.smtp_sink import SmtpSink, free_port

pytestmark = pytest.mark.e2e


def children(parent: Mailsched) -> list[psutil.Process]:
    assert parent.proc is not None
    return psutil.Process(parent.proc.pid).children()


def test_two_processes_share_the_work_and_stop_together(
    real_stack: Stack, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    env = real_stack.env() | {
        "MAILSCHED_PORT": str(free_port()),
        "MAILSCHED_SMTP_URL": smtp_sink.url,
        # Campaign keys 1 and 3 hash to partition 1 and key 2 to partition 0.
        "MAILSCHED_KAFKA_PARTITIONS": "2",
    }
    assert real_stack.kafka_bootstrap_servers is not None
    group = env["MAILSCHED_KAFKA_GROUP_ID"]
    with Mailsched(["api"], env, tmp_path, "api") as api:
        api.wait_ready()
        key = create_key(env, tmp_path)
        workers = Mailsched(["worker", "--processes", "2"], env, tmp_path, "workers").start()
        try:
            deadline = time.monotonic() + 60
            while group_members(real_stack.kafka_bootstrap_servers, group) < 2:
                assert time.monotonic() < deadline, workers.output()
                time.sleep(0.2)
            pids = {str(child.pid) for child in children(workers)}
            assert len(pids) == 2
            ids, addresses = [], []
            for c in range(3):
                listed = [f"c{c}.user{i}@example.com" for i in range(100)]
                response = httpx.post(
                    f"{api.base_url}/api/v1/email/campaign",
                    json=campaign(listed, delay=0, limit=100_000),
                    headers=auth(key),
                )
                assert response.status_code == 201, response.text
                ids.append(response.json()["campaignId"])
                addresses += listed
            for campaign_id in ids:
                assert (
                    wait_completed(api.base_url, campaign_id, timeout=90, key=key)["status"]
                    == "COMPLETED"
                )
            kids = children(workers)
            assert workers.proc is not None
            workers.proc.send_signal(signal.SIGTERM)
            assert workers.proc.wait(60) == 0, workers.output()
            assert not any(k.is_running() and k.status() != psutil.STATUS_ZOMBIE for k in kids)
        finally:
            workers.stop()

    assert smtp_sink.per_recipient() == Counter(a.lower() for a in addresses)
    work = sends_per_worker(real_stack.database_url)
    assert {name.split("-")[-2] for name in work} == pids, f"a child did no work: {work}"


def test_a_child_that_dies_brings_the_others_down(
    real_stack: Stack, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    env = real_stack.env() | {"MAILSCHED_SMTP_URL": smtp_sink.url}
    workers = Mailsched(["worker", "--processes", "2"], env, tmp_path, "workers").start()
    try:
        workers.wait_log("assigned", timeout=60)
        first, second = children(workers)
        os.kill(first.pid, signal.SIGKILL)
        assert workers.proc is not None
        assert workers.proc.wait(60) == 1, workers.output()
        assert not second.is_running() or second.status() == psutil.STATUS_ZOMBIE
        assert "exited with status -9: stopping the others" in workers.output()
    finally:
        workers.stop()
