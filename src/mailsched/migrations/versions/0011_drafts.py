"""Drafts: a campaign's deliveries by address, to drop an upload's duplicates.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # Addresses are deduplicated regardless of case; MySQL's collation already is.
        op.execute(
            "CREATE INDEX ix_deliveries_recipient"
            " ON deliveries (campaign_id, recipient COLLATE NOCASE)"
        )
    else:
        op.create_index("ix_deliveries_recipient", "deliveries", ["campaign_id", "recipient"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_recipient", table_name="deliveries")
