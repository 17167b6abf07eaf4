"""Fixtures of the fault-injection suite.

Every scenario runs ``MAILSCHED_FAULTS_REPEAT`` times (default 1), each run on
a fresh database and topic; its figures go to the report written at the end of
the session (see :mod:`tests.faults.harness`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Stack
from tests.faults import services
from tests.faults.cluster import Cluster
from tests.faults.harness import Figures, Results, failures
from tests.support.fault_sink import FaultSink


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The 3-node cluster's scenarios (1-3 minutes a run) run with ``scripts/faults
    --long`` alone: otherwise they are deselected, not skipped (a skip in CI would
    read as a real-stack test that could not run)."""
    if os.environ.get("MAILSCHED_FAULTS_LONG") == "1":
        return
    long = [item for item in items if item.path.name == "test_kafka_cluster.py"]
    if long:
        config.hook.pytest_deselected(items=long)
        items[:] = [item for item in items if item.path.name != "test_kafka_cluster.py"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "run" in metafunc.fixturenames:
        repeat = int(os.environ.get("MAILSCHED_FAULTS_REPEAT") or "1")
        metafunc.parametrize("run", range(1, repeat + 1), ids=lambda r: f"run{r}")


@pytest.fixture(scope="session")
def results() -> Iterator[Results]:
    collected = Results.from_env()
    try:
        yield collected
    finally:
        collected.write()


class Report:
    """Judges a run's figures against the pass criteria and files them in the report."""

    def __init__(self, results: Results) -> None:
        self._results = results

    def add(self, f: Figures) -> list[str]:
        """File ``f``; return the criteria it breaks (its ``problems``)."""
        f.problems = failures(f) + f.problems
        self._results.add(f)
        return f.problems


@pytest.fixture
def report(results: Results) -> Report:
    return Report(results)


@pytest.fixture
def fault_sink() -> Iterator[FaultSink]:
    sink = FaultSink(seed=int.from_bytes(os.urandom(4))).start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture
def cluster(real_stack: Stack, fault_sink: FaultSink, tmp_path: Path) -> Iterator[Cluster]:
    """A scenario's processes; afterwards they are stopped and the services restored
    (before ``real_stack`` drops its database), whatever the test did to them."""
    services.ensure_running()
    world = Cluster(real_stack, fault_sink, tmp_path)
    try:
        yield world
    finally:
        try:
            world.close()
        finally:
            services.ensure_running()
