"""A database of its own for one benchmark run: a file in the run's folder on
SQLite, a fresh schema on the MariaDB of ``MAILSCHED_DATABASE_URL`` (``eval
"$(scripts/services env)"``), dropped afterwards."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from mailsched.store.db import async_url


@asynccontextmanager
async def fresh_database(stack: str, workdir: Path) -> AsyncIterator[str]:
    """The URL of a new, empty database (not migrated) for ``stack``, sqlite or mariadb."""
    name = f"mailsched_bench_{secrets.token_hex(4)}"
    if stack == "sqlite":
        yield f"sqlite:///{workdir / (name + '.db')}"
        return
    server = os.environ.get("MAILSCHED_DATABASE_URL")
    if not server:
        raise SystemExit("bench: MAILSCHED_DATABASE_URL is not set; eval scripts/services env")
    admin = create_async_engine(async_url(server))
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        try:
            yield make_url(server).set(database=name).render_as_string(False)
        finally:
            async with admin.begin() as conn:
                await conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    finally:
        await admin.dispose()
