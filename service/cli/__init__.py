"""The ``descent`` command: run the service's parts (``service.cli.server``) and talk to a running
API (``service.cli.commands``, built on ``service.client``); ``USAGE`` is what ``descent --help``
shows of them, with how client commands find the API and behave when it fails.
"""
from __future__ import annotations

import argparse
import os
import sys

from service.cli import commands, server
from service.client.status import ENDINGS, Status
from service.config import ConfigError, load_settings

USAGE = """\
    descent up                 database upgrade, one worker and the API, together (embedded default)
    descent api                the HTTP API            descent worker --queues cpu   a Celery worker
                                                       descent worker --queues gpu --gpu 1   pinned to GPU 1
    descent db upgrade         migrate the database    descent db current            show its revision
    descent tokens create --owner NAME [--admin]       descent tokens list           descent tokens revoke ID
    descent gc [--dry-run] [--history-seconds S] [--job-seconds S]
                               the retention clean-up, now (on the database directly, as the workers run it)

Client commands:

    descent submit SPEC.json [--wait] [-q] [--idempotency-key KEY]
                                               submit a job (- reads stdin); print it, or its id alone
    descent status ID [--json]                 the job in at most 3 lines (outcome, steps, f, x); --json: all of it
    descent wait ID [--timeout S] [--progress] [--json]
                                               wait until it finishes, then as status; exit 0 succeeded, 1 failed
                                               or cancelled
    descent cancel ID                          cancel a queued or running job
    descent delete ID [--sweep]                delete a job (or a sweep and its jobs): history, checkpoint, data
    descent history ID [--csv|--ndjson] [--fields f,x] [--every K] [--start N] [--limit N]
                                               the whole history (a JSON array, a row per line, by default)
    descent list [--status S] [--name N] [--tag k:v] [--stop-reason R] [--order desc|asc] [--limit N] [--cursor C]
                                               a table of jobs, newest first (id, status, name, objective, optimizer,
                                               f, stop reason), then how many more there are
    descent objectives                         a table of the named objectives
    descent workers [--json]                   a table of the fleet: alive, lost or stopped, current job (admins)
    descent plot ID [--kind contour|loss] [-o FILE.png]                               save its picture
    descent x ID [--tensor x|grad|x0] [-o FILE.npy]   save its final x (or grad, or x0) as .npy, bit for bit
    descent sweep SWEEP.json [--wait] [-q] [--idempotency-key KEY]
                                               submit a sweep ({base, grid, starts}) and print it

Client commands find the API at DESCENT_URL and send the token in DESCENT_TOKEN. While the API
cannot be reached (a restart) they try reads and submits again for DESCENT_RETRY_SECONDS (30) in
all. On an error they print one line on stderr and exit 1 (JSON answers also print the API's error
object on stdout); for a submit that got no answer the line names its Idempotency-Key: submit again
with --idempotency-key KEY to get the job it may have made, never a second one.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="descent", description=USAGE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("up", help="upgrade the database, start workers and the API")
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(fn=server.cmd_up)
    p = sub.add_parser("api", help="run the HTTP API")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--threads", type=int, help="threads for ordinary requests (default DESCENT_API_THREADS)")
    p.set_defaults(fn=server.cmd_api)
    p = sub.add_parser("worker", help="run a Celery worker")
    p.add_argument("--queues", default="cpu", help="comma-separated: cpu, gpu")
    p.add_argument("--loglevel", default="INFO")
    p.add_argument("--gpu", type=_natural, metavar="INDEX",
                   help="pin this worker to one GPU (sets CUDA_VISIBLE_DEVICES=INDEX)")
    p.set_defaults(fn=server.cmd_worker)
    p = sub.add_parser("db", help="database migrations")
    p.add_argument("action", choices=["upgrade", "current"])
    p.set_defaults(fn=server.cmd_db)
    p = sub.add_parser("tokens", help="create, list or revoke API tokens (on the database directly)")
    p.add_argument("action", choices=["create", "list", "revoke"])
    p.add_argument("id", nargs="?", help="the token to revoke")
    p.add_argument("--owner", help="the owner the new token acts for")
    p.add_argument("--admin", action="store_true", help="the new token sees and may do everything")
    p.set_defaults(fn=server.cmd_tokens)
    p = sub.add_parser("gc", help="run the retention clean-up now, on the database directly (as the workers "
                       "do): delete expired finished jobs, drop expired histories")
    p.add_argument("--dry-run", action="store_true", help="print what would go, and change nothing")
    p.add_argument("--history-seconds", type=_seconds, metavar="S",
                   help="drop the histories of jobs finished more than S seconds ago "
                        "(default DESCENT_HISTORY_RETENTION_SECONDS)")
    p.add_argument("--job-seconds", type=_seconds, metavar="S",
                   help="delete the jobs finished more than S seconds ago (default DESCENT_JOB_RETENTION_SECONDS)")
    p.set_defaults(fn=server.cmd_gc)

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
        p.add_argument("--idempotency-key", metavar="KEY", help="resubmitting with the same key answers with "
                       "the same job or sweep (default: a new random key, named in the error when the "
                       "API gives no answer)")
        waits(p, "job's" if name == "submit" else "sweep's")
        p.set_defaults(fn=commands.cmd_submit if name == "submit" else commands.cmd_sweep)
    p = sub.add_parser("status", help="show a job: its outcome, steps, final f and x (--json: the whole job)")
    p.add_argument("id")
    p.add_argument("--json", action="store_true", help="the whole job as the API answers it, as JSON")
    p.set_defaults(fn=commands.cmd_status)
    p = sub.add_parser("wait", help="wait for a job to finish and show it; exit 0 if it succeeded, 1 if not")
    p.add_argument("id")
    p.add_argument("--json", action="store_true", help="the whole job as the API answers it, as JSON")
    waits(p, "job's")
    p.set_defaults(fn=commands.cmd_wait)
    p = sub.add_parser("cancel", help="cancel a queued or running job and show it")
    p.add_argument("id")
    p.set_defaults(fn=commands.cmd_cancel)
    p = sub.add_parser("delete", help="delete a job: its history, tags, checkpoint and data (a queued or "
                       "running job is cancelled first)")
    p.add_argument("id")
    p.add_argument("--sweep", action="store_true", help="ID is a sweep's: delete it and every job of it")
    p.set_defaults(fn=commands.cmd_delete)
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
    p.set_defaults(fn=commands.cmd_history)
    p = sub.add_parser("list", help="a table of jobs: id, status, name, objective, optimizer, final f, stop reason")
    p.add_argument("--status", choices=[status.value for status in Status])
    p.add_argument("--name", help="jobs of exactly this name")
    p.add_argument("--tag", help="key:value")
    p.add_argument("--stop-reason", help="why the run ended: " + ", ".join(ENDINGS))
    p.add_argument("--order", choices=["asc", "desc"], default="desc",
                   help="by creation time: desc, newest first (the default), or asc")
    p.add_argument("--limit", type=_natural, default=50, help="at most this many jobs (0: all; default 50)")
    p.add_argument("--cursor", help="go on from where a listing stopped (the cursor its last line names)")
    p.set_defaults(fn=commands.cmd_list)
    p = sub.add_parser("objectives", help="a table of the named objectives")
    p.set_defaults(fn=commands.cmd_objectives)
    p = sub.add_parser("workers", help="a table of the fleet's workers: alive, lost or stopped, current job (admins)")
    p.add_argument("--json", action="store_true", help="the API's answer, as JSON")
    p.set_defaults(fn=commands.cmd_workers)
    p = sub.add_parser("plot", help="save a job's picture as PNG")
    p.add_argument("id")
    p.add_argument("--kind", choices=["contour", "loss"], default="contour")
    p.add_argument("-o", "--output", help="the PNG file (- for stdout; default ID-KIND.png)")
    p.set_defaults(fn=commands.cmd_plot)
    p = sub.add_parser("x", help="save a job's final x (or grad, or x0) as .npy")
    p.add_argument("id")
    p.add_argument("--tensor", choices=["x", "grad", "x0"], default="x")
    p.add_argument("-o", "--output", help="the .npy file (- for stdout; default ID-TENSOR.npy)")
    p.set_defaults(fn=commands.cmd_tensor)
    return parser


def _natural(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text!r}")
    return value


def _positive(text: str) -> int:
    value = _natural(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        load_settings()  # a bad DESCENT_* value stops every command here, in one line
    except ConfigError as exc:
        print(f"descent: {exc}", file=sys.stderr)
        return 2
    if args.command not in commands.NAMES:
        return int(args.fn(args) or 0)
    try:
        code = commands.run(args)
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

