"""Relays and shaping: which relay answered each send, and the shaping groups with
their numbered sends.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mailsched.store.tables import Id, UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column at the end: an instant ALTER on MariaDB and MySQL 8.
    op.add_column("send_slots", sa.Column("relay", sa.String(64), nullable=True))
    op.create_table(
        "shaping_groups",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("factor", sa.Float, nullable=True),
        sa.Column("slowed_until", UTCDateTime, nullable=True),
        sa.Column("suspended_until", UTCDateTime, nullable=True),
        sa.Column("reason", sa.String(200), nullable=True),
    )
    op.create_table(
        "shaping_slots",
        sa.Column("grp", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("campaign_id", Id, nullable=False),
        sa.Column("slot_seq", sa.Integer, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_shaping_slots_started", "shaping_slots", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_shaping_slots_started", "shaping_slots")
    op.drop_table("shaping_slots")
    op.drop_table("shaping_groups")
    with op.batch_alter_table("send_slots") as batch:
        batch.drop_column("relay")
