"""Traffic shaping through real processes, on both stacks, measured at the SMTP sink.

Embedded: one ``mailsched run``. Real: ``mailsched api``, ``mailsched worker`` and
``mailsched webhooks`` on MariaDB + Kafka. A shaping file limits ``limited.example``
to N sends a second; a campaign sends to it and to ``fast.example``, which no group
limits.

What the sink can check, and why. The rule is "send ``i`` of the group starts (the
claim's instant) no earlier than a window after send ``i - N`` ended (the worker's
clock after the server's reply)". The sink stamps a message when its DATA ends,
before it replies, on the same host's clock; so for each send ``start <= arrival <=
end``, and ``arrival[i] >= start[i] >= end[i - N] + window >= arrival[i - N] +
window``: in the group's own numbering, arrivals N places apart are at least a window
apart, exactly (less a microsecond or two of clock rounding). That numbering comes
from the database (``shaping_slots``), the arrival times from the sink.

Without the numbering, the sink alone sees arrivals in their own order, which may
differ from the numbering by the time a send spends between its claim and its
arrival (``J``, the letter's building and the SMTP dialogue). Then the strict bound
is: no window of ``window - J`` holds more than N arrivals. J is measured too
(``arrival - start`` from the send slots), and the plain rolling 1 s count is
printed as a ratio to N.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.mail.message import delivery_of_message_id
from mailsched.store.db import Database
from mailsched.store.tables import send_slots, shaping_groups, shaping_slots
from tests.conftest import Stack
from tests.support.deployment import deployed
from tests.support.smtp_sink import Arrival, SmtpSink

pytestmark = pytest.mark.e2e

FROM = "news@example.com"
N = 5
WINDOW = 1.0
#: datetime.now() and time.time() round the same clock differently (microseconds
#: against a double): the most two readings of one instant may differ by.
ROUNDING = 2e-6
SHAPING = f"""\
# The limited domain: at most {N} sends in any second, whoever sends them.
[[group]]
name = "limited"
domains = ["limited.example"]
max_per_second = {N}
"""
RECIPIENTS = [f"u{i}@{'limited' if i % 2 else 'fast'}.example" for i in range(60)]


def most_in_a_window(times: Sequence[float], window: float) -> int:
    """The most of ``times`` in any rolling ``[t, t + window)``."""
    return max((sum(1 for u in times if t <= u < t + window) for t in times), default=0)


def samples(exposition: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Each sample of a /metrics page, by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    }


def delivery_id(arrival: Arrival) -> int:
    found = delivery_of_message_id(str(arrival.message["Message-ID"]))
    assert found is not None, arrival.message["Message-ID"]
    return found[1]


async def numbering(database_url: str, group: str) -> list[tuple[int, datetime]]:
    """The group's sends in its numbering: each one's delivery and claim instant."""
    db = Database.from_url(database_url)
    g, s = shaping_slots.c, send_slots.c

    async def work(conn: AsyncConnection) -> list[tuple[int, datetime]]:
        rows = await conn.execute(
            select(s.delivery_id, s.started_at)
            .join(send_slots, and_(s.campaign_id == g.campaign_id, s.seq == g.slot_seq))
            .where(g.grp == group)
            .order_by(g.seq)
        )
        return [(r.delivery_id, r.started_at) for r in rows]

    try:
        return await db.run(work)
    finally:
        await db.dispose()


async def test_a_limited_domain_keeps_its_rate_and_the_others_do_not_wait(
    stack: Stack, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    shaping_file = tmp_path / "shaping.toml"
    shaping_file.write_text(SHAPING, encoding="utf-8")
    env = {
        "MAILSCHED_FROM": FROM,
        "MAILSCHED_SMTP_URL": smtp_sink.url,
        "MAILSCHED_SHAPING_FILE": str(shaping_file),
    }
    async with deployed(stack, env, tmp_path) as (app, api):
        await asyncio.to_thread(app.wait_joined)
        created = await api.campaign(
            {
                "userId": 1,
                "subject": "Shaped",
                "body": "Hello.",
                "startTime": "2026-01-25T12:00:00Z",
                "delaySeconds": 0,
                "hourlyLimit": 100_000,
                "recipients": RECIPIENTS,
            }
        )
        await api.completed(created["campaignId"], within=120)
        assert not app.tracebacks(), app.output()
        # The worker's metrics: `mailsched run` serves them with its API.
        url = (
            f"{app.base_url}/metrics"
            if app.embedded
            else await asyncio.to_thread(app.processes["worker"].metrics_url)
        )
        metrics = samples((await asyncio.to_thread(httpx.get, url, timeout=5)).text)
    order = await numbering(stack.database_url, "limited")
    assert metrics[("mailsched_shaping_limit", (("group", "limited"), ("window", "1s")))] == N
    assert metrics[("mailsched_shaping_suspended", (("group", "limited"),))] == 0
    # Every limited send but the first N waited at least once.
    assert metrics[("mailsched_shaping_held_total", (("group", "limited"),))] >= 30 - N

    arrivals = {delivery_id(a): a for a in smtp_sink.arrivals}
    assert sorted(a.rcpt for a in arrivals.values()) == sorted(RECIPIENTS)
    limited = sorted(a.at for a in arrivals.values() if a.rcpt.endswith("@limited.example"))
    fast = sorted(a.at for a in arrivals.values() if a.rcpt.endswith("@fast.example"))
    assert len(limited) == len(fast) == 30
    # Every limited send, and only those, numbered in the group once.
    assert sorted(arrivals[did].rcpt for did, _ in order) == sorted(
        r for r in RECIPIENTS if r.endswith("@limited.example")
    )

    # Exact, in the group's numbering: N places apart, a window apart.
    at = [arrivals[did].at for did, _ in order]
    gaps = [at[i] - at[i - N] for i in range(N, len(at))]
    assert min(gaps) >= WINDOW - ROUNDING, sorted(gaps)[:5]

    # The sink alone: no window of (1 s - J) holds more than N arrivals.
    in_flight = max(arrivals[did].at - started.timestamp() for did, started in order)
    assert 0 <= in_flight + ROUNDING < WINDOW, in_flight
    assert most_in_a_window(limited, WINDOW - in_flight) <= N

    # The other domain did not wait for the limited one: 30 sends at 5 a second
    # take at least 5 s; the fast domain's are all out well before.
    first = min(limited[0], fast[0])
    limited_took, fast_took = limited[-1] - first, fast[-1] - first
    assert limited_took >= (len(limited) / N - 1) * WINDOW
    assert fast_took < limited_took / 2, (fast_took, limited_took)

    ratio_limited = most_in_a_window(limited, WINDOW) / N
    ratio_fast = most_in_a_window(fast, WINDOW) / N
    print(
        f"\nshaping e2e [{stack.name}]: max per rolling 1 s / N={N}: "
        f"limited.example {ratio_limited:.2f}, fast.example {ratio_fast:.2f}; "
        f"min gap N sends apart {min(gaps):.4f} s; J (claim to arrival) {in_flight * 1000:.1f} ms; "
        f"done after {limited_took:.2f} s (limited) and {fast_took:.2f} s (fast)"
    )


async def suspension(database_url: str, group: str) -> tuple[datetime | None, str | None]:
    """The group's row: until when replies suspended it, and why."""
    db = Database.from_url(database_url)
    g = shaping_groups.c

    async def work(conn: AsyncConnection) -> tuple[datetime | None, str | None]:
        query = select(g.suspended_until, g.reason).where(g.name == group)
        row = (await conn.execute(query)).one()
        return row.suspended_until, row.reason

    try:
        return await db.run(work)
    finally:
        await db.dispose()


#: A slow-down's retry comes after half to all of this (backoff's jitter).
RETRY_BASE = 16.0


async def test_a_destinations_slow_down_waits_its_group_not_the_campaign(
    stack: Stack, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    # The first RCPT to limited.example gets "451 slow down". The worker suspends
    # the limited group until that delivery's retry (8 to 16 s later); the campaign,
    # paced at 4 a second, goes on sending to fast.example meanwhile, and is not
    # planned again as a whole (it was, before shaping: every send waited).
    shaping_file = tmp_path / "shaping.toml"
    shaping_file.write_text(SHAPING, encoding="utf-8")
    refused: list[tuple[str, float]] = []
    lock = threading.Lock()

    def policy(address: str) -> str | None:
        with lock:
            if address.endswith("@limited.example") and not refused:
                refused.append((address, time.time()))
                return "451 4.7.1 Please slow down"
        return None

    smtp_sink.rcpt_policy = policy
    env = {
        "MAILSCHED_FROM": FROM,
        "MAILSCHED_SMTP_URL": smtp_sink.url,
        "MAILSCHED_SHAPING_FILE": str(shaping_file),
        "MAILSCHED_RATE_WINDOW_SECONDS": "1",
        "MAILSCHED_RETRY_BASE_SECONDS": str(RETRY_BASE),
        "MAILSCHED_RETRY_CAP_SECONDS": str(RETRY_BASE),
    }
    recipients = RECIPIENTS[:20]
    async with deployed(stack, env, tmp_path) as (app, api):
        await asyncio.to_thread(app.wait_joined)
        created = await api.campaign(
            {
                "userId": 1,
                "subject": "Shaped",
                "body": "Hello.",
                "startTime": "2026-01-25T12:00:00Z",
                "delaySeconds": 0,
                "hourlyLimit": 4,
                "recipients": recipients,
            }
        )
        await api.completed(created["campaignId"], within=120)
        assert not app.tracebacks(), app.output()
    until, reason = await suspension(stack.database_url, "limited")

    assert sorted(a.rcpt for a in smtp_sink.arrivals) == sorted(recipients)
    assert len(refused) == 1 and until is not None, (refused, until)
    assert reason is not None and reason.startswith("451 4.7.1"), reason
    address, refused_at = refused[0]
    resumed = until.timestamp()
    assert resumed - refused_at >= RETRY_BASE / 2 - 1
    limited = sorted(a.at for a in smtp_sink.arrivals if a.rcpt.endswith("@limited.example"))
    fast = sorted(a.at for a in smtp_sink.arrivals if a.rcpt.endswith("@fast.example"))
    # The group waited: no limited.example send started while it was suspended (1 s
    # for the reply to be recorded, sends in flight then may still arrive).
    assert not [t for t in limited if refused_at + 1 < t < resumed - ROUNDING]
    (again,) = [a.at for a in smtp_sink.arrivals if a.rcpt == address]
    assert again >= resumed - ROUNDING
    # The campaign did not: fast.example was done while limited.example waited.
    assert fast[-1] < resumed, (fast[-1] - refused_at, resumed - refused_at)
    print(
        f"\nshaping e2e [{stack.name}]: 451 from limited.example: group suspended "
        f"{resumed - refused_at:.1f} s; fast.example done {fast[-1] - refused_at:.1f} s "
        f"after the 451; limited.example done {limited[-1] - refused_at:.1f} s after it"
    )


BAD_LIMIT = """\
[[group]]
name = "limited"
domains = ["limited.example"]
max_per_second = 0
"""
BAD_TOML = """\
[[group]]
name = "limited"
domains = ["limited.example"
max_per_second = 5
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(BAD_LIMIT, "line 4: group[1].max_per_second", id="a bad limit"),
        pytest.param(BAD_TOML, "line 4", id="TOML syntax"),
        pytest.param(None, "cannot read it", id="no such file"),
    ],
)
def test_a_bad_shaping_file_stops_the_process_with_exit_2_naming_the_line(
    stack: Stack, tmp_path: Path, text: str | None, expected: str
) -> None:
    shaping_file = tmp_path / "shaping.toml"
    if text is not None:
        shaping_file.write_text(text, encoding="utf-8")
    role = "run" if stack.kafka_bootstrap_servers is None else "worker"
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MAILSCHED_")}
    env = inherited | stack.env() | {"MAILSCHED_SHAPING_FILE": str(shaping_file)}
    mailsched = Path(sys.executable).with_name("mailsched")

    done = subprocess.run(
        [str(mailsched), role], env=env, cwd=tmp_path, capture_output=True, timeout=60, text=True
    )

    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "MAILSCHED_SHAPING_FILE" in done.stderr, done.stderr
    assert expected in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
