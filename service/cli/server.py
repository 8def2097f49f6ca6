"""The ``descent`` commands that run the service's parts: up, api, worker, db, tokens and gc."""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from typing import Any

from service import logs
from service.config import ConfigError, load_settings


def _db():  # type: ignore[no-untyped-def]
    from service.store import Database

    settings = load_settings()
    return Database(settings.database_url, settings.database_timeouts)


def cmd_db(args: argparse.Namespace) -> int:
    from service.store import migrate

    db = _db()
    if args.action == "upgrade":
        try:
            migrate.upgrade(db)
        except migrate.SchemaOutOfDate as exc:
            print(f"descent db: {exc}", file=sys.stderr)
            return 2
        print(f"database at revision {migrate.current_revision(db)} ({_safe_url(db.url)})")
    else:
        print(migrate.current_revision(db) or "(empty)")
    return 0


def _safe_url(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def cmd_tokens(args: argparse.Namespace) -> int:
    """Tokens are made on the database directly (as ``db upgrade`` is): whoever runs this holds
    the database's credentials, so no API token is needed to make the first one."""
    from service.store import NotFound, tokens

    db = _db()
    if args.action == "create":
        if not args.owner:
            print("descent tokens create: --owner NAME is required", file=sys.stderr)
            return 2
        try:
            record, secret = tokens.create_token(db, args.owner, admin=args.admin)
        except ValueError as exc:
            print(f"descent tokens create: {exc}", file=sys.stderr)
            return 2
        kind = "admin token" if record.admin else "token"
        print(f"created {kind} {record.id} for owner '{record.owner}'; it is shown once, keep it secret:")
        print(secret)
    elif args.action == "list":
        print(f"{'id':<14}{'owner':<24}{'admin':<7}{'created':<22}revoked")
        for t in tokens.list_tokens(db):
            revoked = t.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if t.revoked_at else "-"
            print(f"{t.id:<14}{t.owner:<24}{'yes' if t.admin else 'no':<7}{t.created_at:%Y-%m-%d %H:%M:%S}  {revoked}")
    else:
        if not args.id:
            print("descent tokens revoke: the token's ID is required (see descent tokens list)", file=sys.stderr)
            return 2
        try:
            record = tokens.revoke_token(db, args.id)
        except NotFound as exc:
            print(f"descent tokens revoke: {exc.message}", file=sys.stderr)
            return 1
        print(f"revoked token {record.id} of owner '{record.owner}'")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    """The retention clean-up the workers run (``service.store.deletion.apply_retention``), now, with the
    configured retentions or the ones given; ``--dry-run`` lists what would go and changes nothing.
    Like ``db`` and ``tokens``, it works on the database directly."""
    from service.store import StoreError
    from service.store.deletion import apply_retention, exclusive
    from service.store.migrate import check_schema

    settings = load_settings()
    history = args.history_seconds if args.history_seconds is not None else settings.history_retention
    jobs = args.job_seconds if args.job_seconds is not None else settings.job_retention
    if history is None and jobs is None:
        print("nothing to do: no retention is set (DESCENT_HISTORY_RETENTION_SECONDS, DESCENT_JOB_RETENTION_SECONDS) "
              "and neither --history-seconds nor --job-seconds was given")
        return 0
    db = _db()
    try:
        check_schema(db)
        if args.dry_run:
            done = apply_retention(db, history, jobs, dry_run=True)
        else:
            with exclusive(db) as mine:
                if not mine:
                    print("descent gc: another clean-up is running (a worker's, or another descent gc); "
                          "try again when it has finished", file=sys.stderr)
                    return 1
                done = apply_retention(db, history, jobs)
    except StoreError as exc:
        print(f"descent gc: {exc.message}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - still one line, not a traceback
        print(f"descent gc: unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
              file=sys.stderr)
        return 1
    finally:
        db.engine.dispose()
    if args.dry_run:
        for job in done.deleted:
            print(f"would delete job {job.id} (owner {job.owner}, {job.status} {_when(job.finished_at)}, "
                  f"{job.rows:,} history rows)")
        for job in done.pruned:
            print(f"would drop the history of job {job.id} (owner {job.owner}, {job.status} "
                  f"{_when(job.finished_at)}, {job.rows:,} rows)")
    removed = done.removed
    verb = ("would delete", "would drop", "would go") if args.dry_run else ("deleted", "dropped", "went")
    print(f"{verb[0]} {removed.jobs:,} finished job(s) and {removed.sweeps:,} empty sweep(s), {verb[1]} the "
          f"histories of {len(done.pruned):,} more; {removed.history_rows:,} history rows {verb[2]}"
          + ("" if args.dry_run else f", and {removed.data_tensors:,} data tensor(s) no job reads"))
    return 0


def _when(stamp: Any) -> str:
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ") if stamp is not None else "at an unknown time"


def cmd_api(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from service.api import create_app
    from service.cli.serving import serve
    from service.store.migrate import SchemaOutOfDate

    settings = load_settings()
    settings = replace(settings, host=args.host or settings.host, port=args.port or settings.port)
    try:
        logs.configure(settings.log_format)
        app = create_app(settings)
    except (SchemaOutOfDate, ConfigError) as exc:
        print(f"descent api: {exc}", file=sys.stderr)
        return 2
    host, port = settings.host, settings.port
    auth = ("auth off: every request acts as the local admin (owner 'local')" if app.config["DESCENT_AUTH"] == "off"
            else "auth required: send Authorization: Bearer <token>")
    print(f"descent api listening on http://{host}:{port} (database {_safe_url(settings.database_url)}; {auth})",
          flush=True)
    # Threads for ordinary requests plus one for each request allowed to wait or stream (see
    # service/api/waiting.py); parked threads cost no CPU and little memory.
    threads = (args.threads or settings.api_threads) + settings.max_waiters
    app.extensions["descent"].admissions.start()
    serve(app, host=host, port=port, threads=threads, max_body_bytes=settings.limits.max_body_bytes)
    return 0


def worker_command(queues: str, loglevel: str = "INFO") -> list[str]:
    name = f"{queues.replace(',', '-')}-{os.getpid()}-{int(time.time() * 1000) % 100000}@%h"
    return [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", queues, "-n", name,
            "--pool", "solo", "--loglevel", loglevel, "--without-gossip", "--without-mingle"]


def cmd_worker(args: argparse.Namespace) -> int:
    os.environ["DESCENT_WORKER_QUEUES"] = args.queues
    if args.gpu is not None:  # before the worker starts: CUDA is first touched in that process
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
    cmd = worker_command(args.queues, args.loglevel)
    os.execvp(cmd[0], cmd)
    return 0  # not reached


def cmd_up(args: argparse.Namespace) -> int:
    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    cmd_db(argparse.Namespace(action="upgrade"))
    env = {**os.environ, "DESCENT_WORKER_QUEUES": "cpu"}
    workers = [subprocess.Popen(worker_command("cpu", "WARNING"), env=env, start_new_session=True)
               for _ in range(args.workers)]
    mode = "embedded (SQLite, SQL broker)" if settings.embedded_broker else "with broker " + _safe_url(settings.broker_url)
    print(f"descent up: {args.workers} cpu worker(s), {mode}; data in {settings.data_dir}", flush=True)

    def stop(*_: Any) -> None:
        for w in workers:
            if w.poll() is None:
                w.terminate()
        deadline = time.time() + 10
        for w in workers:
            try:
                w.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                w.kill()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        return cmd_api(argparse.Namespace(host=None, port=None, threads=None))
    finally:
        stop()

