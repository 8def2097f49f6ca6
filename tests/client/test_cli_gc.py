"""``descent gc`` on each backend (it works on the database directly, as the workers' clean-up
does): ``--dry-run`` prints what would go and changes nothing, a run removes it, one clean-up at
a time; and the argument parsing of ``gc`` and ``delete``."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from service.cli import build_parser, main
from service.store import deletion
from service.store import jobs as job_store
from service.store.db import utcnow
from service.store.models import history_rows, Job
from service.status import JobStatus
from tests.store.test_deletion import SPEC, finished_job


@pytest.fixture
def gc_env(db, monkeypatch, tmp_path):  # type: ignore[no-untyped-def]
    for name in ("DESCENT_HISTORY_RETENTION_SECONDS", "DESCENT_JOB_RETENTION_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DESCENT_DATABASE_URL", db.url)
    monkeypatch.setenv("DESCENT_DATA_DIR", str(tmp_path))
    return db


def aged(db, seconds: float, rows: int = 5) -> str:  # type: ignore[no-untyped-def]
    job_id = finished_job(db, rows)
    with db.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(finished_at=utcnow() - timedelta(seconds=seconds)))
    return job_id


def counts(db) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    with db.session() as s:
        return (int(s.scalar(select(func.count()).select_from(Job))),
                int(s.scalar(select(func.count()).select_from(history_rows))))


def test_gc_dry_run_prints_what_would_go_and_changes_nothing(gc_env, capsys, monkeypatch):
    db = gc_env
    old, oldish, new = aged(db, 30 * 86_400, 7), aged(db, 2 * 86_400, 4), aged(db, 60, 3)
    job_store.create_job(db, SPEC, [2], "cpu", reserved_values=10)
    monkeypatch.setenv("DESCENT_JOB_RETENTION_SECONDS", str(7 * 86_400))
    monkeypatch.setenv("DESCENT_HISTORY_RETENTION_SECONDS", "86400")
    assert main(["gc", "--dry-run"]) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert out.err == "" and len(lines) == 3, out.out
    assert lines[0].startswith(f"would delete job {old} (owner alice, succeeded ") and lines[0].endswith(", 7 history rows)")
    assert lines[1].startswith(f"would drop the history of job {oldish} ") and lines[1].endswith(", 4 rows)")
    assert lines[2] == ("would delete 1 finished job(s) and 0 empty sweep(s), would drop the histories of 1 more; "
                        "11 history rows would go")
    assert counts(db) == (4, 14)
    assert main(["gc"]) == 0
    assert capsys.readouterr().out.strip() == ("deleted 1 finished job(s) and 0 empty sweep(s), dropped the histories "
                                               "of 1 more; 11 history rows went, and 0 data tensor(s) no job reads")
    assert counts(db) == (3, 3)
    assert main(["gc", "--dry-run", "--job-seconds", "30"]) == 0  # the flags override the settings
    assert f"would delete job {new} " in capsys.readouterr().out


def test_gc_with_no_retention_does_nothing_and_says_so(gc_env, capsys):
    aged(gc_env, 10 * 86_400)
    assert main(["gc"]) == 0
    assert capsys.readouterr().out.startswith("nothing to do: no retention is set")
    assert counts(gc_env) == (1, 5)


def test_gc_while_another_clean_up_runs_is_one_line_and_exit_1(gc_env, capsys):
    aged(gc_env, 10 * 86_400)
    with deletion.exclusive(gc_env) as mine:
        assert mine
        assert main(["gc", "--job-seconds", "60"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("descent gc: another clean-up is running") and len(err.strip().splitlines()) == 1
    assert counts(gc_env) == (1, 5)


def test_gc_and_delete_arguments(capsys):
    args = build_parser().parse_args(["gc", "--dry-run", "--history-seconds", "3600", "--job-seconds", "1.5"])
    assert (args.dry_run, args.history_seconds, args.job_seconds) == (True, 3600.0, 1.5)
    assert build_parser().parse_args(["delete", "J"]).sweep is False
    assert build_parser().parse_args(["delete", "J", "--sweep"]).sweep is True
    for argv in (["gc", "--job-seconds", "0"], ["gc", "--history-seconds", "x"], ["delete"]):
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args(argv)
        assert exit_.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_the_help_names_delete_and_gc():
    from service.cli import build_parser

    shown = build_parser().format_help()
    assert "descent delete " in shown and "descent gc " in shown


def test_a_running_job_is_never_collected(gc_env):
    job, _ = job_store.create_job(gc_env, SPEC, [2], "cpu", reserved_values=10)
    job_store.claim_job(gc_env, job.id, "w1", 60, 3)
    with gc_env.session() as s:  # even with an old finished_at (it has none while running)
        s.execute(update(Job).where(Job.id == job.id).values(finished_at=utcnow() - timedelta(days=9)))
    assert deletion.apply_retention(gc_env, 1, 1).removed == deletion.Removed()
    assert job_store.get_job(gc_env, job.id).status == JobStatus.RUNNING
