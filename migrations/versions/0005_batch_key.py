"""Batched execution: each job's batch key

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 01:30:00

``jobs.batch_key`` is what a job shares with the jobs it may run with as one batch (same
objective, shape, dtype, device, optimiser and its hyper-parameters, scheduler, steps, stop and
record settings; see ``service.spec.batchkey``). A worker that claims a job claims queued jobs of
the same key with it, through the index on (batch_key, status, created_at). Older jobs have none
and run alone.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("batch_key", sa.String(80), nullable=True))
    op.create_index("ix_jobs_batch_key_status", "jobs", ["batch_key", "status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_batch_key_status", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("batch_key")
