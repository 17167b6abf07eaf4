"""Hardening: a recipient's variables fit in their column on MySQL.

The API accepts up to 50 variables of 1,000 characters each; stored as JSON
with ``\\uXXXX`` escapes, that can reach ~300 KB, past TEXT's 64 KiB. MEDIUMTEXT
holds 16 MiB. SQLite's TEXT has no such limit.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "mysql":
        op.alter_column("deliveries", "vars", type_=mysql.MEDIUMTEXT(), existing_nullable=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "mysql":
        op.alter_column("deliveries", "vars", type_=sa.Text(), existing_nullable=True)
