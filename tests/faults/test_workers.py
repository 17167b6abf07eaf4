"""Faults of the worker processes: kill -9 mid-send, SIGSTOP past the lease, scale-out."""

from __future__ import annotations

import signal
import time

import pytest

from tests.faults.cluster import LEASE, Cluster, addresses
from tests.faults.conftest import Report
from tests.faults.harness import recovery

pytestmark = [pytest.mark.e2e, pytest.mark.realstack]


def test_worker_killed_while_the_server_holds_its_250(
    cluster: Cluster, report: Report, run: int
) -> None:
    """kill -9 of the worker between DATA and the 250, then a new worker: the campaign
    completes; the held message may arrive twice, and is then a counted window event."""
    started = time.time()
    recipients, limit = addresses("hold", 30), 10
    cluster.start_api()
    first = cluster.start_worker()
    campaign_id = cluster.post(recipients, delay=0, limit=limit)
    cluster.wait_arrivals(limit + 2, timeout=30)
    cluster.sink.hold_next(30)
    assert cluster.sink.holding.wait(20), cluster.logs()
    first.kill()
    cluster.start_worker()
    fault_end = time.time()
    completed = cluster.wait_completed(campaign_id, timeout=60)

    f = cluster.figures("worker kill -9 during held 250", run, campaign_id, recipients, limit=limit)
    f.recovery, f.recovery_kind = recovery(fault_end, cluster.times(campaign_id), completed)
    f.seconds = time.time() - started
    assert completed is not None, cluster.logs()
    assert not report.add(f), f


def test_worker_stopped_past_its_lease_sends_nothing_after_it_resumes(
    cluster: Cluster, report: Report, run: int
) -> None:
    """SIGSTOP the sending worker for longer than its lease and its group session; another
    worker takes the campaign over; after SIGCONT the stalled one sends nothing."""
    started = time.time()
    recipients, limit = addresses("stop", 40), 10
    # Fewer connections than a claim's batch: most of a batch waits for a connection.
    cluster.env["MAILSCHED_SMTP_CONNECTIONS"] = "2"
    cluster.sink.reply_delay = 0.1
    cluster.start_api()
    cluster.start_worker()
    cluster.start_worker()
    campaign_id = cluster.post(recipients, delay=0, limit=limit)
    cluster.wait_arrivals(4, timeout=30)
    stalled = cluster.sink.arrivals[-1]
    pid = getattr(stalled, "pid", None)
    assert pid is not None, "the sink could not tell which worker sent"
    victim = next(w for w in cluster.workers if w.proc is not None and w.proc.pid == pid)
    assert victim.proc is not None
    victim.proc.send_signal(signal.SIGSTOP)
    stopped_at = time.time()
    time.sleep(LEASE + 6)  # past the lease and Kafka's session timeout (10 s)
    victim.proc.send_signal(signal.SIGCONT)
    resumed_at = time.time()
    completed = cluster.wait_completed(campaign_id, timeout=60)

    mine = [a for a in cluster.sink.fault_arrivals if a.campaign_id == campaign_id]
    zombie = [a for a in mine if a.pid == pid and a.at > resumed_at]
    others = [a.at for a in mine if a.pid != pid and a.at > stopped_at]
    f = cluster.figures("worker SIGSTOP past lease", run, campaign_id, recipients, limit=limit)
    f.recovery, f.recovery_kind = recovery(stopped_at + LEASE, others, None)
    f.recovery_kind = "takeover after lease end"
    f.notes.append(f"sends by the stalled worker after SIGCONT: {len(zombie)}")
    if zombie:
        f.problems.append(f"{len(zombie)} sends by the stalled worker after SIGCONT")
    f.seconds = time.time() - started
    problems = report.add(f)
    # What must hold in every run: nothing lost, and no duplicate beyond the counted ones.
    assert f.lost == 0, f
    assert f.duplicates <= f.window_events, f
    assert others, "no other worker took over"
    assert completed is not None, cluster.logs()
    assert not zombie, f
    assert not problems, f


def test_workers_scaled_out_and_one_killed_keep_the_window(
    cluster: Cluster, report: Report, run: int
) -> None:
    """1 worker, then 3, then kill -9 of the one sending, under a tight limit: every window
    holds at most hourlyLimit sends and the campaign completes."""
    started = time.time()
    recipients, limit = addresses("scale", 36), 6
    cluster.env["MAILSCHED_RATE_WINDOW_SECONDS"] = "3"
    cluster.window = 3.0
    cluster.start_api()
    cluster.start_worker()
    campaign_id = cluster.post(recipients, delay=0, limit=limit)
    cluster.wait_arrivals(limit + 2, timeout=30)
    cluster.start_workers(2)
    cluster.wait_arrivals(3 * limit, timeout=40)
    pid = getattr(cluster.sink.arrivals[-1], "pid", None)
    victim = next(w for w in cluster.workers if w.proc is not None and w.proc.pid == pid)
    victim.kill()
    fault_end = time.time()
    completed = cluster.wait_completed(campaign_id, timeout=60)

    f = cluster.figures("workers 1→3, one kill -9", run, campaign_id, recipients, limit=limit)
    f.recovery, f.recovery_kind = recovery(fault_end, cluster.times(campaign_id), completed)
    f.seconds = time.time() - started
    assert completed is not None, cluster.logs()
    assert not report.add(f), f
