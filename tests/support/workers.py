"""A worker's dependencies for tests of its own loop: no database, mailer or letters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from mailsched.config import WorkerConfig
from mailsched.consumer.sender import WorkerDeps
from mailsched.metrics import Metrics
from mailsched.queue.memory import MemoryQueue


def loop_deps(
    queue: MemoryQueue, *, hold: timedelta = timedelta(0), ahead: timedelta = timedelta(0)
) -> WorkerDeps:
    """Deps whose database, mailer and letters a test's worker must not touch."""
    config = WorkerConfig(
        batch_size=10,
        inflight_batches=2,
        lease=timedelta(seconds=60),
        hold=hold,
        max_attempts=3,
        retry_base=timedelta(seconds=1),
        retry_cap=timedelta(seconds=1),
        shutdown_grace=5.0,
        ahead=ahead,
    )
    none = cast(Any, None)
    return WorkerDeps(
        db=none,
        queue=queue,
        mailer=none,
        letters=none,
        config=config,
        window=timedelta(hours=1),
        clock=lambda: datetime.now(UTC),
        owner="test-worker",
        metrics=Metrics(),
    )
