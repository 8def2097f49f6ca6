"""Workers: a worker that leaves cleanly is marked stopped, not deleted

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29 09:00:00

A worker that shuts down cleanly used to delete its row, and with it the fleet's memory of its
last heartbeat: during a GPU worker's restart the reconciler saw no GPU worker ever and failed
every gpu job queued for over DESCENT_GPU_WAIT_SECONDS. Now it sets ``stopped_at`` instead; the
row is shown ``stopped`` and pruned after the same retention as a lost worker's, and the same id
heartbeating again clears it. Older rows are of running or lost workers: NULL, as they are.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column: plain ADD COLUMN, no table rebuild on SQLite.
    op.add_column("workers", sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("stopped_at")
