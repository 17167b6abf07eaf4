"""The return path's key: every process of a deployment holds the same one.

On each database, two processes' components (as a worker and ``mailsched inbound``
would build them) make and check each other's addresses, with the key shared through
the database or derived from MAILSCHED_SECRET_KEY; never the secret used for the
unsubscribe links.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from mailsched.bootstrap import Components, build
from mailsched.config import Settings
from mailsched.errors import ForgedReturnPath
from mailsched.mail.verp import ReturnPath
from mailsched.store import secrets
from mailsched.store.db import Database

BOUNCES = "bounces@bounce.example.com"


def settings(database_url: str, monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    monkeypatch.setenv("MAILSCHED_DATABASE_URL", database_url)
    for name, value in env.items():
        monkeypatch.setenv(f"MAILSCHED_{name.upper()}", value)
    return Settings.load()


async def both(settings: Settings) -> tuple[ReturnPath, ReturnPath]:
    """The return paths of two processes built from ``settings``."""
    found: list[ReturnPath] = []
    for _ in range(2):
        components: Components = await build(settings)
        try:
            return_path = await components.return_path()
        finally:
            await components.aclose()
        assert return_path is not None
        found.append(return_path)
    return found[0], found[1]


async def test_without_a_bounce_address_there_is_no_return_path(
    db: Database, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    components = await build(settings(database_url, monkeypatch))
    try:
        assert await components.return_path() is None
    finally:
        await components.aclose()


async def test_processes_share_the_key_through_the_database(
    db: Database, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, inbound = await both(settings(database_url, monkeypatch, bounce_address=BOUNCES))

    async def secret(conn: AsyncConnection, name: str) -> bytes:
        return bytes.fromhex(await secrets.get_or_create(conn, name))

    verp = await db.run(lambda conn: secret(conn, "verp"))
    unsubscribe = await db.run(lambda conn: secret(conn, "unsubscribe"))
    address = worker.address(42)

    assert inbound.delivery_of(address) == 42
    assert ReturnPath(BOUNCES, verp).delivery_of(address) == 42
    with pytest.raises(ForgedReturnPath):
        ReturnPath(BOUNCES, unsubscribe).delivery_of(address)


async def test_the_key_is_derived_from_the_secret_key_when_there_is_one(
    db: Database, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "a deployment's secret key"
    worker, inbound = await both(
        settings(database_url, monkeypatch, bounce_address=BOUNCES, secret_key=secret)
    )
    derived = hmac.new(secret.encode(), b"mailsched verp", hashlib.sha256).digest()
    address = worker.address(42)

    assert inbound.delivery_of(address) == 42
    assert ReturnPath(BOUNCES, derived).delivery_of(address) == 42
    # Not the secret key itself, which also signs the unsubscribe links.
    with pytest.raises(ForgedReturnPath):
        ReturnPath(BOUNCES, secret.encode()).delivery_of(address)
