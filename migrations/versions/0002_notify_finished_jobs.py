"""notify listeners when a job finishes (PostgreSQL)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 13:00:00

A trigger sends ``NOTIFY descent_job_finished, '<job id>'`` whenever a job's status becomes
succeeded, failed or cancelled, whichever code path does it. The notification is delivered
when that transaction commits, so a listener never sees a job finish before its result and
history are readable. SQLite has no such channel: nothing to do there (waiters poll).
"""
from __future__ import annotations

from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("""
        CREATE FUNCTION descent_notify_job_finished() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('descent_job_finished', NEW.id);
            RETURN NULL;
        END
        $$
    """)
    op.execute("""
        CREATE TRIGGER jobs_notify_finished
        AFTER UPDATE OF status ON jobs
        FOR EACH ROW
        WHEN (NEW.status IN ('succeeded', 'failed', 'cancelled') AND OLD.status IS DISTINCT FROM NEW.status)
        EXECUTE FUNCTION descent_notify_job_finished()
    """)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS jobs_notify_finished ON jobs")
    op.execute("DROP FUNCTION IF EXISTS descent_notify_job_finished()")
