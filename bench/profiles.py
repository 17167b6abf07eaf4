"""How big each measurement is: ``--quick`` (about 4 minutes) and ``--full``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Profile:
    """Sizes of one run."""

    name: str
    ingest_sizes: tuple[int, ...]
    ingest_repeats: int
    profile_ingest: int
    throughput: int
    #: Recipients of each small campaign in the many-small-campaigns run of ``throughput``.
    small_campaign: int
    profile_throughput: int
    ceiling_messages: int
    timeliness_seconds: int
    timeliness_shapes: tuple[str, ...]
    #: The overload run that measures a timeliness shape's capacity.
    capacity_seconds: int
    #: Bulk deliveries being sent when the small campaign of head_of_line starts.
    head_of_line_bulk: int
    backlogs: tuple[int, ...]
    #: Recipients uploaded to a draft, one fresh API each.
    upload_sizes: tuple[int, ...]


QUICK = Profile(
    name="quick",
    ingest_sizes=(1_000, 10_000),
    ingest_repeats=1,
    profile_ingest=10_000,
    throughput=10_000,
    small_campaign=3,
    profile_throughput=10_000,
    ceiling_messages=20_000,
    timeliness_seconds=15,
    timeliness_shapes=("waves",),
    capacity_seconds=5,
    head_of_line_bulk=20_000,
    backlogs=(10_000, 100_000),
    upload_sizes=(10_000, 100_000),
)

FULL = Profile(
    name="full",
    ingest_sizes=(1_000, 10_000, 100_000),
    ingest_repeats=3,
    profile_ingest=100_000,
    throughput=100_000,
    small_campaign=10,
    profile_throughput=30_000,
    ceiling_messages=100_000,
    timeliness_seconds=45,
    timeliness_shapes=("waves", "bursts", "smooth"),
    capacity_seconds=10,
    head_of_line_bulk=100_000,
    backlogs=(100_000, 500_000, 1_000_000, 10_000_000),
    upload_sizes=(100_000, 1_000_000),
)

#: Settings every mailsched process of the bench gets (the defaults, written out to record them).
SETTINGS = {
    "MAILSCHED_WORKER_BATCH_SIZE": "200",
    "MAILSCHED_WORKER_INFLIGHT_BATCHES": "4",
    "MAILSCHED_SMTP_CONNECTIONS": "8",
    "MAILSCHED_DISPATCH_BATCH_SIZE": "1000",
    "MAILSCHED_PLAN_MARGIN_SECONDS": "0.1",
}
