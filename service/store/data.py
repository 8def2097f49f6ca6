"""Data tensors: a job's ``data`` kept once per distinct tensor, out of the job's spec.

A spec's ``data`` maps names to nested lists of numbers (or to generated tensors, ``{"shape",
"init", ...}``, which are small and stay in the spec). ``split`` swaps each nested list for a
reference, ``{"sha256": ..., "shape": [...]}``, the SHA-256 of its shape and float64 values;
``save`` stores each distinct tensor once per owner (``data_tensors``, keyed by owner and digest)
and which job reads it under which name (``job_data``). So the 10,000 jobs of a sweep over one
``A`` share one row, and the jobs table stays small. Tensors are never shared between owners:
two owners who send the same values each have a copy, so nothing one owner is told (a delete's
``removed.data_tensors``, whether a tensor was stored) depends on what another stores.
``with_values`` puts the values back (the job's owner's copy), for the worker that runs a job and
for ``?include=data``; ``forget_unread`` deletes the tensors no job reads any more.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
from sqlalchemy import delete, exists, insert, select

from service.store.db import Database, NotFound, clock, one_of
from service.store.models import DataTensor, Job, JobData
from service.store.records import JobRecord

REFERENCE_KEYS = frozenset({"sha256", "shape"})
# A nested-list x0 of more than this many numbers is kept as a tensor too, read under this name
# (never a data name: those are identifiers), so a big start never sits in the jobs table.
X0_INLINE = 10_000
X0 = "@x0"
# Ids or digests one statement names, at most (SQLite's bound parameters are limited).
_PAGE = 5_000


def tensor_digest(shape: Sequence[int], raw: bytes) -> str:
    """A tensor's identity: the SHA-256 of its shape (as JSON) and its float64 little-endian values."""
    return hashlib.sha256(json.dumps(list(shape)).encode() + b"\n" + raw).hexdigest()


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
        digest = tensor_digest(shape, raw)
        self.values.setdefault(digest, (shape, raw))
        ref = {"sha256": digest, "shape": shape}
        self._seen[id(nested)] = (nested, ref)
        return ref


def _numel(nested: list[Any]) -> int:
    """The number of numbers in a (checked, so rectangular) nested list."""
    count, level = 1, nested
    while isinstance(level, list):
        count *= len(level)
        if not level:
            return 0
        level = level[0]
    return count


def split(spec: dict[str, Any], tensors: Tensors) -> tuple[dict[str, Any], dict[str, str]]:
    """The spec as stored (each nested-list data entry, and an x0 of more than ``X0_INLINE``
    numbers, a reference) and {name: digest} of the tensors it reads (x0's under ``X0``);
    ``tensors`` collects their values for ``save`` (or holds them already, for a spec split
    before)."""
    data, x0 = spec.get("data"), spec.get("x0")
    big_x0 = isinstance(x0, list) and _numel(x0) > X0_INLINE
    if not data and not big_x0 and not is_reference(x0):
        return spec, {}
    stored, reads = {}, {}
    for name, entry in (data or {}).items():
        if isinstance(entry, list):
            entry = tensors.reference(entry)
        if is_reference(entry):
            reads[name] = entry["sha256"]
        stored[name] = entry
    out = {**spec, "data": stored} if data else dict(spec)
    if big_x0:
        out["x0"] = tensors.reference(x0)  # type: ignore[arg-type]
    if is_reference(out.get("x0")):
        reads[X0] = out["x0"]["sha256"]
    return out, reads


def save(s: Any, tensors: Tensors, reads: Iterable[tuple[str, Mapping[str, str]]], dialect: str,
         owner: str | None = None) -> None:
    """In the caller's transaction: store the tensors not stored yet for the owner of the jobs,
    and each (job id, {name: digest}) of ``reads``. The jobs are stored already (in this
    transaction); ``owner`` is theirs (looked up when not given). Each owner has its own copy of a
    tensor: whether a digest is stored is only ever asked of the owner's own rows."""
    reads = [(job_id, names) for job_id, names in reads if names]
    if not reads:
        return
    owners = _owners(s, [job_id for job_id, _ in reads], dialect) if owner is None else {}
    by_owner: dict[str, set[str]] = {}
    rows = []
    for job_id, names in reads:
        whose = owner if owner is not None else owners[job_id]
        by_owner.setdefault(whose, set()).update(names.values())
        rows.extend({"job_id": job_id, "name": name, "owner": whose, "digest": digest} for name, digest in names.items())
    table = DataTensor.__table__
    for whose, digests in sorted(by_owner.items()):
        # FOR KEY SHARE (PostgreSQL): a concurrent forget_unread cannot delete a tensor between this
        # read and the job_data rows that will read it.
        have = set(s.scalars(select(table.c.digest).where(table.c.owner == whose, table.c.digest.in_(sorted(digests)))
                             .with_for_update(read=True, key_share=True)))
        for digest in sorted(digests - have):  # one at a time: each may be megabytes
            shape, raw = tensors.values[digest]
            s.execute(_insert_once(table, dialect).values(owner=whose, digest=digest, shape=shape, content=raw,
                                                          created_at=clock(dialect)))
    s.execute(insert(JobData.__table__), rows)


def _owners(s: Any, job_ids: list[str], dialect: str) -> dict[str, str]:
    """{job id: owner} of ``job_ids`` (jobs stored in this transaction), read in pages."""
    jobs, out = Job.__table__, {}
    for first in range(0, len(job_ids), _PAGE):
        page = job_ids[first:first + _PAGE]
        out.update(s.execute(select(jobs.c.id, jobs.c.owner).where(one_of(jobs.c.id, page, dialect))).all())  # type: ignore[arg-type]
    return out


def _insert_once(table: Any, dialect: str) -> Any:
    """An INSERT that leaves a row another transaction stored first (same owner and digest, same values)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        return pg_insert(table).on_conflict_do_nothing(index_elements=["owner", "digest"])
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert
    return sqlite_insert(table).on_conflict_do_nothing(index_elements=["owner", "digest"])


def with_values(db: Database, records: Sequence[JobRecord], parts: Iterable[str] = ("data", "x0")) -> list[JobRecord]:
    """The records with every reference in their specs (of ``parts``: the data, x0) replaced by its
    nested list (each job's own owner's copy). A job whose tensors are gone was deleted since it
    was read: it is left out."""
    parts = frozenset(parts)
    wanted: dict[str, set[str]] = {}
    for job in records:
        for entry in _references(job.spec, parts):
            wanted.setdefault(job.owner, set()).add(entry["sha256"])
    if not wanted:
        return list(records)
    found = {owner: stored_values(db, owner, digests) for owner, digests in wanted.items()}
    out = []
    for job in records:
        spec, mine = job.spec, found.get(job.owner, {})
        data = spec.get("data") if "data" in parts else None
        if data and any(is_reference(entry) for entry in data.values()):
            filled = _filled(data, mine)
            if filled is None:
                continue
            spec = {**spec, "data": filled}
        if "x0" in parts and is_reference(spec.get("x0")):
            if spec["x0"]["sha256"] not in mine:
                continue
            spec = {**spec, "x0": mine[spec["x0"]["sha256"]]}
        out.append(job if spec is job.spec else replace(job, spec=spec))
    return out


def _references(spec: dict[str, Any], parts: frozenset[str]) -> Iterator[dict[str, Any]]:
    if "data" in parts:
        yield from (entry for entry in (spec.get("data") or {}).values() if is_reference(entry))
    if "x0" in parts and is_reference(spec.get("x0")):
        yield spec["x0"]


def stored_values(db: Database, owner: str, digests: Iterable[str]) -> dict[str, list[Any]]:
    """``owner``'s stored tensors among ``digests`` as nested lists, by digest (a deleted one, or
    one only another owner stores, is absent)."""
    table = DataTensor.__table__
    with db.session() as s:
        return {row.digest: np.frombuffer(row.content, dtype="<f8").reshape(row.shape).tolist()
                for row in s.execute(select(table.c.digest, table.c.shape, table.c.content)
                                     .where(table.c.owner == owner, table.c.digest.in_(sorted(set(digests)))))}


def stored_array(db: Database, owner: str, digest: str) -> np.ndarray | None:
    """One of ``owner``'s stored tensors as a float64 array; None if it has none of that digest."""
    table = DataTensor.__table__
    with db.session() as s:
        row = s.execute(select(table.c.shape, table.c.content)
                        .where(table.c.owner == owner, table.c.digest == digest)).first()
    return None if row is None else np.frombuffer(row.content, dtype="<f8").reshape(row.shape)


def data_with_values(db: Database, data: Mapping[str, Any], *, owner: str) -> dict[str, Any] | None:
    """A stored spec's ``data`` (one of ``owner``'s) with each reference replaced by its values;
    None if one is gone."""
    return _filled(data, stored_values(db, owner, [entry["sha256"] for entry in data.values() if is_reference(entry)]))


def _filled(data: Mapping[str, Any], found: Mapping[str, list[Any]]) -> dict[str, Any] | None:
    """``data`` with each reference replaced by its values in ``found``; None if one is missing."""
    if any(is_reference(entry) and entry["sha256"] not in found for entry in data.values()):
        return None
    return {name: found[entry["sha256"]] if is_reference(entry) else entry for name, entry in data.items()}


def job_with_values(db: Database, job: JobRecord, parts: Iterable[str] = ("data", "x0")) -> JobRecord:
    """One job with its data's (and x0's) values; NotFound if it was deleted since it was read."""
    found = with_values(db, [job], parts)
    if not found:
        raise NotFound(f"no job with id {job.id!r}")
    return found[0]


def owners_reading(s: Any, job_ids: Sequence[str], dialect: str) -> list[str]:
    """In the caller's transaction: the owners of the tensors ``job_ids`` read (their own)."""
    reads = JobData.__table__
    return sorted(s.scalars(select(reads.c.owner).where(one_of(reads.c.job_id, list(job_ids), dialect)).distinct()))


def forget_unread(s: Any, owners: Iterable[str] | None = None) -> int:
    """In the caller's transaction: delete the tensors no job reads; returns how many went. With
    ``owners`` only theirs (a delete passes its jobs' owner, so what it reports depends on that
    owner's own rows alone); without, everyone's (the retention clean-up, an operator's count)."""
    tensors, reads = DataTensor.__table__, JobData.__table__
    unread = ~exists().where(reads.c.owner == tensors.c.owner, reads.c.digest == tensors.c.digest)
    if owners is None:
        return s.execute(delete(tensors).where(unread)).rowcount or 0
    return sum(s.execute(delete(tensors).where(tensors.c.owner == owner, unread)).rowcount or 0
               for owner in sorted(set(owners)))
