"""Events: the outbox of every change, the counter that numbers it, and relay cursors.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mailsched.store.tables import Id, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", Id, primary_key=True, autoincrement=False),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("occurred_at", UTCDateTime, nullable=False),
        sa.Column("campaign_id", Id, nullable=True),
        sa.Column("data", sa.Text, nullable=False),
    )
    op.create_index("ix_events_user", "events", ["user_id", "id"])
    sequences = op.create_table(
        "sequences",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(sequences, [{"name": "events", "value": 0}])
    cursors = op.create_table(
        "relay_cursors",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    # Made here, not by the first relay: two relays starting together would race to.
    op.bulk_insert(cursors, [{"name": "events", "position": 0}])


def downgrade() -> None:
    op.drop_table("relay_cursors")
    op.drop_table("sequences")
    op.drop_index("ix_events_user", "events")
    op.drop_table("events")
