"""Deleted submissions: a deleted job still counts against its owner's per-minute quota

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29 03:20:00

The submissions-per-minute quota counts an owner's jobs created in the last minute. Deleting a
job removed it from that count, so submit, delete, submit again went past the quota. A delete now
keeps, for the jobs it removes that were created within the quota's window, their owner and
creation time here; the quota counts these too, and rows older than the window are dropped as
new ones are written. A new table: nothing stored before changes.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deleted_submissions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_deleted_submissions_owner_created", "deleted_submissions", ["owner", "created_at"])
    op.create_index("ix_deleted_submissions_created_at", "deleted_submissions", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_deleted_submissions_created_at", table_name="deleted_submissions")
    op.drop_index("ix_deleted_submissions_owner_created", table_name="deleted_submissions")
    op.drop_table("deleted_submissions")
