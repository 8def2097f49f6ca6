"""Sweeps: an Idempotency-Key, and a digest of the request it was sent with

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 02:05:00

A retried ``POST /v1/sweeps`` with the same key (per owner, scoped as a job's) and the same request
answers with the sweep the first one made instead of making its jobs again; the same key with
another request is a 409. Older sweeps have neither.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns: a plain ADD COLUMN on both databases, no table rebuild on SQLite.
    op.add_column("sweeps", sa.Column("idempotency_key", sa.String(200), nullable=True))
    op.add_column("sweeps", sa.Column("request_digest", sa.String(64), nullable=True))
    op.create_index("ix_sweeps_idempotency_key", "sweeps", ["idempotency_key"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_sweeps_idempotency_key", "sweeps")
    with op.batch_alter_table("sweeps") as batch:
        batch.drop_column("request_digest")
        batch.drop_column("idempotency_key")
