"""Bounces and complaints: their record, the soft-bounce streaks, unmatched inbound
mail kept for inspection, where a suppression came from and when it ends, and why
a campaign paused.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mailsched.store.tables import Address, Id, RawMessage, UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns at the end: an instant ALTER on MariaDB and MySQL 8.
    op.add_column("suppressions", sa.Column("detail", sa.String(500), nullable=True))
    op.add_column("suppressions", sa.Column("expires_at", UTCDateTime, nullable=True))
    op.add_column("campaigns", sa.Column("pause_reason", sa.String(200), nullable=True))
    op.add_column("campaigns", sa.Column("breaker_since", UTCDateTime, nullable=True))
    op.create_table(
        "bounces",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("campaign_id", Id, nullable=True),
        sa.Column("delivery_id", Id, nullable=True),
        sa.Column("recipient", Address, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("diagnostic", sa.String(500), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("received_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_bounces_campaign", "bounces", ["campaign_id", "id"])
    op.create_index("ix_bounces_recipient", "bounces", ["user_id", "recipient", "kind"])
    op.create_table(
        "soft_bounce_streaks",
        sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("address", Address, primary_key=True),
        sa.Column("first_bounce_id", Id, nullable=False),
    )
    op.create_table(
        "inbound_messages",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("received_at", UTCDateTime, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("mail_from", sa.String(320), nullable=True),
        sa.Column("rcpt_to", sa.String(320), nullable=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("raw", RawMessage, nullable=False),
    )
    op.create_index("ix_inbound_messages_received", "inbound_messages", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_inbound_messages_received", "inbound_messages")
    op.drop_table("inbound_messages")
    op.drop_table("soft_bounce_streaks")
    op.drop_index("ix_bounces_recipient", "bounces")
    op.drop_index("ix_bounces_campaign", "bounces")
    op.drop_table("bounces")
    op.drop_column("campaigns", "breaker_since")
    op.drop_column("campaigns", "pause_reason")
    op.drop_column("suppressions", "expires_at")
    op.drop_column("suppressions", "detail")
