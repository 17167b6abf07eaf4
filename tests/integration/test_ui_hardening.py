"""The dashboard's hardening in-process on each database: its security headers on
the answers the framework makes (404, 405, 413, 422, 500) as well as its own, and
none added outside ``/ui``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Query
from fastapi.responses import PlainTextResponse

from mailsched.producer.api import Limits
from mailsched.producer.auth import Authenticator
from mailsched.producer.campaigns import Campaigns
from mailsched.store.db import Database
from mailsched.ui.routes import ui_routes
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
