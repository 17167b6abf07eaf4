"""Sending calendars: a campaign's schedule, and each delivery's time zone.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns at the end: an instant ALTER on MariaDB and MySQL 8, whatever
    # the table's size. NULL means "no calendar" and "the campaign's own zone".
    op.add_column("campaigns", sa.Column("schedule", sa.Text, nullable=True))
    op.add_column("deliveries", sa.Column("timezone", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("deliveries", "timezone")
    op.drop_column("campaigns", "schedule")
