"""The ``descent`` command: run the service's parts, and talk to a running API.

    descent up                 database upgrade, one worker and the API, together (embedded default)
    descent api                the HTTP API            descent worker --queues cpu   a Celery worker
    descent db upgrade         migrate the database    descent db current            show its revision
    descent tokens create --owner NAME [--admin]       descent tokens list           descent tokens revoke ID

Client commands (built on ``service.client``):

    descent submit SPEC.json [--wait] [-q]     submit a job (- reads stdin); print it, or its id alone
    descent status ID                          the job, as JSON
    descent wait ID [--timeout S] [--progress] wait until it finishes; exit 0 succeeded, 1 failed or cancelled
    descent cancel ID                          cancel a queued or running job
    descent history ID [--csv|--ndjson] [--fields f,x] [--every K] [--start N] [--limit N]
                                               the whole history (a JSON array, a row per line, by default)
    descent list [--status S] [--name N] [--tag k:v] [--stop-reason R] [--order asc|desc] [--limit N]
                                               a table of jobs (id, status, name, objective, optimizer, f, stop reason)
    descent objectives                         a table of the named objectives
    descent plot ID [--kind contour|loss] [-o FILE.png]                               save its picture
    descent sweep SWEEP.json [--wait] [-q]     submit a sweep ({base, grid, starts}) and print it

Client commands find the API at DESCENT_URL and send the token in DESCENT_TOKEN. On an error they
print one line on stderr and exit 1 (JSON answers also print the API's error object on stdout).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
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
# Built on service.client. stdout carries the answer (a job or sweep as JSON, a table, history
# text); on an error the API's error object goes to stdout too where the answer would be JSON,
# and one line to stderr says what went wrong; the exit status is then 1.
def _client():  # type: ignore[no-untyped-def]
    from service.client import Client

    return Client()


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _print_id_or_json(ident: str, value: Any, quiet: bool) -> None:
    if quiet:
        print(ident)
    else:
        _print_json(value)


class _UsageError(Exception):
    """A client command's own refusal (a file it cannot read): one line, exit status 2."""


def _read_spec(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _UsageError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None


def _show_progress(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "progress", False)) or sys.stderr.isatty()


def _job_exit(job: dict[str, Any], command: str) -> int:
    """0 for a succeeded job, 1 (with a line on stderr) for a failed or cancelled one, 124 for
    one still unfinished when the wait's --timeout passed."""
    status = job["status"]
    if status == "succeeded":
        return 0
    if status in ("failed", "cancelled"):
        why = f": {job['error']}" if job.get("error") else ""
        print(f"descent {command}: job {job['id']} {status}{why}", file=sys.stderr)
        return 1
    print(f"descent {command}: job {job['id']} still {status} after the --timeout", file=sys.stderr)
    return 124


def _waited(handle: Any, args: argparse.Namespace) -> dict[str, Any]:
    """``handle.wait()``; a failure names what was submitted, so the user can wait for it again."""
    from service.client import DescentClientError

    try:
        return handle.wait(timeout=args.timeout, progress=_show_progress(args))  # type: ignore[no-any-return]
    except DescentClientError as exc:
        exc.message = f"{handle.id} was submitted, but waiting for it failed: {exc.message}"
        raise


def cmd_submit(args: argparse.Namespace) -> int:
    job = _client().submit(_read_spec(args.spec), idempotency_key=args.idempotency_key)
    if args.wait:
        final = _waited(job, args)
        _print_id_or_json(job.id, final, args.quiet)
        return _job_exit(final, "submit")
    _print_id_or_json(job.id, job.json, args.quiet)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    sweep = _client().submit_sweep(_read_spec(args.spec), idempotency_key=args.idempotency_key)
    if args.wait:
        final = _waited(sweep, args)
        _print_id_or_json(sweep.id, final, args.quiet)
        counts = final["counts"]
        if counts.get("queued", 0) + counts.get("running", 0):
            print(f"descent sweep: sweep {sweep.id} still has unfinished jobs after the --timeout", file=sys.stderr)
            return 124
        failed = counts.get("failed", 0) + counts.get("cancelled", 0)
        if failed:
            print(f"descent sweep: {failed} of {final['jobs']} jobs of sweep {sweep.id} failed or were cancelled",
                  file=sys.stderr)
        return 1 if failed else 0
    _print_id_or_json(sweep.id, sweep.json, args.quiet)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    _print_json(_client().job(args.id).json)
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    from service.client import JobHandle

    job = JobHandle(_client(), args.id).wait(timeout=args.timeout, progress=_show_progress(args))
    _print_json(job)
    return _job_exit(job, "wait")


def cmd_cancel(args: argparse.Namespace) -> int:
    from service.client import JobHandle

    _print_json(JobHandle(_client(), args.id).cancel())
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    """Every row (from --start, every --every-th step, at most --limit), however many pages:
    CSV and NDJSON as the API writes them, JSON as one array with a row per line."""
    from service.client import JobHandle

    job = JobHandle(_client(), args.id)
    out = sys.stdout.buffer
    if args.csv or args.ndjson:
        for piece in job.export("csv" if args.csv else "ndjson", args.fields, args.every, args.start, args.limit):
            out.write(piece)
    else:
        lead = b"[\n"
        for page in job.history_pages(args.fields, args.every, args.start, args.limit):
            for row in page:
                out.write(lead + json.dumps(row).encode())
                lead = b",\n"
        out.write(b"[]\n" if lead == b"[\n" else b"\n]\n")
    out.flush()
    return 0


def _cell(value: Any, width: int) -> str:
    text = "-" if value is None or value == "" else (f"{value:.6g}" if isinstance(value, float) else str(value))
    return text if len(text) <= width else text[:width - 1] + "…"


def _table(columns: list[tuple[str, int]], rows: list[list[Any]]) -> None:
    """Rows under a header; the last column unpadded (and not cut)."""
    widths = [w for _, w in columns]
    print("  ".join(name.ljust(w) for name, w in columns).rstrip())
    for row in rows:
        cells = [_cell(v, w).ljust(w) for v, w in zip(row[:-1], widths)] + [_cell(row[-1], 10_000)]
        print("  ".join(cells).rstrip())


def _objective_name(spec: dict[str, Any]) -> Any:
    objective = spec.get("objective")
    return objective.get("name") if isinstance(objective, dict) else objective


def cmd_list(args: argparse.Namespace) -> int:
    filters = {"status": args.status, "name": args.name, "tag": args.tag, "order": args.order,
               "stop_reason": args.stop_reason}
    jobs = _client().jobs(limit=args.limit or None, **{k: v for k, v in filters.items() if v})
    rows = []
    for handle in jobs:
        job = handle.json
        spec, result = job.get("spec") or {}, job.get("result") or {}
        optimizer = spec.get("optimizer") or {}
        optimizer_text = f"{optimizer.get('name', 'sgd')} lr={optimizer['lr']:g}" if isinstance(
            optimizer.get("lr"), (int, float)) else optimizer.get("name", "sgd")
        rows.append([job["id"], job["status"], job.get("name"), _objective_name(spec), optimizer_text,
                     result.get("f"), result.get("stop_reason")])
    _table([("id", 36), ("status", 9), ("name", 16), ("objective", 28), ("optimizer", 18), ("final f", 12),
            ("stop reason", 11)], rows)
    return 0


def cmd_objectives(args: argparse.Namespace) -> int:
    rows = []
    for o in _client().objectives():
        known = [m["f"] for m in o.get("minima") or [] if isinstance(m.get("f"), (int, float))]
        rows.append([o["name"], o.get("formula"), json.dumps(o.get("default_start")), min(known, default=None)])
    _table([("name", 16), ("formula", 60), ("default start", 16), ("best known f", 12)], rows)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from service.client import JobHandle

    job = JobHandle(_client(), args.id)
    if args.output == "-":
        sys.stdout.buffer.write(job.plot(args.kind))  # type: ignore[arg-type]
        sys.stdout.buffer.flush()
        return 0
    path = Path(args.output or f"{args.id}-{args.kind}.png")
    png = job.plot(args.kind)
    try:
        path.write_bytes(png)  # type: ignore[arg-type]
    except OSError as exc:
        raise _UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    print(f"wrote {path} ({len(png):,} bytes)")
    return 0


# Client commands whose answer is JSON: on an API error they print its error object on stdout too.
_JSON_ANSWERS = {"submit", "sweep", "status", "wait", "cancel"}


def _run_client_command(args: argparse.Namespace) -> int:
    """A client command, with every failure as one line on stderr and a non-zero status."""
    from service.client import DescentClientError

    try:
        return int(args.fn(args) or 0)
    except DescentClientError as exc:
        if exc.body is not None and args.command in _JSON_ANSWERS:
            _print_json(exc.body)
        detail = f" (HTTP {exc.status} {exc.code})" if exc.status and exc.code else ""
        print(f"descent {args.command}: {exc.message}{detail}", file=sys.stderr)
        return 1
    except _UsageError as exc:
        print(f"descent {args.command}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        raise
    except Exception as exc:  # a bug here or in the API's answer: still one line, not a traceback
        print(f"descent {args.command}: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="descent", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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

    def waits(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("--timeout", type=float, help="give up waiting after this many seconds (exit 124); default none")
        p.add_argument("--progress", action="store_true", help=f"draw the {what} progress bar on stderr even when "
                       "it is not a terminal")

    for name, what in (("submit", "a job spec"), ("sweep", "a sweep: {base, grid, starts, ...}")):
        p = sub.add_parser(name, help=f"submit {what} (a JSON file, or - for stdin) and print it")
        p.add_argument("spec")
        p.add_argument("--wait", action="store_true", help="wait until it has finished; exit 0 only if it "
                       "succeeded (for a sweep: every job)")
        p.add_argument("-q", "--quiet", action="store_true", help="print the id alone")
        p.add_argument("--idempotency-key", help="resubmitting with the same key answers with the same "
                       "job or sweep (default: a new random key)")
        waits(p, "job's" if name == "submit" else "sweep's")
        p.set_defaults(fn=cmd_submit if name == "submit" else cmd_sweep)
    p = sub.add_parser("status", help="show a job (JSON)")
    p.add_argument("id")
    p.set_defaults(fn=cmd_status)
    p = sub.add_parser("wait", help="wait for a job to finish and show it; exit 0 if it succeeded, 1 if not")
    p.add_argument("id")
    waits(p, "job's")
    p.set_defaults(fn=cmd_wait)
    p = sub.add_parser("cancel", help="cancel a queued or running job and show it")
    p.add_argument("id")
    p.set_defaults(fn=cmd_cancel)
    p = sub.add_parser("history", help="print a job's whole history: a JSON array with a row per line "
                       "(default), --csv or --ndjson")
    p.add_argument("id")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true")
    fmt.add_argument("--ndjson", action="store_true")
    p.add_argument("--fields", help="comma-separated, among f,grad_norm,lr,x,grad (step always comes)")
    p.add_argument("--every", type=_positive, default=1, help="only the steps that are multiples of K")
    p.add_argument("--start", type=_natural, default=0, help="from this step on")
    p.add_argument("--limit", type=_positive, help="at most this many rows (default: all)")
    p.set_defaults(fn=cmd_history)
    p = sub.add_parser("list", help="a table of jobs: id, status, name, objective, optimizer, final f, stop reason")
    p.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    p.add_argument("--name", help="jobs of exactly this name")
    p.add_argument("--tag", help="key:value")
    p.add_argument("--stop-reason", help="why the run ended: steps, grad_norm, time_limit, diverged, cancelled, ...")
    p.add_argument("--order", choices=["asc", "desc"], help="by creation time (the API's default: asc)")
    p.add_argument("--limit", type=_natural, default=50, help="at most this many jobs (0: all; default 50)")
    p.set_defaults(fn=cmd_list)
    p = sub.add_parser("objectives", help="a table of the named objectives")
    p.set_defaults(fn=cmd_objectives)
    p = sub.add_parser("plot", help="save a job's picture as PNG")
    p.add_argument("id")
    p.add_argument("--kind", choices=["contour", "loss"], default="contour")
    p.add_argument("-o", "--output", help="the PNG file (- for stdout; default ID-KIND.png)")
    p.set_defaults(fn=cmd_plot)
    return parser


def _natural(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}")
    return value


def _positive(text: str) -> int:
    value = _natural(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


CLIENT_COMMANDS = {"submit", "sweep", "status", "wait", "cancel", "history", "list", "objectives", "plot"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        load_settings()  # a bad DESCENT_* value stops every command here, in one line
    except ConfigError as exc:
        print(f"descent: {exc}", file=sys.stderr)
        return 2
    if args.command not in CLIENT_COMMANDS:
        return int(args.fn(args) or 0)
    try:
        code = _run_client_command(args)
        sys.stdout.flush()  # here, so a reader that has gone away is caught below, not at exit
        return code
    except BrokenPipeError:
        # The reader of stdout has gone (descent history ID --csv | head): stop quietly. Python's
        # docs: point stdout at devnull so the flush at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
