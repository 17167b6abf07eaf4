"""Shaping groups enforced by the claim, on each database, with a simulated clock.

The claim is driven directly, as the worker calls it (``claim(conn, ClaimRequest)``),
and its sends are finished by recording their outcomes (``sending.record``), as the
worker does: a group's limits are measured on those real finish times, in the
``shaping_slots`` rows. The dispatcher's part (due SCHEDULED -> QUEUED) is
``dispatch.claim_due`` at each simulated instant.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.consumer.claim import Claim, ClaimRequest, claim
from mailsched.domain.model import DeliveryStatus, SendOutcome
from mailsched.domain.shaping import GroupState, Shaping, parse
from mailsched.errors import DuplicateKey
from mailsched.store import dispatch, sending
from mailsched.store import shaping as groups_store
from mailsched.store.campaigns import NewCampaign, NewDelivery, insert_campaign
from mailsched.store.db import Database
from mailsched.store.tables import deliveries, shaping_slots

USER = 1
FROM_DOMAIN = "example.com"
#: A Tuesday, 12:00 UTC: day 0 of the warm-ups below.
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
MINUTE = timedelta(minutes=1)
#: How long each simulated send takes, from its claim to its recorded end.
SEND_TIME = timedelta(milliseconds=300)
d = deliveries.c

on_mariadb_only = pytest.mark.parametrize("database_url", ["mariadb"], indirect=True)


class _Users(dict[int, int]):
    """Every campaign here belongs to :data:`USER`."""

    def __missing__(self, key: int) -> int:
        return USER


@dataclass
class Sent:
    """One admitted send, as the test saw it."""

    campaign_id: int
    recipient: str
    started: datetime


@dataclass
class Driver:
    """The worker's and the dispatcher's calls, at instants the test chooses."""

    db: Database
    shaping: Shaping
    hold: timedelta = timedelta(seconds=1)
    sent: list[Sent] = field(default_factory=list)
    held: Counter[str] = field(default_factory=Counter)

    async def campaign(self, recipients: Sequence[str], at: datetime, delay: int = 0) -> int:
        """A campaign, with a limit that plays no part, all planned at ``at``."""
        new = NewCampaign(USER, "s", "b", at, delay, 100_000)
        planned = [NewDelivery(r, at) for r in recipients]
        return await self.db.run(lambda conn: insert_campaign(conn, new, planned, at))

    async def dispatch(self, now: datetime) -> None:
        """Queue every delivery due at ``now``, as the dispatcher does."""
        while await self.db.run(lambda conn: dispatch.claim_due(conn, now, 1000, now)):
            pass

    async def queued(self, campaign_ids: Sequence[int]) -> dict[int, list[int]]:
        async def work(conn: AsyncConnection) -> dict[int, list[int]]:
            rows = await conn.execute(
                select(d.id, d.campaign_id)
                .where(d.campaign_id.in_(campaign_ids), d.status == DeliveryStatus.QUEUED)
                .order_by(d.id)
            )
            found: dict[int, list[int]] = {cid: [] for cid in campaign_ids}
            for r in rows:
                found[r.campaign_id].append(r.id)
            return found

        return await self.db.run(work)

    def request(self, ids: dict[int, list[int]], now: datetime, owner: str) -> ClaimRequest:
        return ClaimRequest(
            deliveries=ids,
            now=now,
            owner=owner,
            lease=timedelta(minutes=2),
            hold=self.hold,
            window=timedelta(hours=1),
            shaping=self.shaping,
        )

    async def claim(
        self, campaign_ids: Sequence[int], now: datetime, owner: str = "worker-1"
    ) -> dict[int, Claim]:
        """Claim what is QUEUED of the campaigns at ``now``, and finish the admitted
        sends :data:`SEND_TIME` later."""
        ids = {cid: found for cid, found in (await self.queued(campaign_ids)).items() if found}
        if not ids:
            return {}
        ask = self.request(ids, now, owner)
        claims = await self.db.run(lambda conn: claim(conn, ask))
        self.note(claims, now)
        await self.finish(claims, owner, now + SEND_TIME)
        return claims

    def note(self, claims: dict[int, Claim], now: datetime) -> None:
        for cid, result in claims.items():
            self.sent += [Sent(cid, row.recipient, now) for row in result.admitted]
            self.held += result.held

    async def finish(self, claims: dict[int, Claim], owner: str, end: datetime) -> None:
        """Record every admitted send as SENT, ending at ``end``."""
        batch = {
            cid: sending.Outcomes(
                sent=[(row.id, end) for row in result.admitted],
                finished=[
                    (result.first_seq + i, end, SendOutcome.SENT)
                    for i in range(len(result.admitted))
                ],
            )
            for cid, result in claims.items()
            if result.admitted
        }
        if batch:
            await self.db.run(lambda conn: sending.record(conn, owner, batch, end, _Users()))

    def starts(self, domain: str) -> list[datetime]:
        return sorted(s.started for s in self.sent if s.recipient.endswith(f"@{domain}"))

    async def scheduled(self) -> list[datetime]:
        """When the SCHEDULED deliveries are planned, earliest first."""
        return sorted((await self.planned()).values())

    async def planned(self) -> dict[str, datetime]:
        """When each SCHEDULED delivery is planned, by recipient."""

        async def work(conn: AsyncConnection) -> dict[str, datetime]:
            query = select(d.recipient, d.scheduled_at).where(d.status == DeliveryStatus.SCHEDULED)
            return {r.recipient: r.scheduled_at for r in await conn.execute(query)}

        return await self.db.run(work)


def most_in_a_window(starts: Sequence[datetime], window: timedelta) -> int:
    """The most sends that started in any rolling ``[t, t + window)``."""
    return max((sum(1 for u in starts if t <= u < t + window) for t in starts), default=0)


def shaping(text_: str) -> Shaping:
    return parse(text_, FROM_DOMAIN)


# --- a destination group's rate, over two campaigns and two workers -------------------

N = 5
PER_MINUTE = shaping(
    f"""
[[group]]
name = "google"
domains = ["gmail.com"]
max_per_minute = {N}
"""
)


async def test_two_workers_at_one_instant_never_exceed_the_groups_minute(db: Database) -> None:
    # Two campaigns of 8 gmail.com and 4 example.org recipients each, claimed by two
    # workers at the same instants, round after round. Fails if the group let more
    # than N sends start in any minute (counting both campaigns), or if example.org,
    # which no group limits, waited for gmail.com.
    driver = Driver(db, PER_MINUTE)
    recipients = [f"g{i}@gmail.com" for i in range(8)] + [f"o{i}@example.org" for i in range(4)]
    first = await driver.campaign([f"a.{r}" for r in recipients], T0)
    second = await driver.campaign([f"b.{r}" for r in recipients], T0)

    now = T0
    for round_ in range(60):
        await driver.dispatch(now)
        # Interleaved: each round the other worker asks first, at the same instant.
        order = [(first, "worker-1"), (second, "worker-2")]
        for cid, owner in order if round_ % 2 == 0 else order[::-1]:
            await driver.claim([cid], now, owner)
        if round_ == 0:
            assert len(driver.starts("example.org")) == 8, "example.org waited for gmail.com"
            assert len(driver.starts("gmail.com")) == N
        if len(driver.sent) == 24:
            break
        now += timedelta(seconds=7)

    gmail = driver.starts("gmail.com")
    assert len(gmail) == 16, f"not all sent by {now - T0}"
    assert most_in_a_window(gmail, MINUTE) == N
    assert driver.starts("example.org") == [T0] * 8
    assert driver.held["google"] >= 16 - N
    # 16 sends at 5 a minute: the last starts at least 3 minutes after the first.
    assert gmail[-1] - gmail[0] >= 3 * MINUTE

    async def numbered(conn: AsyncConnection) -> int:
        query = select(func.count()).select_from(shaping_slots)
        return int((await conn.execute(query)).scalar_one())

    # Only gmail.com's sends are numbered in the group.
    assert await db.run(numbered) == 16


async def test_a_suspended_group_holds_its_domain_and_lets_the_others_go(db: Database) -> None:
    driver = Driver(db, PER_MINUTE)
    cid = await driver.campaign(["a@gmail.com", "b@gmail.com", "c@example.org"], T0)
    until = T0 + timedelta(minutes=10)
    suspended = {"google": GroupState(suspended_until=until, reason="421 later")}
    await db.run(lambda conn: groups_store.react(conn, suspended, T0))
    await driver.dispatch(T0)

    result = (await driver.claim([cid], T0))[cid]

    assert [r.recipient for r in result.admitted] == ["c@example.org"]
    assert result.held == Counter({"google": 2})
    # Planned again for the end of the suspension, not before.
    assert await driver.scheduled() >= [until, until]
    assert (await driver.scheduled())[0] == until


async def test_a_campaign_replanned_in_the_same_claim_keeps_its_held_deliveries_waiting(
    db: Database,
) -> None:
    # The group is suspended for 10 minutes; the campaign has a 10 s delay, so the
    # claim admits one example.org delivery, and the campaign, behind its plan, is
    # planned again. BUG: fails: the claim puts the gmail.com delivery off to the
    # end of the suspension first, and the campaign's re-plan after it plans every
    # pending delivery again, the held one too, 10 s from now: it comes back due
    # every few seconds for 10 minutes, each time held again (and counted in
    # mailsched_shaping_held_total).
    driver = Driver(db, PER_MINUTE)
    cid = await driver.campaign(["a@gmail.com", "b@example.org", "c@example.org"], T0, delay=10)
    until = T0 + timedelta(minutes=10)
    suspended = {"google": GroupState(suspended_until=until, reason="421 later")}
    await db.run(lambda conn: groups_store.react(conn, suspended, T0))
    await driver.dispatch(T0)

    result = (await driver.claim([cid], T0 + timedelta(seconds=30)))[cid]

    assert [r.recipient for r in result.admitted] == ["b@example.org"]
    assert result.held == Counter({"google": 1})
    assert result.replanned > 0
    assert (await driver.planned())["a@gmail.com"] >= until


async def test_a_slowed_group_takes_its_rate_times_the_factor(db: Database) -> None:
    # 10 a minute slowed by 0.7: 7, on each database (MariaDB keeps the factor in a
    # single-precision FLOAT, 0.699999988, but returns it rounded: 0.7).
    driver = Driver(
        db,
        shaping('[[group]]\nname = "google"\ndomains = ["gmail.com"]\nmax_per_minute = 10\n'),
    )
    cid = await driver.campaign([f"u{i}@gmail.com" for i in range(10)], T0)
    slowed = {"google": GroupState(0.7, T0 + timedelta(hours=1), reason="4.7.28")}
    await db.run(lambda conn: groups_store.react(conn, slowed, T0))
    await driver.dispatch(T0)

    result = (await driver.claim([cid], T0))[cid]

    assert len(result.admitted) == 7


# --- warm-up across simulated days ----------------------------------------------------

WARMUP = shaping(
    f"""
[[group]]
name = "google"
domains = ["gmail.com"]
max_per_day = 80
warmup = {{ start = 10, factor = 2, since = {T0.date().isoformat()}, ceiling = 80 }}
"""
)
#: The daily cap day by day: 10, 20, 40, then the ceiling (80 reached on day 3: the
#: warm-up ends, and the group's own max_per_day of 80 holds).
CAPS = [10, 20, 40, 80, 80]


async def test_the_warmup_cap_grows_each_day_and_stops_at_the_ceiling(db: Database) -> None:
    # Each simulated day at noon (plus a few seconds, so that the day before's sends
    # ended more than 24 h earlier) a new campaign of 100 gmail.com recipients comes
    # due, with whatever was held before. Fails if a day admitted more or fewer
    # than its cap.
    driver = Driver(db, WARMUP)
    campaigns: list[int] = []
    admitted: list[int] = []
    for day in range(len(CAPS)):
        now = T0 + day * DAY + day * timedelta(seconds=10)
        campaigns.append(await driver.campaign([f"d{day}.{i}@gmail.com" for i in range(100)], now))
        await driver.dispatch(now)
        before = len(driver.sent)
        await driver.claim(campaigns, now)
        admitted.append(len(driver.sent) - before)
        # And nothing more that day: an hour later the group is still full.
        await driver.dispatch(now + timedelta(hours=1))
        late = await driver.claim(campaigns, now + timedelta(hours=1))
        assert sum(len(c.admitted) for c in late.values()) == 0

    assert admitted == CAPS
    starts = driver.starts("gmail.com")
    for day, cap in enumerate(CAPS):
        t = T0 + day * DAY
        assert sum(1 for u in starts if t - DAY / 2 <= u < t + DAY / 2) == cap


async def test_a_backlog_under_warmup_grows_with_the_daily_cap(db: Database) -> None:
    # One campaign of 150 gmail.com recipients, all due on day 0, and a worker that
    # claims whatever is due whenever something comes due (the dispatcher's and the
    # worker's loop, with a simulated clock). The caps are 10, 20, 40, 80 a day: the
    # 150 fit in four days and a bit (about 3.6 days from the first send when the
    # held ones are spread at the pace of the day they land on).
    #
    # BUG: fails with 10 a day (50 sent in 5 days). The claim puts off what a full
    # group held back "spread at the group's pace", and the pace is that of the day
    # of the claim (24 h / 10): on day 0 the 140 held back are planned 2.4 h apart,
    # over 14 days, and the larger caps of the days after never see them.
    driver = Driver(db, WARMUP)
    cid = await driver.campaign([f"u{i}@gmail.com" for i in range(150)], T0)
    now = T0
    end = T0 + 5 * DAY
    while now < end:
        await driver.dispatch(now)
        claims = await driver.claim([cid], now)
        # Next: what the worker waits for itself (within the hold), or the next planned.
        waits = [c.wait_until for c in claims.values() if c.waiting and c.wait_until]
        planned = [t for t in await driver.scheduled() if t > now]
        if not waits and not planned:
            break
        now = min(waits + planned)

    starts = driver.starts("gmail.com")
    # Safe whatever the pace: no 24 h ever held more than the cap in force.
    warmup = WARMUP.groups[0].warmup
    assert warmup is not None
    for t in starts:
        cap = warmup.cap(t) or 80
        assert sum(1 for u in starts if t - DAY < u <= t) <= cap, t
    per_day = Counter((u - T0) // DAY for u in starts)
    assert len(starts) == 150, f"{len(starts)} sent in 5 days, by day: {sorted(per_day.items())}"


# --- the group's row lock serializes two claims ---------------------------------------

RACE_N = 3
RACE = shaping(
    f"""
[[group]]
name = "google"
domains = ["gmail.com"]
max_per_minute = {RACE_N}
"""
)


async def _last_room(db: Database) -> tuple[Driver, int, int]:
    """Two campaigns with one gmail.com delivery QUEUED each, after RACE_N - 1 sends
    of the group's minute: the group has room for one more."""
    driver = Driver(db, RACE)
    earlier = await driver.campaign([f"e{i}@gmail.com" for i in range(RACE_N - 1)], T0)
    await driver.dispatch(T0)
    await driver.claim([earlier], T0)
    assert len(driver.sent) == RACE_N - 1
    now = T0 + timedelta(seconds=10)
    first = await driver.campaign(["a@gmail.com"], now)
    second = await driver.campaign(["b@gmail.com"], now)
    await driver.dispatch(now)
    return driver, first, second


async def test_two_claims_at_once_do_not_both_take_the_last_room(db: Database) -> None:
    # On SQLite the two transactions run one after the other (BEGIN IMMEDIATE); on
    # MariaDB they overlap, and the group row's lock makes the second wait: see
    # the forced interleaving below.
    driver, first, second = await _last_room(db)
    now = T0 + timedelta(seconds=10)
    queued = await driver.queued([first, second])
    asks = [
        driver.request({first: queued[first]}, now, "worker-1"),
        driver.request({second: queued[second]}, now, "worker-2"),
    ]

    def claiming(ask: ClaimRequest) -> Callable[[AsyncConnection], Awaitable[dict[int, Claim]]]:
        return lambda conn: claim(conn, ask)

    results = await asyncio.gather(*(db.run(claiming(a)) for a in asks))

    admitted = [len(c.admitted) for r in results for c in r.values()]
    assert sorted(admitted) == [0, 1]


async def _waiting_on(db: Database, what: str) -> str:
    """The statement another session of this database is running, once there is one
    that mentions ``what`` (from MariaDB's processlist)."""
    query = text(
        "SELECT INFO FROM information_schema.PROCESSLIST"
        " WHERE DB = DATABASE() AND ID <> CONNECTION_ID() AND COMMAND = 'Query'"
    )
    async with asyncio.timeout(20):
        while True:
            async with db.engine.connect() as conn:
                rows = [str(r[0]) for r in await conn.execute(query)]
            found = [r for r in rows if what in r]
            if found:
                return found[0]
            await asyncio.sleep(0.02)


@dataclass
class Forced:
    """Two claims forced to overlap: what each admitted, and what the second waited on."""

    first: Claim
    second: Claim
    waited_on: str


async def forced(
    db: Database, driver: Driver, first: int, second: int, now: datetime, what: str
) -> Forced:
    """Claim ``first``'s QUEUED deliveries and, before that transaction commits,
    ``second``'s; let the first commit once the second is seen running a statement
    that mentions ``what`` (where it waits)."""
    queued = await driver.queued([first, second])
    claimed_first = asyncio.Event()
    release_first = asyncio.Event()

    async def first_claim(conn: AsyncConnection) -> dict[int, Claim]:
        found = await claim(conn, driver.request({first: queued[first]}, now, "worker-1"))
        claimed_first.set()
        await release_first.wait()  # commit only when told
        return found

    async def second_claim(conn: AsyncConnection) -> dict[int, Claim]:
        return await claim(conn, driver.request({second: queued[second]}, now, "worker-2"))

    one = asyncio.create_task(db.run(first_claim))
    two: asyncio.Task[dict[int, Claim]] | None = None
    try:
        await claimed_first.wait()
        two = asyncio.create_task(db.run(second_claim))
        waited_on = await _waiting_on(db, what)
        assert not two.done()
    finally:
        # Whatever happened, end both transactions (the database is dropped after).
        release_first.set()
        got_first = await one
        got_second = await two if two is not None else {}
    return Forced(got_first[first], got_second[second], waited_on)


@on_mariadb_only
async def test_the_group_row_lock_makes_the_second_claim_wait_for_the_first(
    db: Database,
) -> None:
    # Forced interleaving: the first claim takes the last room and does not commit
    # until the second claim is seen waiting on its read of the group row (FOR
    # UPDATE) in MariaDB's processlist. Then the first commits, and the second,
    # reading the group after it, admits nothing. Without the lock, see the next test.
    driver, first, second = await _last_room(db)

    got = await forced(db, driver, first, second, T0 + timedelta(seconds=10), "shaping_groups")

    assert "FOR UPDATE" in got.waited_on.upper(), got.waited_on
    assert [r.recipient for r in got.first.admitted] == ["a@gmail.com"]
    assert got.second.admitted == []
    assert got.second.held == Counter({"google": 1})


@on_mariadb_only
async def test_without_the_row_lock_the_same_interleaving_takes_the_last_room_twice(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The control for the test above: the group row read without FOR UPDATE. The
    # second claim no longer waits at the read; it finds the room the first one took
    # (uncommitted), admits its delivery too, and is stopped only by the numbering's
    # primary key (both number their send 3): a DuplicateKey that fails the whole
    # claim. So the lock is what the test above sees working.
    async def unlocked(conn: AsyncConnection, names: Sequence[str]) -> dict[str, Any]:
        await groups_store.ensure(conn, names)
        return await groups_store._read(conn, sorted(set(names)), lock=False)

    monkeypatch.setattr(groups_store, "lock", unlocked)
    driver, first, second = await _last_room(db)

    with pytest.raises(DuplicateKey):
        await forced(db, driver, first, second, T0 + timedelta(seconds=10), "shaping_slots")


@on_mariadb_only
async def test_two_claims_on_a_group_without_a_row_yet_make_one_and_wait_for_each_other(
    db: Database,
) -> None:
    # The first claims in a group of one a minute before anyone sent in it: it makes
    # the group's row. The second, meanwhile, tries to make the same row and waits
    # on it (the insert of the first is not committed); once the first commits, it
    # reads the group with the first's send in it, and holds its delivery.
    driver = Driver(
        db, shaping('[[group]]\nname = "new"\ndomains = ["gmail.com"]\nmax_per_minute = 1\n')
    )
    first = await driver.campaign(["a@gmail.com"], T0)
    second = await driver.campaign(["b@gmail.com"], T0)
    await driver.dispatch(T0)

    got = await forced(db, driver, first, second, T0, "shaping_groups")

    assert len(got.first.admitted) + len(got.second.admitted) == 1
    assert [r.recipient for r in got.first.admitted] == ["a@gmail.com"]
    assert got.second.held == Counter({"new": 1})


async def test_a_sender_group_limits_every_destination_together(db: Database) -> None:
    # Our own From domain may send 3 a minute, to whomever; gmail.com also has its
    # own limit of 2. A claim of 3 gmail.com and 3 example.org deliveries admits 2
    # to gmail.com (its group is full first) and 1 to example.org: 3 in all.
    driver = Driver(
        db,
        shaping(
            '[[group]]\nname = "google"\ndomains = ["gmail.com"]\nmax_per_minute = 2\n\n'
            '[[group]]\nname = "ours"\nsenders = ["example.com"]\nmax_per_minute = 3\n'
        ),
    )
    recipients = ["a@gmail.com", "b@gmail.com", "c@gmail.com"]
    cid = await driver.campaign(
        [*recipients, "x@example.org", "y@example.org", "z@example.org"], T0
    )
    await driver.dispatch(T0)

    result = (await driver.claim([cid], T0))[cid]

    assert [r.recipient for r in result.admitted] == ["a@gmail.com", "b@gmail.com", "x@example.org"]
    assert result.held == Counter({"google": 1, "ours": 2})
