"""Counters: the monotonic counters and histograms that /metrics shows

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28 05:15:00

Jobs finished, steps run, history rows written, reclaims, and the job-duration, queue-wait and
batch-size histograms, kept in SQL so that every API process answers ``/metrics`` for the whole
fleet. Each writer (a worker, the reconciler, the API) keeps its own row per metric and label
set, incremented in the transaction that does the counted work; ``/metrics`` sums them.
A new table: nothing older changes, and a database upgraded from an older one starts at zero.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "counters",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("labels", sa.String(200), nullable=False, server_default=""),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("value", sa.Float(precision=53), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("name", "labels", "source"),
    )


def downgrade() -> None:
    op.drop_table("counters")
