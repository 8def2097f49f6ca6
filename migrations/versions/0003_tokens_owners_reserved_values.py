"""API tokens, an owner for every job, and what each job reserves of its owner's disk quota

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 22:30:00

``api_tokens`` holds bearer tokens as SHA-256 hashes (the token itself is shown once, when created).
Every job gets an owner: jobs created before this revision belong to ``local``, the owner an
auth-off loopback service acts as. ``reserved_values`` is how many history values a job's spec may
record, counted against its owner's quota (0 for older jobs, which predate quotas).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("admin", sa.Boolean(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.execute("UPDATE jobs SET owner = 'local' WHERE owner IS NULL")
    with op.batch_alter_table("jobs") as batch:
        batch.alter_column("owner", existing_type=sa.String(200), nullable=False)
        batch.add_column(sa.Column("reserved_values", sa.BigInteger(), nullable=False, server_default="0"))
    op.create_index("ix_jobs_owner_status", "jobs", ["owner", "status"])
    op.create_index("ix_jobs_owner_created_id", "jobs", ["owner", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_owner_created_id", "jobs")
    op.drop_index("ix_jobs_owner_status", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("reserved_values")
        batch.alter_column("owner", existing_type=sa.String(200), nullable=True)
    op.drop_table("api_tokens")
