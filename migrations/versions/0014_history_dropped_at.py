"""Jobs: when the history retention dropped a job's history

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-29 03:30:00

A finished job whose history the retention clean-up dropped looked like a job that recorded
nothing. ``history_dropped_at`` says when it went; the job's JSON shows it. Older jobs: NULL (a
clean-up before this revision left no mark).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column: plain ADD COLUMN, no table rebuild on SQLite.
    op.add_column("jobs", sa.Column("history_dropped_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("history_dropped_at")
