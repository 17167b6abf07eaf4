"""The first plan of each delivery, kept when a re-plan moves it: lateness is
measured against it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mailsched.store.tables import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column at the end: an instant ALTER on MariaDB and MySQL 8, and no
    # write at insert (NULL means scheduled_at is still the first plan).
    op.add_column("deliveries", sa.Column("planned_at", UTCDateTime, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("planned_at")
