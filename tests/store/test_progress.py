"""A running job's progress: written with each chunk in the statement that renews its lease."""
from __future__ import annotations

import math

from service.rows import Progress
from service.store import HistoryRows
from service.store import jobs as job_store
from service.store.history import ChunkWrite, save_chunk, save_chunks
from tests.store.test_store import new_job


def rows(step: int) -> HistoryRows:
    return HistoryRows(steps=[step], f=[1.0], grad_norm=[1.0], lr=[0.1])


def test_a_chunk_sets_the_jobs_progress_and_a_later_chunk_moves_it(db):
    job_id = new_job(db)
    job_store.claim_job(db, job_id, "w1", 30, 3)
    assert job_store.get_job(db, job_id).progress is None
    save_chunk(db, job_id, "w1", rows(0), None, None, 30, Progress(step=0, steps=10, f=4.0, grad_norm=2.0))
    first = job_store.get_job(db, job_id).progress
    assert {k: first[k] for k in ("step", "steps", "f", "grad_norm")} == {"step": 0, "steps": 10, "f": 4.0,
                                                                         "grad_norm": 2.0}
    assert first["updated_at"].endswith("Z")
    save_chunk(db, job_id, "w1", rows(1), None, None, 30, Progress(step=5, steps=10, f=math.nan, grad_norm=math.inf))
    later = job_store.get_job(db, job_id).progress
    assert (later["step"], later["f"], later["grad_norm"]) == (5, "NaN", "Infinity")


def test_a_batchs_chunks_set_each_jobs_own_progress_in_one_write(db):
    ids = [new_job(db) for _ in range(3)]
    for job_id in ids:
        job_store.claim_job(db, job_id, "w1", 30, 3)
    writes = [ChunkWrite(job_id, rows(0), progress=Progress(step=7, steps=9, f=float(i), grad_norm=1.0))
              for i, job_id in enumerate(ids[:2])] + [ChunkWrite(ids[2], rows(0))]  # the last without progress
    held = save_chunks(db, "w1", writes, 30)
    assert set(held) == set(ids)
    assert [job_store.get_job(db, i).progress and job_store.get_job(db, i).progress["f"] for i in ids] == [0.0, 1.0, None]


def test_progress_is_fenced_like_the_rows(db):
    job_id = new_job(db)
    job_store.claim_job(db, job_id, "w1", 30, 3)
    held = save_chunks(db, "intruder", [ChunkWrite(job_id, rows(0), progress=Progress(1, 2, 3.0, 4.0))], 30)
    assert held == {} and job_store.get_job(db, job_id).progress is None
