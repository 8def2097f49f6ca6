"""Data tensors: one copy per owner, never shared between owners

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-29 12:00:00

Revision 0010 kept each distinct tensor once across all owners, so what a delete reported
(``removed.data_tensors``: 0 or 1) told one owner whether another stored the same tensor. A
tensor's identity is now (owner, digest): ``data_tensors`` is keyed by both, ``job_data`` says
the job's owner beside the digest (a foreign key on the pair keeps a tensor a job reads from
going), and every read, write and delete names the owner (``service.store.data``).

Existing rows: each owner whose jobs read a tensor gets its own copy of it (same digest, shape,
values and ``created_at``), and each ``job_data`` row the owner of its job. A tensor no job reads
(one a delete would have removed) has no owner and is not carried over; nor is a ``job_data`` row
whose job is gone. Both tables are rebuilt (the old ones renamed aside, new ones made, the rows
copied, the old ones dropped): the same statements on SQLite and PostgreSQL, with every
constraint named. The downgrade keeps one copy of each digest (the least owner's; copies of one
digest hold the same values).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def _new_tables() -> None:
    op.create_table(
        "data_tensors",
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("shape", sa.JSON(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("owner", "digest", name="pk_data_tensors"),
    )
    op.create_table(
        "job_data",
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "name", name="pk_job_data"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_job_data_job", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["owner", "digest"], ["data_tensors.owner", "data_tensors.digest"],
                                name="fk_job_data_tensor"),
    )
    op.create_index("ix_job_data_owner_digest", "job_data", ["owner", "digest"])


def _old_tables() -> None:
    """The tables as revision 0010 made them (unnamed constraints, named as each backend names them)."""
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


def _aside(suffix: str) -> None:
    """Rename both tables aside (job_data first: it reads data_tensors); their indexes go with
    them when they are dropped. On SQLite (3.26+) a rename rewrites the foreign keys naming the
    table, so the old job_data follows the old data_tensors."""
    op.drop_index("ix_job_data_digest" if suffix == "0014" else "ix_job_data_owner_digest", table_name="job_data")
    op.rename_table("job_data", f"job_data_{suffix}")
    op.rename_table("data_tensors", f"data_tensors_{suffix}")


def _drop_aside(suffix: str) -> None:
    op.drop_table(f"job_data_{suffix}")
    op.drop_table(f"data_tensors_{suffix}")


def upgrade() -> None:
    _aside("0014")
    _new_tables()
    # One copy per (owner, digest) some job reads; the pairs are found without comparing the
    # JSON or binary columns (PostgreSQL's json has no equality).
    op.execute(
        "INSERT INTO data_tensors (owner, digest, shape, content, created_at) "
        "SELECT p.owner, t.digest, t.shape, t.content, t.created_at "
        "FROM (SELECT DISTINCT j.owner AS owner, d.digest AS digest "
        "      FROM job_data_0014 d JOIN jobs j ON j.id = d.job_id) p "
        "JOIN data_tensors_0014 t ON t.digest = p.digest")
    op.execute(
        "INSERT INTO job_data (job_id, name, owner, digest) "
        "SELECT d.job_id, d.name, j.owner, d.digest "
        "FROM job_data_0014 d JOIN jobs j ON j.id = d.job_id "
        "WHERE EXISTS (SELECT 1 FROM data_tensors_0014 t WHERE t.digest = d.digest)")
    _drop_aside("0014")


def downgrade() -> None:
    _aside("0015")
    _old_tables()
    op.execute(
        "INSERT INTO data_tensors (digest, shape, content, created_at) "
        "SELECT t.digest, t.shape, t.content, t.created_at FROM data_tensors_0015 t "
        "WHERE t.owner = (SELECT MIN(u.owner) FROM data_tensors_0015 u WHERE u.digest = t.digest)")
    op.execute("INSERT INTO job_data (job_id, name, digest) SELECT job_id, name, digest FROM job_data_0015")
    _drop_aside("0015")
