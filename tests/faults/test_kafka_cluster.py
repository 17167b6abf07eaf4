"""Faults of a replicated Kafka: the 3-node cluster of ``scripts/services`` (replication
factor 3, ``min.insync.replicas`` 2; mailsched produces with ``acks=all``, idempotently).

One broker killed, two of three down for 30 s, a rolling restart: each mid-campaign,
through real ``mailsched api`` (with its dispatcher) and ``mailsched worker`` processes.
Besides lost and duplicates, each run records the stall: the longest gap between
arrivals at the sink around the fault.

They take a minute or two a run, so they run under ``scripts/faults --long`` only
(``MAILSCHED_FAULTS_LONG=1``), and there they fail if the cluster cannot start.
"""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import Stack
from tests.faults import services
from tests.faults.cluster import Cluster, addresses
from tests.faults.conftest import Report
from tests.faults.harness import recovery, stall
from tests.faults.replicas import Replicas
from tests.support.fault_sink import FaultSink

pytestmark = [pytest.mark.e2e, pytest.mark.realstack]

#: Sends pace at LIMIT per WINDOW seconds, so the arrivals' usual gap is about a
#: second and a stall of two shows.
WINDOW = 1.0
LIMIT = 4
#: How long two nodes of three stay down.
OUTAGE = 30.0
#: How long any wait may last before the scenario fails (every wait ends as soon as
#: its condition holds).
PATIENCE = 240.0

#: What a fault does, given the cluster and the delivery topic; returns notes.
Fault = Callable[[Replicas, str], list[str]]


@pytest.fixture
def kafka_cluster() -> Iterator[str]:
    """The 3-node cluster's bootstrap list; afterwards every node runs again."""
    # Deselected unless MAILSCHED_FAULTS_LONG=1 (tests/faults/conftest.py).
    try:
        bootstrap = services.start_kafka_cluster()
    except (AssertionError, subprocess.SubprocessError) as exc:
        pytest.fail(f"the 3-node Kafka cluster did not start: {exc}")
    try:
        yield bootstrap
    finally:
        services.start_kafka_cluster()


@pytest.fixture
def replicated(
    kafka_cluster: str, real_stack: Stack, fault_sink: FaultSink, tmp_path: Path
) -> Iterator[Cluster]:
    """A scenario's processes on MariaDB and the 3-node cluster, topics replicated 3 times."""
    stack = dataclasses.replace(real_stack, kafka_bootstrap_servers=kafka_cluster)
    world = Cluster(
        stack,
        fault_sink,
        tmp_path,
        MAILSCHED_KAFKA_REPLICATION_FACTOR="3",
        MAILSCHED_RATE_WINDOW_SECONDS=str(WINDOW),
    )
    try:
        yield world
    finally:
        world.close()


def _midway(world: Cluster, report: Report, name: str, run: int, size: int, fault: Fault) -> None:
    """A campaign of ``size`` recipients; ``fault`` once it sends steadily; then its figures."""
    started = time.time()
    recipients = addresses(name.split()[0].lower(), size)
    world.start_api()
    world.start_worker()
    campaign_id = world.post(recipients, delay=0, limit=LIMIT)
    world.wait_arrivals(8 * LIMIT, timeout=PATIENCE)
    replicas = Replicas(world.env["MAILSCHED_KAFKA_BOOTSTRAP_SERVERS"])
    fault_start = time.time()
    notes = fault(replicas, world.env["MAILSCHED_KAFKA_TOPIC"])
    fault_end = time.time()
    completed = world.wait_completed(campaign_id, timeout=PATIENCE)

    f = world.figures(name, run, campaign_id, recipients, limit=LIMIT)
    times = world.times(campaign_id)
    f.stall = stall(times, fault_start, fault_end)
    f.recovery, f.recovery_kind = recovery(fault_end, times, completed)
    before = [b - a for a, b in itertools.pairwise(sorted(times)) if b < fault_start]
    f.notes += [*notes, f"fault {fault_end - fault_start:.1f} s"]
    f.notes.append(f"longest gap before it {max(before, default=0.0):.1f} s")
    if f.duplicates:
        # Kafka's faults must not make a send twice: a replica holds every acked record.
        f.problems.append(f"{f.duplicates} duplicates")
    if completed is not None and completed < fault_end:
        f.problems.append("the campaign ended before the fault did: the stall misses its end")
    f.seconds = time.time() - started
    problems = report.add(f)
    assert completed is not None, world.logs()
    assert not problems, f


def test_busiest_leader_killed(replicated: Cluster, report: Report, run: int) -> None:
    """kill -9 of the node leading most of the delivery topic's partitions (the campaign's
    partition's leader when tied): the others take over its partitions."""

    def fault(replicas: Replicas, topic: str) -> list[str]:
        used = replicas.used_partition(topic)
        node, led = replicas.busiest_leader(topic, prefer=used)
        campaigns = replicas.leaders(topic).get(used) == node if used is not None else False
        services.kafka_node("kill", node)
        return [f"killed node {node}: led {led} partitions, the campaign's: {campaigns}"]

    _midway(replicated, report, "Kafka cluster: busiest leader kill -9", run, 120, fault)


def test_two_brokers_of_three_down(replicated: Cluster, report: Report, run: int) -> None:
    """kill -9 of two nodes (the campaign's partition's leader among them) for 30 s: no
    quorum, no in-sync pair, nothing moves; both started again, sending resumes."""

    def fault(replicas: Replicas, topic: str) -> list[str]:
        used = replicas.used_partition(topic)
        first, _ = replicas.busiest_leader(topic, prefer=used)
        second = next(n for n in services.NODES if n != first)
        services.kafka_node("kill", first)
        services.kafka_node("kill", second)
        time.sleep(OUTAGE)
        # Together: either alone is a quorum with the survivor; both is how they came back.
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda n: services.kafka_node("start", n), (first, second)))
        return [f"killed nodes {first} and {second} for {OUTAGE:.0f} s"]

    _midway(replicated, report, "Kafka cluster: 2 of 3 down 30 s", run, 160, fault)


def test_rolling_restart(replicated: Cluster, report: Report, run: int) -> None:
    """Each node in turn: controlled shutdown, start, and wait until every partition has
    all its replicas in sync before the next (as an upgrade would)."""

    def fault(replicas: Replicas, topic: str) -> list[str]:
        notes = []
        for node in services.NODES:
            services.kafka_node("stop", node)
            services.kafka_node("start", node)
            caught_up = replicas.wait_in_sync(within=PATIENCE)
            notes.append(f"node {node} back in sync after {caught_up:.1f} s")
        return notes

    # Three restarts took 47-115 s on the 2-core machine: sends must outlast them.
    _midway(replicated, report, "Kafka cluster: rolling restart", run, 640, fault)
