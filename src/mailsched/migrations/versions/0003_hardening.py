"""Hardening: a recipient's variables fit in their column on MySQL; the dead-letter outbox.

The API accepts up to 50 variables of 1,000 characters each; stored as JSON
with ``\\uXXXX`` escapes, that can reach ~300 KB, past TEXT's 64 KiB. MEDIUMTEXT
holds 16 MiB. SQLite's TEXT has no such limit.

``dead_letters`` holds failed deliveries until the relay has published them to
the dead-letter topic (see ``store/dead_letters.py``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from mailsched.store.tables import Id, UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "mysql":
        op.alter_column("deliveries", "vars", type_=mysql.MEDIUMTEXT(), existing_nullable=True)
    _create_dead_letters()


def downgrade() -> None:
    op.drop_table("dead_letters")
    if op.get_bind().dialect.name == "mysql":
        op.alter_column("deliveries", "vars", type_=sa.Text(), existing_nullable=True)


def _create_dead_letters() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("delivery_id", Id, nullable=False),
        sa.Column("campaign_id", Id, nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
