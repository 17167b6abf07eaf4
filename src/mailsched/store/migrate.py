"""Bring the schema to the newest revision (``mailsched db upgrade``, and every role at start)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

from mailsched.store.db import Database, translate_errors

_SCRIPTS = Path(__file__).resolve().parent.parent / "migrations"
_LOCK = "mailsched_migrate"


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    command.upgrade(_alembic_config(connection), "head")


async def upgrade(db: Database) -> None:
    """Migrate to head. Safe when several processes start at once.

    On MySQL a named lock serializes the migrators; on SQLite the immediate
    transaction does.
    """
    with translate_errors():
        async with db.engine.connect() as conn:
            if db.dialect == "mysql":
                await conn.execute(text("SELECT GET_LOCK(:name, 120)"), {"name": _LOCK})
            try:
                await conn.run_sync(_upgrade)
                await conn.commit()
            finally:
                if db.dialect == "mysql":
                    await conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": _LOCK})
