"""Jobs: live progress

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 04:30:00

``jobs.progress`` is where a running job stands (``{step, steps, f, grad_norm, updated_at}``), written
with each history chunk in the statement that renews the job's lease; null until the first chunk.
Older jobs have none.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column: a plain ADD COLUMN on both databases, no table rebuild on SQLite.
    op.add_column("jobs", sa.Column("progress", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("progress")
