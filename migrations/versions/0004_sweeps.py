"""Sweeps: many jobs from one request, and each job's place in its sweep

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 23:30:00

``sweeps`` holds a sweep's request (base spec, grid, starts, tolerance) and its owner; its jobs are
ordinary rows of ``jobs`` with ``sweep_id`` (indexed with ``sweep_index``, the job's place in the
sweep: grid combination * number of starts + start). Older jobs have neither.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def _float() -> sa.types.TypeEngine:
    return sa.Float(precision=53).with_variant(sa.dialects.postgresql.DOUBLE_PRECISION(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("base", sa.JSON(), nullable=False),
        sa.Column("grid", sa.JSON(), nullable=False),
        sa.Column("starts", sa.JSON(), nullable=False),
        sa.Column("n_starts", sa.Integer(), nullable=False),
        sa.Column("jobs", sa.Integer(), nullable=False),
        sa.Column("tolerance", _float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_sweeps_owner", "sweeps", ["owner"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("sweep_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("sweep_index", sa.Integer(), nullable=True))
    op.create_index("ix_jobs_sweep_id", "jobs", ["sweep_id"])
    op.create_index("ix_jobs_sweep_id_index", "jobs", ["sweep_id", "sweep_index"])


def downgrade() -> None:
    op.drop_index("ix_jobs_sweep_id_index", "jobs")
    op.drop_index("ix_jobs_sweep_id", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("sweep_index")
        batch.drop_column("sweep_id")
    op.drop_index("ix_sweeps_owner", "sweeps")
    op.drop_table("sweeps")
