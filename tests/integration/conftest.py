"""Fixtures for in-process API tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from mailsched.store.db import Database
from tests.support.api import client_for, make_app, new_key


@pytest.fixture
async def app(db: Database) -> FastAPI:
    return make_app(db)


@pytest.fixture
async def client(app: FastAPI, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app, await new_key(db, 1)) as client:
        yield client
