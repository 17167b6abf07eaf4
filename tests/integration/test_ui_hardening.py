"""The dashboard's hardening in-process on each database: its security headers on
the answers the framework makes (404, 405, 413, 422, 500) as well as its own, and
none added outside ``/ui``; the limit on failed sign-ins; expired sessions pruned."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Query
from fastapi.responses import PlainTextResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.producer.api import Limits
from mailsched.producer.auth import Authenticator, Caller
from mailsched.producer.campaigns import Campaigns
from mailsched.store.db import Database
from mailsched.store.tables import ui_sessions
from mailsched.ui.routes import COOKIE, ui_routes
from mailsched.ui.sessions import LIFETIME
from mailsched.ui.web import HEADERS
from tests.support.api import NOW, URL, make_app, new_key

CLOCK = lambda: NOW  # noqa: E731


def _extra() -> APIRouter:
    """Routes under /ui that the dashboard lacks: a typed query (a 422 from FastAPI's
    validation), a crash (a 500) and a handler that sets a header of its own."""
    router = APIRouter(prefix="/ui/test")

    @router.get("/typed")
    async def typed(n: int = Query()) -> dict[str, int]:
        return {"n": n}

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    @router.get("/own")
    async def own() -> PlainTextResponse:
        return PlainTextResponse("mine", headers={"Cache-Control": "max-age=60"})

    return router


@pytest.fixture
async def app(db: Database) -> FastAPI:
    ui = ui_routes(
        Campaigns(db, timedelta(hours=1), CLOCK), Authenticator(db, 6000), db, "http://test", CLOCK
    )
    return make_app(db, routers=(ui, _extra()), limits=Limits(max_request_bytes=1000))


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    # A crash is answered, not raised into the test.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def _secured(answer: httpx.Response) -> bool:
    return all(answer.headers.get(name) == value for name, value in HEADERS.items())


async def test_the_frameworks_answers_under_ui_carry_the_security_headers(
    client: httpx.AsyncClient,
) -> None:
    answers = {
        404: await client.get("/ui/nope"),
        405: await client.get("/ui/sign-in"),
        413: await client.post("/ui/sign-in", content=b"key=" + b"x" * 2000),
        422: await client.get("/ui/test/typed?n=many"),
        500: await client.get("/ui/test/boom"),
    }
    for status, answer in answers.items():
        assert answer.status_code == status, answer.text
        assert _secured(answer), (status, answer.headers)
        assert "unsafe-inline" not in answer.headers["content-security-policy"]
    assert answers[500].text == "Internal Server Error"
    assert "boom" not in answers[500].text
    # The dashboard's own answers keep theirs, once each.
    page = await client.get("/ui/")
    assert _secured(page) and page.headers.get_list("x-frame-options") == ["DENY"]


async def test_a_header_a_handler_set_is_kept(client: httpx.AsyncClient) -> None:
    answer = await client.get("/ui/test/own")
    assert answer.headers.get_list("cache-control") == ["max-age=60"]
    assert answer.headers["x-frame-options"] == "DENY"


async def test_answers_outside_ui_get_none_of_them(client: httpx.AsyncClient, db: Database) -> None:
    key = await new_key(db, 1)
    answers = [
        await client.get(f"{URL}/999", headers={"Authorization": f"Bearer {key}"}),
        await client.get("/nope"),
        await client.get("/uix"),
        await client.get("/healthz"),
    ]
    for answer in answers:
        assert "x-frame-options" not in answer.headers, answer.url
        assert "content-security-policy" not in answer.headers, answer.url


class _Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


class _GatedAuth(Authenticator):
    """Checks keys only once ``gate`` is set, counting the checks."""

    def __init__(self, db: Database) -> None:
        super().__init__(db, 6000)
        self.gate = asyncio.Event()
        self.checked = 0

    async def caller(self, key: str) -> Caller | None:
        self.checked += 1
        await self.gate.wait()
        return await super().caller(key)


def _browser(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def _ui_app(db: Database, clock: Callable[[], datetime], auth: Authenticator) -> FastAPI:
    ui = ui_routes(Campaigns(db, timedelta(hours=1), clock), auth, db, "http://test", clock)
    return make_app(db, routers=(ui,))


async def test_ten_failed_sign_ins_in_a_minute_shut_the_address_out_for_the_rest_of_it(
    db: Database,
) -> None:
    clock, key = _Clock(), await new_key(db, 1)
    async with _browser(_ui_app(db, clock, Authenticator(db, 6000))) as browser:
        for _ in range(10):
            answer = await browser.post("/ui/sign-in", data={"key": key[:-2] + "xx"})
            assert answer.status_code == 401
        clock.now += timedelta(seconds=30)
        refused = await browser.post("/ui/sign-in", data={"key": key})
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "30"
        assert "set-cookie" not in refused.headers and COOKIE not in browser.cookies
        assert "Too many failed sign-ins" in refused.text and "Try again in 30 s" in refused.text
        assert 'for="key"' in refused.text and _secured(refused)
        clock.now += timedelta(seconds=30)
        opened = await browser.post("/ui/sign-in", data={"key": key})
        assert opened.status_code == 303 and COOKIE in browser.cookies


async def test_good_sign_ins_are_not_counted(db: Database) -> None:
    key = await new_key(db, 1)
    async with _browser(_ui_app(db, _Clock(), Authenticator(db, 6000))) as browser:
        for _ in range(15):
            assert (await browser.post("/ui/sign-in", data={"key": key})).status_code == 303
        assert (await browser.post("/ui/sign-in", data={"key": "wrong"})).status_code == 401


async def test_concurrent_guesses_cannot_pass_the_limit_together(db: Database) -> None:
    """Eleven wrong keys at once, held at the key check until all have arrived: ten
    are checked, the eleventh is refused without its key being looked at."""
    auth = _GatedAuth(db)
    async with _browser(_ui_app(db, _Clock(), auth)) as browser:
        guesses = [
            asyncio.create_task(browser.post("/ui/sign-in", data={"key": f"wrong{i}"}))
            for i in range(11)
        ]
        # A bound, not a wait for something to happen: without the limit all 11 hang.
        done, _ = await asyncio.wait(guesses, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if not done:
            auth.gate.set()
            await asyncio.gather(*guesses)
        assert [t.result().status_code for t in done] == [429]
        assert auth.checked == 10
        auth.gate.set()
        codes = sorted(answer.status_code for answer in await asyncio.gather(*guesses))
    assert codes == [401] * 10 + [429]


async def test_signing_in_deletes_expired_sessions(db: Database) -> None:
    clock, key = _Clock(), await new_key(db, 1)

    async def tokens(conn: AsyncConnection) -> list[str]:
        return list((await conn.scalars(select(ui_sessions.c.token_digest))).all())

    async with _browser(_ui_app(db, clock, Authenticator(db, 6000))) as browser:
        await browser.post("/ui/sign-in", data={"key": key})
        (first,) = await db.run(tokens)
        clock.now += LIFETIME - timedelta(seconds=1)
        await browser.post("/ui/sign-in", data={"key": key})
        assert first in await db.run(tokens)  # still live: kept
        clock.now += timedelta(seconds=1)
        await browser.post("/ui/sign-in", data={"key": key})
        kept = await db.run(tokens)
    assert first not in kept and len(kept) == 2
