"""Faults of the worker processes: kill -9 mid-send, SIGSTOP past the lease, scale-out."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient

from tests.faults.cluster import LEASE, Cluster, addresses
from tests.faults.conftest import Report
from tests.faults.harness import Receipt, Slot, recovery, unexplained

pytestmark = [pytest.mark.e2e, pytest.mark.realstack]

#: How long a scenario waits for what it waits for before failing. Generous, for a
#: loaded CI machine: every wait ends as soon as its condition holds.
PATIENCE = 180.0


def wait_for(condition: Callable[[], bool], what: str, within: float = PATIENCE) -> None:
    """Poll ``condition`` until it holds; fail, naming ``what``, after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"not within {within:.0f} s: {what}"
        time.sleep(0.2)


def dropped_from_group(cluster: Cluster, pid: int) -> Callable[[], bool]:
    """Whether the workers' Kafka group has settled without the worker process ``pid``
    (its client id is its process name, which holds its pid)."""
    admin = AdminClient({"bootstrap.servers": cluster.env["MAILSCHED_KAFKA_BOOTSTRAP_SERVERS"]})
    group = cluster.env["MAILSCHED_KAFKA_GROUP_ID"]

    def dropped() -> bool:
        (described,) = admin.describe_consumer_groups([group]).values()
        found = described.result(timeout=10)
        members = [m.client_id for m in found.members]
        stable = found.state == ConsumerGroupState.STABLE
        return stable and not any(f"-{pid}-" in client for client in members)

    return dropped


def worker_pid(worker: str) -> int | None:
    """The pid in a worker's name, ``host-pid-random`` (see ``bootstrap.process_name``)."""
    parts = worker.rsplit("-", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def slots_of(cluster: Cluster, campaign_id: int) -> list[Slot]:
    """Every send slot of the campaign, with its recipient and the worker's pid."""
    rows = cluster.sql(
        "SELECT d.recipient, s.worker, s.started_at, s.finished_at, s.outcome"
        " FROM send_slots s JOIN deliveries d ON d.id = s.delivery_id WHERE s.campaign_id = :c",
        c=campaign_id,
    )

    def epoch(at: datetime) -> float:
        return at.replace(tzinfo=UTC).timestamp()

    return [
        Slot(r[0], worker_pid(r[1]), epoch(r[2]), None if r[3] is None else epoch(r[3]), r[4])
        for r in rows
    ]


def leased_to(cluster: Cluster, campaign_id: int, pid: int) -> int:
    """How many of the campaign's deliveries the worker process ``pid`` holds a lease on."""
    rows = cluster.sql(
        "SELECT COUNT(*) FROM deliveries WHERE campaign_id = :c AND status = 'SENDING'"
        " AND lease_owner LIKE :owner",
        c=campaign_id,
        owner=f"%-{pid}-%",
    )
    return int(rows[0][0])


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
    cluster.wait_arrivals(limit + 2, timeout=PATIENCE)
    cluster.sink.hold_next(30)
    assert cluster.sink.holding.wait(PATIENCE), cluster.logs()
    first.kill()
    cluster.start_worker()
    fault_end = time.time()
    # The new worker gets the partitions once Kafka's session timeout drops the dead one.
    completed = cluster.wait_completed(campaign_id, timeout=PATIENCE)

    f = cluster.figures("worker kill -9 during held 250", run, campaign_id, recipients, limit=limit)
    f.recovery, f.recovery_kind = recovery(fault_end, cluster.times(campaign_id), completed)
    f.seconds = time.time() - started
    assert completed is not None, cluster.logs()
    assert not report.add(f), f


def test_worker_stopped_past_its_lease_sends_nothing_after_it_resumes(
    cluster: Cluster, report: Report, run: int
) -> None:
    """SIGSTOP the sending worker until its leases have run out and Kafka has dropped it
    from the group; another worker takes the campaign over; after SIGCONT the stalled one
    sends nothing it had before the stop."""
    started = time.time()
    recipients, limit = addresses("stop", 40), 10
    # Fewer connections than a claim's batch: most of a batch waits for a connection.
    cluster.env["MAILSCHED_SMTP_CONNECTIONS"] = "2"
    cluster.sink.reply_delay = 0.1
    cluster.start_api()
    cluster.start_worker()
    cluster.start_worker()
    campaign_id = cluster.post(recipients, delay=0, limit=limit)
    cluster.wait_arrivals(4, timeout=PATIENCE)
    stalled = cluster.sink.arrivals[-1]
    pid = getattr(stalled, "pid", None)
    assert pid is not None, "the sink could not tell which worker sent"
    victim = next(w for w in cluster.workers if w.proc is not None and w.proc.pid == pid)
    assert victim.proc is not None
    victim.proc.send_signal(signal.SIGSTOP)
    stopped_at = time.time()
    # However long these take on this machine: not a fixed sleep past the lease and the
    # group's session timeout, which a slow rebalance could outlast.
    wait_for(lambda: leased_to(cluster, campaign_id, pid) == 0, "the stalled leases taken back")
    wait_for(dropped_from_group(cluster, pid), "the stalled worker dropped from the group")
    victim.proc.send_signal(signal.SIGCONT)
    resumed_at = time.time()
    completed = cluster.wait_completed(campaign_id, timeout=PATIENCE)
    # Whatever it still had in hand has gone out, or not, once it has exited.
    victim.stop()

    mine = [a for a in cluster.sink.fault_arrivals if a.campaign_id == campaign_id]
    # Each arrival against the send slots: a resumed worker is a worker, and what it
    # claimed afresh it may send, but not also what it held before the stop.
    receipts = [Receipt(a.rcpt, a.pid, a.at) for a in mine]
    stale = unexplained(receipts, slots_of(cluster, campaign_id))
    others = [a.at for a in mine if a.pid != pid and a.at > stopped_at]
    f = cluster.figures("worker SIGSTOP past lease", run, campaign_id, recipients, limit=limit)
    f.recovery, f.recovery_kind = recovery(stopped_at + LEASE, others, None)
    f.recovery_kind = "takeover after lease end"
    f.notes.append(f"arrivals no send slot accounts for (stale sends): {len(stale)}")
    if stale:
        which = ", ".join(
            f"{r.recipient} by {'the stalled worker' if r.pid == pid else f'pid {r.pid}'}"
            f" {r.at - resumed_at:+.1f} s from SIGCONT"
            for r in stale
        )
        f.problems.append(f"{len(stale)} stale sends: {which}")
    f.seconds = time.time() - started
    problems = report.add(f)
    # What must hold in every run: nothing lost, and no duplicate beyond the counted ones.
    assert f.lost == 0, f
    assert f.duplicates <= f.window_events, f
    assert others, "no other worker took over"
    assert completed is not None, cluster.logs()
    assert not stale, f
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
    cluster.wait_arrivals(limit + 2, timeout=PATIENCE)
    cluster.start_workers(2)
    cluster.wait_arrivals(3 * limit, timeout=PATIENCE)
    pid = getattr(cluster.sink.arrivals[-1], "pid", None)
    victim = next(w for w in cluster.workers if w.proc is not None and w.proc.pid == pid)
    victim.kill()
    fault_end = time.time()
    completed = cluster.wait_completed(campaign_id, timeout=PATIENCE)

    f = cluster.figures("workers 1→3, one kill -9", run, campaign_id, recipients, limit=limit)
    f.recovery, f.recovery_kind = recovery(fault_end, cluster.times(campaign_id), completed)
    f.seconds = time.time() - started
    assert completed is not None, cluster.logs()
    assert not report.add(f), f
