"""The ``descent`` command: run the service's parts, and talk to a running API.

    descent up                 database upgrade, one worker and the API, together (embedded default)
    descent api                the HTTP API            descent worker --queues cpu   a Celery worker
    descent db upgrade         migrate the database    descent db current            show its revision
    descent tokens create --owner NAME [--admin]       descent tokens list           descent tokens revoke ID
    descent submit SPEC.json   descent status ID       descent wait ID               descent history ID --csv
    descent sweep SWEEP.json   submit a sweep ({base, grid, starts}) and print it

Client commands find the API at DESCENT_URL and send the token in DESCENT_TOKEN.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from service.config import ConfigError, load_settings


def _db():  # type: ignore[no-untyped-def]
    from service.store import Database

    return Database(load_settings().database_url)


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
    from service.store import NotFound
    from service.store import tokens

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


def cmd_api(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from waitress import serve

    from service.api import create_app
    from service.store.migrate import SchemaOutOfDate

    settings = load_settings()
    settings = replace(settings, host=args.host or settings.host, port=args.port or settings.port)
    try:
        app = create_app(settings)
    except (SchemaOutOfDate, ConfigError) as exc:
        print(f"descent api: {exc}", file=sys.stderr)
        return 2
    host, port = settings.host, settings.port
    auth = ("auth off: every request acts as the local admin (owner 'local')" if app.config["DESCENT_AUTH"] == "off"
            else "auth required: send Authorization: Bearer <token>")
    print(f"descent api listening on http://{host}:{port} (database {_safe_url(settings.database_url)}; {auth})",
          flush=True)
    # waitress refuses a body over the limit from its Content-Length, before buffering any of it
    # (it refuses a length >= its setting; Flask accepts exactly the limit).
    # Threads for ordinary requests plus one for each request allowed to wait or stream (see
    # service/api/waiting.py); parked threads cost no CPU and little memory. Connections beyond
    # the threads wait in waitress's queue rather than being refused.
    threads = (args.threads or settings.api_threads) + settings.max_waiters
    serve(app, host=host, port=port, threads=threads, connection_limit=threads + 256, asyncore_use_poll=True,
          ident="descent", _quiet=True, max_request_body_size=settings.limits.max_body_bytes + 1)
    return 0


def worker_command(queues: str, loglevel: str = "INFO") -> list[str]:
    name = f"{queues.replace(',', '-')}-{os.getpid()}-{int(time.time() * 1000) % 100000}@%h"
    return [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", queues, "-n", name,
            "--pool", "solo", "--loglevel", loglevel, "--without-gossip", "--without-mingle"]


def cmd_worker(args: argparse.Namespace) -> int:
    os.environ["DESCENT_WORKER_QUEUES"] = args.queues
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


# -- client commands -----------------------------------------------------------------------
def _url(path: str) -> str:
    return load_settings().api_url.rstrip("/") + path


def _headers(**extra: str) -> dict[str, str]:
    """Headers of every client request: the token from DESCENT_TOKEN, when set."""
    token = load_settings().token
    return {**({"Authorization": f"Bearer {token}"} if token else {}), **extra}


def _show(resp: Any) -> int:
    try:
        body = resp.json()
    except ValueError:
        print(resp.text)
        return 1
    print(json.dumps(body, indent=2))
    return 0 if resp.ok else 1


def cmd_submit(args: argparse.Namespace) -> int:
    import requests

    text = sys.stdin.read() if args.spec == "-" else open(args.spec, encoding="utf-8").read()
    headers = _headers(**{"Content-Type": "application/json"})
    if args.idempotency_key:
        headers["Idempotency-Key"] = args.idempotency_key
    return _show(requests.post(_url("/v1/jobs"), data=text.encode(), headers=headers, timeout=30))


def cmd_sweep(args: argparse.Namespace) -> int:
    import requests

    text = sys.stdin.read() if args.spec == "-" else open(args.spec, encoding="utf-8").read()
    headers = _headers(**{"Content-Type": "application/json"})
    return _show(requests.post(_url("/v1/sweeps"), data=text.encode(), headers=headers, timeout=600))


def cmd_status(args: argparse.Namespace) -> int:
    import requests

    return _show(requests.get(_url(f"/v1/jobs/{args.id}"), headers=_headers(), timeout=30))


def cmd_wait(args: argparse.Namespace) -> int:
    import requests

    from service.store.status import JobStatus

    deadline = time.time() + args.timeout
    while True:
        left = max(0.0, min(30.0, deadline - time.time()))
        resp = requests.get(_url(f"/v1/jobs/{args.id}"), params={"wait": f"{left:.3f}"}, headers=_headers(),
                            timeout=left + 30)
        status = JobStatus(resp.json()["status"]) if resp.ok else None
        if status is None or status.is_finished or time.time() >= deadline:
            code = _show(resp)
            return code if status is None else (0 if status == JobStatus.SUCCEEDED else 1)
        if "Retry-After" in resp.headers:  # the API did not wait (it serves its most waiters): pause
            pause = float(resp.headers["Retry-After"]) if resp.headers["Retry-After"].isdigit() else 2.0
            time.sleep(min(pause, max(0.0, deadline - time.time())))


def cmd_history(args: argparse.Namespace) -> int:
    import requests

    fmt = "csv" if args.csv else ("ndjson" if args.ndjson else "json")
    params: dict[str, Any] = {"format": fmt, "start": args.start, "every": args.every}
    if args.limit:
        params["limit"] = args.limit
    with requests.get(_url(f"/v1/jobs/{args.id}/history"), params=params, headers=_headers(), stream=True,
                      timeout=300) as resp:
        if not resp.ok:
            return _show(resp)
        out = sys.stdout.buffer  # the API's bytes as they come (NDJSON is sent without a charset)
        for piece in resp.iter_content(chunk_size=65536):
            out.write(piece)
        out.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="descent", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("up", help="upgrade the database, start workers and the API")
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(fn=cmd_up)
    p = sub.add_parser("api", help="run the HTTP API")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--threads", type=int, help="threads for ordinary requests (default DESCENT_API_THREADS)")
    p.set_defaults(fn=cmd_api)
    p = sub.add_parser("worker", help="run a Celery worker")
    p.add_argument("--queues", default="cpu", help="comma-separated: cpu, gpu")
    p.add_argument("--loglevel", default="INFO")
    p.set_defaults(fn=cmd_worker)
    p = sub.add_parser("db", help="database migrations")
    p.add_argument("action", choices=["upgrade", "current"])
    p.set_defaults(fn=cmd_db)
    p = sub.add_parser("tokens", help="create, list or revoke API tokens (on the database directly)")
    p.add_argument("action", choices=["create", "list", "revoke"])
    p.add_argument("id", nargs="?", help="the token to revoke")
    p.add_argument("--owner", help="the owner the new token acts for")
    p.add_argument("--admin", action="store_true", help="the new token sees and may do everything")
    p.set_defaults(fn=cmd_tokens)
    p = sub.add_parser("submit", help="submit a job spec (a JSON file, or - for stdin)")
    p.add_argument("spec")
    p.add_argument("--idempotency-key")
    p.set_defaults(fn=cmd_submit)
    p = sub.add_parser("sweep", help="submit a sweep: {base, grid, starts, ...} (a JSON file, or - for stdin)")
    p.add_argument("spec")
    p.set_defaults(fn=cmd_sweep)
    p = sub.add_parser("status", help="show a job")
    p.add_argument("id")
    p.set_defaults(fn=cmd_status)
    p = sub.add_parser("wait", help="wait for a job to finish and show it")
    p.add_argument("id")
    p.add_argument("--timeout", type=float, default=3600)
    p.set_defaults(fn=cmd_wait)
    p = sub.add_parser("history", help="print a job's history")
    p.add_argument("id")
    p.add_argument("--csv", action="store_true")
    p.add_argument("--ndjson", action="store_true")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--limit", type=int)
    p.add_argument("--every", type=int, default=1)
    p.set_defaults(fn=cmd_history)
    args = parser.parse_args(argv)
    try:
        load_settings()  # a bad DESCENT_* value stops every command here, in one line
    except ConfigError as exc:
        print(f"descent: {exc}", file=sys.stderr)
        return 2
    return int(args.fn(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
