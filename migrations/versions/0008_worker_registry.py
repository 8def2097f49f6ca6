"""Workers: what each one is and has done

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 04:50:00

The workers view (``GET /v1/workers``) shows each worker's device name and CUDA memory, the
versions it runs and the jobs it has finished. Older rows have none and zero jobs; a worker
rewrites its row at its next heartbeat.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns, and one with a server default: plain ADD COLUMN, no table rebuild on SQLite.
    op.add_column("workers", sa.Column("device_name", sa.String(200), nullable=True))
    op.add_column("workers", sa.Column("cuda_memory", sa.BigInteger(), nullable=True))
    op.add_column("workers", sa.Column("versions", sa.JSON(), nullable=True))
    op.add_column("workers", sa.Column("jobs_done", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("jobs_done")
        batch.drop_column("versions")
        batch.drop_column("cuda_memory")
        batch.drop_column("device_name")
