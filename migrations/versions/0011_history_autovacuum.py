"""History autovacuum: PostgreSQL vacuums the history table after 1% of it is dead, not 20%

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28 16:10:00

Deleting a job (or a retention clean-up) deletes its history rows; their space is reused once
VACUUM has passed (the index's after a second pass). By default autovacuum waits until a fifth
of a table is dead rows, which on a history of hundreds of millions of rows is tens of millions
of rows of space not given back for hours; here it starts after 1% (and at least 50,000 rows).
Measured in benchmarks/delete_space.py. PostgreSQL only: SQLite has no autovacuum settings per
table, and nothing changes there.
"""
from __future__ import annotations

from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE history SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 50000)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE history RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold)")
