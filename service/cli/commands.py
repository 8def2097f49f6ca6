"""The ``descent`` client commands, built on ``service.client``: submit, sweep, status, wait,
cancel, delete, history, list, objectives, workers and plot.

stdout carries the answer (a job or sweep as JSON, a table, history text); on an error the API's
error object goes to stdout too where the answer would be JSON, and one line to stderr says what
went wrong; the exit status is then 1."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from service.cli.output import job_summary, print_id_or_json, print_json, print_table
from service.client.status import FINISHED, UNFINISHED, Status, outcome

NAMES = {"submit", "sweep", "status", "wait", "cancel", "delete", "history", "list", "objectives", "workers", "plot", "x"}
# Client commands whose answer is JSON (status and wait: with --json): on an API error they print its
# error object on stdout too.
_JSON_ANSWERS = {"submit", "sweep", "status", "wait", "cancel"}


def _client():  # type: ignore[no-untyped-def]
    from service.client import Client

    return Client()


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
    if status == Status.SUCCEEDED:
        return 0
    if status in FINISHED:
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
        print_id_or_json(job.id, final, args.quiet)
        return _job_exit(final, "submit")
    print_id_or_json(job.id, job.json, args.quiet)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    sweep = _client().submit_sweep(_read_spec(args.spec), idempotency_key=args.idempotency_key)
    if args.wait:
        final = _waited(sweep, args)
        print_id_or_json(sweep.id, final, args.quiet)
        counts = final["counts"]
        if sum(counts.get(status, 0) for status in UNFINISHED):
            print(f"descent sweep: sweep {sweep.id} still has unfinished jobs after the --timeout", file=sys.stderr)
            return 124
        failed = sum(counts.get(status, 0) for status in FINISHED if status != Status.SUCCEEDED)
        if failed:
            print(f"descent sweep: {failed} of {final['jobs']} jobs of sweep {sweep.id} failed or were cancelled",
                  file=sys.stderr)
        return 1 if failed else 0
    print_id_or_json(sweep.id, sweep.json, args.quiet)
    return 0


def _print_job(job: dict[str, Any], as_json: bool) -> None:
    """The whole job as JSON (``--json``), or its summary in at most three lines."""
    if as_json:
        print_json(job)
    else:
        print("\n".join(job_summary(job)))


def cmd_status(args: argparse.Namespace) -> int:
    _print_job(_client().job(args.id).json, args.json)
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    from service.client import JobHandle

    job = JobHandle(_client(), args.id).wait(timeout=args.timeout, progress=_show_progress(args))
    _print_job(job, args.json)
    return _job_exit(job, "wait")


def cmd_cancel(args: argparse.Namespace) -> int:
    from service.client import JobHandle

    print_json(JobHandle(_client(), args.id).cancel())
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    """Delete a job (or, with --sweep, a sweep and its jobs); one line says what went."""
    from service.client import JobHandle, SweepHandle

    handle = SweepHandle(_client(), args.id) if args.sweep else JobHandle(_client(), args.id)
    answer = handle.delete()
    removed = answer.get("removed") or {}
    what = f"sweep {args.id} and its {_count(removed.get('jobs', 0), 'job')}" if args.sweep else f"job {args.id}"
    print(f"deleted {what}: {_count(removed.get('history_rows', 0), 'history row')}, "
          f"{_count(removed.get('data_tensors', 0), 'data tensor')} no other job of yours reads")
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def cmd_history(args: argparse.Namespace) -> int:
    """Every row (from --start, every --every-th step, at most --limit), as one streamed download
    (taken up again after a break): CSV and NDJSON as the API writes them, passed straight
    through; JSON (the default) as one array with a row per line, made from the CSV a block of
    rows at a time, the rows the API's JSON pages hold."""
    from service.client import JobHandle
    from service.client.columns import gc_paused, rows

    job = JobHandle(_client(), args.id)
    out = sys.stdout.buffer
    if args.csv or args.ndjson:
        for piece in job.export("csv" if args.csv else "ndjson", args.fields, args.every, args.start, args.limit):
            out.write(piece)
    else:
        lead = "[\n"
        with gc_paused():
            for layout, block, dims in job.history_blocks(args.fields, args.every, args.start, args.limit):
                if not len(block):
                    continue
                # one json.dumps of the block's rows (the C encoder), a row per line: no row holds "}, {"
                text = json.dumps(rows(layout, block, dims, json_strings=True))
                out.write((lead + text[1:-1].replace("}, {", "},\n{")).encode())
                lead = ",\n"
        out.write(b"[]\n" if lead == "[\n" else b"\n]\n")
    out.flush()
    return 0


def _objective_name(spec: dict[str, Any]) -> Any:
    objective = spec.get("objective")
    return objective.get("name") if isinstance(objective, dict) else objective


# ``descent list`` counts the jobs past the ones it shows up to this many (a page of the API each 1,000).
COUNT_MORE = 5000


def _pages(client: Any, params: dict[str, Any], cursor: str | None, limit: int | None) -> Any:
    """Pages of GET /v1/jobs from ``cursor``: (jobs, next cursor), until ``limit`` jobs (None: all)."""
    given = 0
    while limit is None or given < limit:
        size = 1000 if limit is None else min(1000, limit - given)
        page = client.get_json("/v1/jobs", **params, limit=size, cursor=cursor)
        given += len(page["jobs"])
        cursor = page.get("next_cursor")
        yield page["jobs"], cursor
        if not cursor or not page["jobs"]:
            return


def cmd_list(args: argparse.Namespace) -> int:
    """A table of jobs, newest first by default; when more match than it shows, a last line says
    how many (counted up to COUNT_MORE) and the cursor that shows them."""
    filters = {"status": args.status, "name": args.name, "tag": args.tag, "order": args.order,
               "stop_reason": args.stop_reason}
    params = {k: v for k, v in filters.items() if v}
    client = _client()
    listed: list[dict[str, Any]] = []
    cursor = args.cursor
    for jobs, cursor in _pages(client, params, cursor, args.limit or None):
        listed += jobs
    more = 0
    if cursor:
        for jobs, _ in _pages(client, params, cursor, COUNT_MORE + 1):
            more += len(jobs)
    _print_jobs(listed)
    if more:
        counted = f"{COUNT_MORE:,}+" if more > COUNT_MORE else f"{more:,}"
        print(f"… {counted} more (descent list --cursor {cursor}, with the same filters)")
    return 0


def _print_jobs(jobs: list[dict[str, Any]]) -> None:
    rows = []
    for job in jobs:
        spec, result = job.get("spec") or {}, job.get("result") or {}
        optimizer = spec.get("optimizer") or {}
        optimizer_text = f"{optimizer.get('name', 'sgd')} lr={optimizer['lr']:g}" if isinstance(
            optimizer.get("lr"), (int, float)) else optimizer.get("name", "sgd")
        rows.append([job["id"], outcome(job), job.get("name"), _objective_name(spec), optimizer_text,
                     result.get("f"), result.get("stop_reason")])
    print_table([("id", 36), ("status", 9), ("name", 16), ("objective", 28), ("optimizer", 18), ("final f", 12),
                 ("stop reason", 11)], rows)


def cmd_objectives(args: argparse.Namespace) -> int:
    rows = []
    for o in _client().objectives():
        known = [m["f"] for m in o.get("minima") or [] if isinstance(m.get("f"), (int, float))]
        rows.append([o["name"], o.get("formula"), json.dumps(o.get("default_start")), min(known, default=None)])
    print_table([("name", 16), ("formula", 60), ("default start", 16), ("best known f", 12)], rows)
    return 0


def cmd_workers(args: argparse.Namespace) -> int:
    workers = _client().workers()
    if args.json:
        print_json({"workers": workers})
        return 0
    rows = []
    for w in workers:
        since = w.get("lost_since") or w.get("stopped_at")
        state = f"{w['state']} since {_second(since)}" if w["state"] != "alive" and since else w["state"]
        device = w["device_name"] or w["device"]
        if w.get("cuda_memory"):
            device = f"{device} ({w['cuda_memory'] / 2**30:.0f} GiB)"
        versions = w.get("versions") or {}
        rows.append([w["id"], w["host"], w["pid"], ",".join(w["queues"]), device,
                     " ".join(f"{k} {versions[k]}" for k in ("descent", "torch") if k in versions),
                     _second(w["started_at"]), _second(w["last_heartbeat"]), w["current_job"], w["jobs_done"], state])
    # The id is never cut: it is the string a job's `worker` field holds, to be matched.
    id_width = max([2] + [len(str(w["id"])) for w in workers])
    print_table([("id", id_width), ("host", 16), ("pid", 7), ("queues", 7), ("device", 24), ("versions", 32),
                 ("started", 20), ("last heartbeat", 20), ("current job", 36), ("done", 6), ("state", 10)], rows)
    return 0


def _second(when: str | None) -> str | None:
    """An ISO time from the API (UTC) to the second, for a table."""
    return f"{when[:19]}Z" if when else None


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


def cmd_tensor(args: argparse.Namespace) -> int:
    """``descent x``: the job's tensor as the API's .npy file, written as it came."""
    client = _client()
    npy = client.request("GET", f"/v1/jobs/{args.id}/{args.tensor}", params={"format": "npy"},
                         timeout=max(client.timeout, 120.0)).content
    if args.output == "-":
        sys.stdout.buffer.write(npy)
        sys.stdout.buffer.flush()
        return 0
    path = Path(args.output or f"{args.id}-{args.tensor}.npy")
    try:
        path.write_bytes(npy)
    except OSError as exc:
        raise _UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    print(f"wrote {path} ({len(npy):,} bytes)")
    return 0


def _said(exc: Any, detail: str) -> str:
    """A client error's one line: for a submit that may have made its job unseen, the key to send
    it again with (``--idempotency-key``), so that a second try makes no second job."""
    from service.client.errors import key_note, with_note

    if not getattr(exc, "unsure", False):
        return f"{exc.message}{detail}"
    key = exc.idempotency_key
    return with_note(f"{exc.detail}{detail}", key_note(key, f"--idempotency-key {key}"))


def run(args: argparse.Namespace) -> int:
    """A client command, with every failure as one line on stderr and a non-zero status."""
    from service.client import DescentClientError

    try:
        return int(args.fn(args) or 0)
    except DescentClientError as exc:
        if exc.body is not None and args.command in _JSON_ANSWERS and getattr(args, "json", True):
            print_json(exc.body)
        detail = f" (HTTP {exc.status} {exc.code})" if exc.status and exc.code else ""
        print(f"descent {args.command}: {_said(exc, detail)}", file=sys.stderr)
        return 1
    except _UsageError as exc:
        print(f"descent {args.command}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        raise
    except Exception as exc:  # a bug here or in the API's answer: still one line, not a traceback
        print(f"descent {args.command}: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
