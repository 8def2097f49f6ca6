"""Data tensors: a job's ``data`` kept once per distinct tensor, out of the job's spec.

A spec's ``data`` maps names to nested lists of numbers (or to generated tensors, ``{"shape",
"init", ...}``, which are small and stay in the spec). ``split`` swaps each nested list for a
reference, ``{"sha256": ..., "shape": [...]}``, the SHA-256 of its shape and float64 values;
``save`` stores each distinct tensor once (``data_tensors``) and which job reads it under which
name (``job_data``). So the 10,000 jobs of a sweep over one ``A`` share one row, and the jobs
table stays small. ``with_values`` puts the values back, for the worker that runs a job and for
``?include=data``; ``forget_unread`` deletes the tensors no job reads any more.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from sqlalchemy import delete, exists, insert, select

from service.store.db import Database, NotFound, clock
from service.store.models import DataTensor, JobData
from service.store.records import JobRecord

REFERENCE_KEYS = frozenset({"sha256", "shape"})


def is_reference(entry: Any) -> bool:
    """Whether a stored spec's data entry is a reference to a stored tensor."""
    return isinstance(entry, dict) and entry.keys() == REFERENCE_KEYS


class Tensors:
    """The distinct tensors met while splitting specs: digest -> (shape, float64 bytes). A sweep's
    jobs hold the same list objects, so each is hashed once (remembered by identity)."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[list[int], bytes]] = {}
        self._seen: dict[int, tuple[Any, dict[str, Any]]] = {}

    def reference(self, nested: list[Any]) -> dict[str, Any]:
        seen = self._seen.get(id(nested))
        if seen is not None and seen[0] is nested:
            return seen[1]
        array = np.ascontiguousarray(np.asarray(nested, dtype="<f8"))
        shape = list(array.shape)
        raw = array.tobytes()
        digest = hashlib.sha256(json.dumps(shape).encode() + b"\n" + raw).hexdigest()
        self.values.setdefault(digest, (shape, raw))
        ref = {"sha256": digest, "shape": shape}
        self._seen[id(nested)] = (nested, ref)
        return ref


def split(spec: dict[str, Any], tensors: Tensors) -> tuple[dict[str, Any], dict[str, str]]:
    """The spec as stored (each nested-list data entry a reference) and {name: digest} of the
    tensors it reads; ``tensors`` collects their values for ``save``."""
    data = spec.get("data")
    if not data:
        return spec, {}
    stored, reads = {}, {}
    for name, entry in data.items():
        if isinstance(entry, list):
            entry = tensors.reference(entry)
        if is_reference(entry):
            reads[name] = entry["sha256"]
        stored[name] = entry
    return {**spec, "data": stored}, reads


def save(s: Any, tensors: Tensors, reads: Iterable[tuple[str, Mapping[str, str]]], dialect: str) -> None:
    """In the caller's transaction: store the tensors not stored yet, and each (job id,
    {name: digest}) of ``reads``."""
    rows = [{"job_id": job_id, "name": name, "digest": digest} for job_id, names in reads for name, digest in names.items()]
    if not rows:
        return
    table = DataTensor.__table__
    # FOR KEY SHARE (PostgreSQL): a concurrent forget_unread cannot delete a tensor between this
    # read and the job_data rows that will read it.
    have = set(s.scalars(select(table.c.digest).where(table.c.digest.in_(list(tensors.values)))
                         .with_for_update(read=True, key_share=True)))
    new = [{"digest": digest, "shape": shape, "content": raw, "created_at": clock(dialect)}
           for digest, (shape, raw) in tensors.values.items() if digest not in have]
    for row in new:  # one at a time: each may be megabytes
        s.execute(_insert_once(table, dialect).values(**row))
    s.execute(insert(JobData.__table__), rows)


def _insert_once(table: Any, dialect: str) -> Any:
    """An INSERT that leaves a row another transaction stored first (same digest, same values)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        return pg_insert(table).on_conflict_do_nothing(index_elements=["digest"])
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert
    return sqlite_insert(table).on_conflict_do_nothing(index_elements=["digest"])


def with_values(db: Database, records: Sequence[JobRecord]) -> list[JobRecord]:
    """The records with every data reference in their specs replaced by its nested list. A job
    whose tensors are gone was deleted since it was read: it is left out."""
    wanted = {entry["sha256"] for job in records for entry in (job.spec.get("data") or {}).values() if is_reference(entry)}
    if not wanted:
        return list(records)
    found = stored_values(db, wanted)
    out = []
    for job in records:
        data = job.spec.get("data")
        if data and any(is_reference(entry) for entry in data.values()):
            filled = _filled(data, found)
            if filled is None:
                continue
            job = replace(job, spec={**job.spec, "data": filled})
        out.append(job)
    return out


def stored_values(db: Database, digests: Iterable[str]) -> dict[str, list[Any]]:
    """The stored tensors among ``digests`` as nested lists, by digest (a deleted one is absent)."""
    table = DataTensor.__table__
    with db.session() as s:
        return {row.digest: np.frombuffer(row.content, dtype="<f8").reshape(row.shape).tolist()
                for row in s.execute(select(table.c.digest, table.c.shape, table.c.content)
                                     .where(table.c.digest.in_(sorted(set(digests)))))}


def data_with_values(db: Database, data: Mapping[str, Any]) -> dict[str, Any] | None:
    """A stored spec's ``data`` with each reference replaced by its values; None if one is gone."""
    return _filled(data, stored_values(db, [entry["sha256"] for entry in data.values() if is_reference(entry)]))


def _filled(data: Mapping[str, Any], found: Mapping[str, list[Any]]) -> dict[str, Any] | None:
    """``data`` with each reference replaced by its values in ``found``; None if one is missing."""
    if any(is_reference(entry) and entry["sha256"] not in found for entry in data.values()):
        return None
    return {name: found[entry["sha256"]] if is_reference(entry) else entry for name, entry in data.items()}


def job_with_values(db: Database, job: JobRecord) -> JobRecord:
    """One job with its data's values; NotFound if it was deleted since it was read."""
    found = with_values(db, [job])
    if not found:
        raise NotFound(f"no job with id {job.id!r}")
    return found[0]


def forget_unread(s: Any) -> int:
    """In the caller's transaction: delete the tensors no job reads; returns how many went."""
    tensors, reads = DataTensor.__table__, JobData.__table__
    unread = ~exists().where(reads.c.digest == tensors.c.digest)
    return s.execute(delete(tensors).where(unread)).rowcount or 0
