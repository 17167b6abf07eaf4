"""Webhooks: endpoints, the messages waiting for them, and the attempts made.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mailsched.store.tables import Id, UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("description", sa.String(500), nullable=True),
        sa.Column("event_types", sa.Text, nullable=True),
        sa.Column("secret", sa.String(100), nullable=False),
        sa.Column("batch", sa.Boolean, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("disabled_at", UTCDateTime, nullable=True),
        sa.Column("disabled_reason", sa.String(200), nullable=True),
        sa.Column("deleted_at", UTCDateTime, nullable=True),
    )
    op.create_index("ix_webhook_endpoints_user", "webhook_endpoints", ["user_id", "id"])
    op.create_table(
        "webhook_messages",
        sa.Column("endpoint_id", Id, primary_key=True, autoincrement=False),
        sa.Column("event_id", Id, primary_key=True, autoincrement=False),
        sa.Column("due_at", UTCDateTime, nullable=True),
        sa.Column("attempts", sa.SmallInteger, nullable=False),
        sa.Column("batch_key", sa.BigInteger, nullable=True),
        sa.Column("finished_at", UTCDateTime, nullable=True),
    )
    op.create_index("ix_webhook_messages_due", "webhook_messages", ["endpoint_id", "due_at"])
    op.create_index("ix_webhook_messages_finished", "webhook_messages", ["finished_at"])
    op.create_table(
        "webhook_attempts",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("endpoint_id", Id, nullable=False),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("event_id", Id, nullable=False),
        sa.Column("event_count", sa.Integer, nullable=False),
        sa.Column("attempted_at", UTCDateTime, nullable=False),
        sa.Column("status_code", sa.SmallInteger, nullable=True),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        sa.Column("error", sa.String(500), nullable=True),
    )
    op.create_index("ix_webhook_attempts_endpoint", "webhook_attempts", ["endpoint_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_attempts_endpoint", "webhook_attempts")
    op.drop_table("webhook_attempts")
    op.drop_index("ix_webhook_messages_finished", "webhook_messages")
    op.drop_index("ix_webhook_messages_due", "webhook_messages")
    op.drop_table("webhook_messages")
    op.drop_index("ix_webhook_endpoints_user", "webhook_endpoints")
    op.drop_table("webhook_endpoints")
