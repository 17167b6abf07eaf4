"""Campaigns, deliveries and send slots.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from mailsched.store.tables import Id, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("subject", sa.String(998), nullable=False),
        sa.Column("body", sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql"), nullable=False),
        sa.Column("start_time", UTCDateTime, nullable=False),
        sa.Column("delay_seconds", sa.Integer, nullable=False),
        sa.Column("hourly_limit", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("recipient_count", sa.Integer, nullable=False),
        sa.Column("slot_seq", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("completed_at", UTCDateTime, nullable=True),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    op.create_index("ix_campaigns_user", "campaigns", ["user_id", "id"])
    op.create_table(
        "deliveries",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("campaign_id", Id, sa.ForeignKey("campaigns.id"), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("scheduled_at", UTCDateTime, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.SmallInteger, nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", UTCDateTime, nullable=True),
        sa.Column("queued_at", UTCDateTime, nullable=True),
        sa.Column("sent_at", UTCDateTime, nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    op.create_index("ix_deliveries_due", "deliveries", ["status", "scheduled_at"])
    op.create_index(
        "ix_deliveries_campaign_status", "deliveries", ["campaign_id", "status", "scheduled_at"]
    )
    op.create_table(
        "send_slots",
        sa.Column("campaign_id", Id, sa.ForeignKey("campaigns.id"), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("delivery_id", Id, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime, nullable=True),
        sa.Column("worker", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=True),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    op.create_index("ix_send_slots_delivery", "send_slots", ["delivery_id"])


def downgrade() -> None:
    op.drop_table("send_slots")
    op.drop_table("deliveries")
    op.drop_table("campaigns")
