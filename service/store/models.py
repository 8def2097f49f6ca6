"""The SQL schema as SQLAlchemy 2 typed models. Only ``service.store`` uses these classes;
callers get frozen records (``service.store.records``)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    MetaData,
    Table,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from service.store.types import ChunkArray, FaithfulFloat


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    shape: Mapped[list[int]] = mapped_column(JSON)
    queue: Mapped[str] = mapped_column(String(32))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    worker: Mapped[str | None] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    checkpoint: Mapped[bytes | None] = mapped_column(LargeBinary)
    checkpoint_step: Mapped[int | None] = mapped_column(Integer)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    reserved_values: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # A sweep's jobs: its id, and the job's place in it (grid combination * starts + start).
    sweep_id: Mapped[str | None] = mapped_column(String(36), index=True)
    sweep_index: Mapped[int | None] = mapped_column(Integer)
    # What a job shares with the jobs it may run with as one batch (service.spec.batchkey);
    # None: it always runs alone.
    batch_key: Mapped[str | None] = mapped_column(String(80))
    # Where a running job stands ({step, steps, f, grad_norm, updated_at}), written with each chunk.
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # When the history retention dropped this finished job's history (service.store.deletion).
    history_dropped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_jobs_created_id", "created_at", "id"),
                      Index("ix_jobs_owner_status", "owner", "status"),
                      Index("ix_jobs_owner_created_id", "owner", "created_at", "id"),
                      Index("ix_jobs_sweep_id_index", "sweep_id", "sweep_index"),
                      Index("ix_jobs_batch_key_status", "batch_key", "status", "created_at"))


class Sweep(Base):
    """Many jobs from one request: a base spec, a grid of values over its dotted keys, and starts.
    ``grid`` is a list of ``[key, values]`` pairs (order matters: it numbers the jobs)."""

    __tablename__ = "sweeps"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    tags: Mapped[dict[str, str]] = mapped_column(JSON)
    base: Mapped[dict[str, Any]] = mapped_column(JSON)
    grid: Mapped[list[Any]] = mapped_column(JSON)
    starts: Mapped[dict[str, Any]] = mapped_column(JSON)
    # A retried POST with this key (scoped per owner, as a job's) answers with this sweep, if its
    # request has this digest (a 409 otherwise).
    idempotency_key: Mapped[str | None] = mapped_column(String(200), index=True, unique=True)
    request_digest: Mapped[str | None] = mapped_column(String(64))
    n_starts: Mapped[int] = mapped_column(Integer)
    jobs: Mapped[int] = mapped_column(Integer)
    tolerance: Mapped[float] = mapped_column(FaithfulFloat())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Token(Base):
    """A bearer token, stored as the SHA-256 of its text; ``id`` is its public handle."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    admin: Mapped[bool] = mapped_column(Boolean)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class JobTag(Base):
    __tablename__ = "job_tags"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))

    __table_args__ = (Index("ix_job_tags_key_value", "key", "value"),)


class HistoryChunk(Base):
    """Consecutive recorded steps of one job as arrays (``service.store.chunks``): row ``i`` of the
    chunk is step ``steps[i]`` with ``f[i]``, ``grad_norm[i]``, ``lr[i]`` and, when recorded, x and
    grad ``[i * width, (i + 1) * width)`` of the flat ``x``/``grad``. ``double precision[]`` and
    ``integer[]`` on PostgreSQL; JSON text on SQLite (``x``/``grad`` an array per row). One
    database row per chunk, so a history costs one tuple and one index entry per chunk, not per
    step; the view ``history_rows`` (revision 0017) shows it as one row per step. No foreign key
    to ``jobs``: chunks are only written by the worker holding the job, fenced on its row."""

    __tablename__ = "history_chunks"

    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    first_step: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_step: Mapped[int] = mapped_column(Integer)
    n_rows: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    steps: Mapped[Any] = mapped_column(ChunkArray(ints=True), nullable=False)
    f: Mapped[Any] = mapped_column(ChunkArray(), nullable=False)
    grad_norm: Mapped[Any] = mapped_column(ChunkArray(), nullable=False)
    lr: Mapped[Any] = mapped_column(ChunkArray(), nullable=False)
    x: Mapped[Any] = mapped_column(ChunkArray(), nullable=True)
    grad: Mapped[Any] = mapped_column(ChunkArray(), nullable=True)

    __table_args__ = (Index("ux_history_chunks_job_last", "job_id", "last_step", unique=True),)


# The view of revision 0017: a job's history as one row per step (read-only; not created from here).
history_rows = Table("history_rows", MetaData(), Column("job_id", String(36)), Column("step", Integer),
                     Column("f", FaithfulFloat()), Column("grad_norm", FaithfulFloat()), Column("lr", FaithfulFloat()),
                     Column("x", ChunkArray()), Column("grad", ChunkArray()))


class DataTensor(Base):
    """One distinct data tensor of one owner (``service.store.data``): float64 values,
    little-endian, C order, keyed by its owner and the SHA-256 of its shape and values, so an
    owner's jobs that read the same tensor share a row, and no owner's row is ever another's
    (nothing an owner is told depends on what another stores; revision 0015)."""

    __tablename__ = "data_tensors"

    owner: Mapped[str] = mapped_column(String(200), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    shape: Mapped[list[int]] = mapped_column(JSON)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (PrimaryKeyConstraint("owner", "digest", name="pk_data_tensors"),)


class JobTensor(Base):
    """A finished job's x or grad (``name``) too big for its result's JSON (``service.store.tensors``):
    float64 values, little-endian, C order."""

    __tablename__ = "job_tensors"

    job_id: Mapped[str] = mapped_column(String(36), ForeignKey("jobs.id", ondelete="CASCADE", name="fk_job_tensors_job"),
                                        primary_key=True)
    name: Mapped[str] = mapped_column(String(16), primary_key=True)
    shape: Mapped[list[int]] = mapped_column(JSON)
    content: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (PrimaryKeyConstraint("job_id", "name", name="pk_job_tensors"),)


class JobData(Base):
    """Which data tensor a job reads under which name: its owner's (``owner`` is the job's)."""

    __tablename__ = "job_data"

    job_id: Mapped[str] = mapped_column(String(36), ForeignKey("jobs.id", ondelete="CASCADE", name="fk_job_data_job"),
                                        primary_key=True)
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    digest: Mapped[str] = mapped_column(String(64))

    __table_args__ = (PrimaryKeyConstraint("job_id", "name", name="pk_job_data"),
                      ForeignKeyConstraint(["owner", "digest"], ["data_tensors.owner", "data_tensors.digest"],
                                           name="fk_job_data_tensor"),
                      Index("ix_job_data_owner_digest", "owner", "digest"))


class Worker(Base):
    """A worker's heartbeat row (``service.store.fleet``). ``stopped_at`` is set when it leaves
    cleanly: the row stays (its last heartbeat still tells when a GPU worker was last seen) until
    it is pruned, and the next heartbeat of the same id clears it."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[list[str]] = mapped_column(JSON)
    device: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_heartbeat: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    current_job: Mapped[str | None] = mapped_column(String(36))
    device_name: Mapped[str | None] = mapped_column(String(200))  # "cpu", or the CUDA device's name
    cuda_memory: Mapped[int | None] = mapped_column(BigInteger)  # bytes of the CUDA device, if any
    versions: Mapped[dict[str, str] | None] = mapped_column(JSON)  # descent, python, torch, celery
    jobs_done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # left cleanly, if it did


class DeletedSubmission(Base):
    """A deleted job's owner and creation time, kept while it is inside the submissions-per-minute
    window (``service.store.quotas``): deleting a job must not make room for another submission."""

    __tablename__ = "deleted_submissions"
    __table_args__ = (Index("ix_deleted_submissions_owner_created", "owner", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class Counter(Base):
    """One process's share of a monotonic counter (``service.store.counters``): one row per metric
    name, label set and writer, so writers never wait on one another's row; ``/metrics`` sums the
    sources. A histogram is counters too: a row per bucket, and one for the sum."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    labels: Mapped[str] = mapped_column(String(200), primary_key=True, default="", server_default="")
    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[float] = mapped_column(Float(precision=53), default=0.0, server_default="0")
