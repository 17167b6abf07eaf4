"""Calling the API in-process: apps, keys and clients for tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from mailsched.producer.api import create_app
from mailsched.producer.auth import Authenticator, caller_dependency
from mailsched.producer.campaigns import Campaigns
from mailsched.producer.events import event_routes
from mailsched.store import keys
from mailsched.store.db import Database

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
URL = "/api/v1/email/campaign"


def spec_body(**changes: Any) -> dict[str, Any]:
    """The specification's example request."""
    body: dict[str, Any] = {
        "userId": 1,
        "subject": "Test Campaign",
        "body": "Hello, this is a test email.",
        "startTime": "2026-01-25T12:00:00Z",
        "delaySeconds": 60,
        "hourlyLimit": 10,
        "recipients": ["user1@example.com", "user2@example.com"],
    }
    body.update(changes)
    return body


async def new_key(db: Database, user_id: int) -> str:
    async def work(conn: Any) -> str:
        return (await keys.create_key(conn, user_id, None, NOW))[1]

    return await db.run(work)


def make_app(db: Database, **options: Any) -> FastAPI:
    """The app as ``mailsched api`` serves it, with the event feed (and ``routers``)."""
    caller = caller_dependency(Authenticator(db, options.pop("requests_per_minute", 6000)))
    routers = (event_routes(db, caller), *options.pop("routers", ()))
    return create_app(
        Campaigns(db, timedelta(hours=1), lambda: NOW), caller, routers=routers, **options
    )


@asynccontextmanager
async def client_for(app: FastAPI, key: str | None) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=headers
    ) as client:
        yield client
