"""Data tensors: the named tensors an objective reads besides its variable

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28 15:40:00

A job's ``data`` (``{"A": [[...]], "b": [...]}``) is kept out of its spec: each distinct tensor
once in ``data_tensors`` (keyed by the SHA-256 of its shape and values), and ``job_data`` says
which job reads which tensor under which name. A sweep of 10,000 starts over one ``A`` stores
``A`` once; deleting a job deletes its ``job_data`` rows (by cascade) and a tensor goes with the
last job that reads it (a foreign key keeps a tensor a job reads from going). New tables: older jobs have no data and nothing of theirs changes.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "data_tensors",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("shape", sa.JSON(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "job_data",
        sa.Column("job_id", sa.String(36), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("digest", sa.String(64), sa.ForeignKey("data_tensors.digest"), nullable=False),
    )
    op.create_index("ix_job_data_digest", "job_data", ["digest"])


def downgrade() -> None:
    op.drop_index("ix_job_data_digest", table_name="job_data")
    op.drop_table("job_data")
    op.drop_table("data_tensors")
