"""Hardening: the dead-letter outbox.

``dead_letters`` holds failed deliveries until the relay has published them to
the dead-letter topic (see ``store/dead_letters.py``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mailsched.store.tables import Id, UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    _create_dead_letters()


def downgrade() -> None:
    op.drop_table("dead_letters")


def _create_dead_letters() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("delivery_id", Id, nullable=False),
        sa.Column("campaign_id", Id, nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
