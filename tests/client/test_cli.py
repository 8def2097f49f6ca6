"""The ``descent`` client commands as a user runs them: real processes, DESCENT_URL pointing at a
running service. The argument-parsing tests at the end need no server."""
from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from service.cli import build_parser
from testkit.processes import BIN, Service, free_port
from tests.conftest import shared

integration = pytest.mark.integration
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
LONG = {"objective": "10 * (x ** 2).sum()", "x0": [8, 8], "steps": 2500, "optimizer": {"name": "sgd", "lr": 0.0001}}
ENDLESS = {**LONG, "steps": 1_000_000, "optimizer": {"name": "sgd", "lr": 1e-9}}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def service(embedded_service: Service) -> Iterator[Service]:
    """The embedded service (API + one CPU worker) this test process shares (tests/conftest.py)."""
    yield from shared(embedded_service)


def env_for(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DESCENT_TOKEN", "DESCENT_RETRY_SECONDS")}
    return {**env, "DESCENT_URL": url, **extra}


def descent(url: str, *args: str, stdin: str | None = None,
            **extra: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    return subprocess.run([str(BIN / "descent"), *args], env=env_for(url, **extra), input=stdin, capture_output=True,
                          text=True, timeout=180)


def spec_file(tmp_path: Path, spec: dict, name: str = "spec.json") -> str:  # type: ignore[type-arg]
    path = tmp_path / name
    path.write_text(json.dumps(spec))
    return str(path)


def one_clean_line(stderr: str) -> str:
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture(scope="module")
def long_id(service: Service, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A finished job of 2,500 steps (2,501 history rows), submitted and waited for by the CLI."""
    out = descent(service.url, "submit", spec_file(tmp_path_factory.mktemp("long"), LONG), "--wait", "-q")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@integration
def test_submit_quiet_prints_the_id_alone(service, tmp_path):
    out = descent(service.url, "submit", spec_file(tmp_path, {**LONG, "steps": 10}), "-q")
    assert out.returncode == 0 and UUID.fullmatch(out.stdout.strip()), out
    from_stdin = descent(service.url, "submit", "-", stdin=json.dumps({**LONG, "steps": 10}))
    assert from_stdin.returncode == 0 and json.loads(from_stdin.stdout)["status"] in ("queued", "running")


@integration
def test_submit_wait_exits_0_and_prints_the_finished_job(service, tmp_path):
    out = descent(service.url, "submit", spec_file(tmp_path, {**LONG, "steps": 100}), "--wait")
    assert out.returncode == 0, out.stderr
    job = json.loads(out.stdout)
    assert job["status"] == "succeeded" and job["result"]["steps"] == 100
    assert out.stderr == ""  # no bar: stderr is not a terminal and --progress was not given
    status = descent(service.url, "status", job["id"], "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["id"] == job["id"]


@integration
def test_wait_and_status_print_a_summary_of_at_most_three_lines(service, tmp_path):
    lesson = {"objective": "torch.log(torch.log(w + 7)).prod()", "variable": "w", "x0": [[5, 10], [1, 2]],
              "steps": 500, "optimizer": {"name": "sgd", "lr": 0.001}, "name": "lesson 3"}
    job_id = descent(service.url, "submit", spec_file(tmp_path, lesson), "-q").stdout.strip()
    out = descent(service.url, "wait", job_id)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2, out.stdout
    assert lines[0].startswith(f"{job_id}  succeeded  'lesson 3'  stop: steps  steps: 500/500  f: ")
    assert lines[1] == "x: [[4.9900, 9.9948], [0.9775, 1.9825]]"  # the lesson's answer, to 4 places
    assert descent(service.url, "status", job_id).stdout == out.stdout
    whole = json.loads(descent(service.url, "wait", job_id, "--json").stdout)
    assert whole["id"] == job_id and whole["result"]["steps"] == 500 and "spec" in whole
    gradient = descent(service.url, "submit", spec_file(tmp_path, {**lesson, "steps": 0, "name": "lesson 2"}), "-q")
    out = descent(service.url, "wait", gradient.stdout.strip())
    assert out.stdout.splitlines()[1] == "grad: [[0.0201, 0.0109], [0.0449, 0.0351]]", out.stdout
    diverged = {"objective": "10 * (x ** 2).sum()", "x0": [8, 8], "steps": 50, "optimizer": {"name": "sgd", "lr": 1.0}}
    out = descent(service.url, "wait", descent(service.url, "submit", spec_file(tmp_path, diverged), "-q").stdout.strip())
    head = out.stdout.splitlines()[0]
    assert "  diverged  " in head and "succeeded" not in head and "f: Infinity" in head, out.stdout
    missing = descent(service.url, "status", "no-such-job")
    assert missing.returncode == 1 and missing.stdout == "" and "404" in one_clean_line(missing.stderr)


@integration
def test_wait_with_progress_draws_the_bar_on_stderr(service, long_id):
    out = descent(service.url, "wait", long_id, "--progress", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["status"] == "succeeded"
    assert "2500/2500" in out.stderr.split("\r")[-1] and "Traceback" not in out.stderr


@integration
def test_wait_exits_non_zero_for_a_cancelled_job(service, tmp_path):
    job_id = descent(service.url, "submit", spec_file(tmp_path, ENDLESS), "-q").stdout.strip()
    service.wait_status(job_id, "running")
    cancelled = descent(service.url, "cancel", job_id)
    assert cancelled.returncode == 0 and json.loads(cancelled.stdout)["cancel_requested"] is True
    out = descent(service.url, "wait", job_id)
    assert out.returncode == 1 and out.stdout.startswith(f"{job_id}  cancelled")
    assert "cancelled" in one_clean_line(out.stderr)
    again = descent(service.url, "cancel", job_id)  # a finished job: 409
    assert again.returncode == 1 and "409" in one_clean_line(again.stderr)


@integration
def test_wait_timeout_exits_124_with_the_job_unfinished(service, tmp_path):
    job_id = descent(service.url, "submit", spec_file(tmp_path, ENDLESS), "-q").stdout.strip()
    out = descent(service.url, "wait", job_id, "--timeout", "1", "--json")
    assert out.returncode == 124 and json.loads(out.stdout)["status"] in ("queued", "running")
    assert "still" in one_clean_line(out.stderr)
    descent(service.url, "cancel", job_id)


@integration
def test_history_csv_has_every_row_past_1000(service, long_id):
    out = descent(service.url, "history", long_id, "--csv")
    assert out.returncode == 0, out.stderr
    table = list(csv.reader(io.StringIO(out.stdout)))
    assert table[0] == ["step", "f", "grad_norm", "lr", "x_0", "x_1"] and len(table) == 2500 + 2
    assert [int(r[0]) for r in table[1:]] == list(range(2501))
    api = service.http.get(f"{service.url}/v1/jobs/{long_id}/history", params={"format": "csv"}).text
    assert out.stdout == api  # the API's own CSV, byte for byte
    every = descent(service.url, "history", long_id, "--csv", "--every", "100", "--fields", "f").stdout.splitlines()
    assert every[0] == "step,f" and [int(line.split(",")[0]) for line in every[1:]] == list(range(0, 2501, 100))


@integration
def test_history_json_and_ndjson_have_every_row(service, long_id):
    out = descent(service.url, "history", long_id)
    rows = json.loads(out.stdout)
    assert out.returncode == 0 and [r["step"] for r in rows] == list(range(2501))
    assert len(out.stdout.splitlines()) == 2501 + 2  # [, a row per line, ]
    ndjson = descent(service.url, "history", long_id, "--ndjson", "--start", "100", "--limit", "1500")
    assert [json.loads(line)["step"] for line in ndjson.stdout.splitlines()] == list(range(100, 1600))


@integration
def test_list_and_objectives_print_tables(service, long_id):
    out = descent(service.url, "list", "--limit", "0")
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split() == ["id", "status", "name", "objective", "optimizer", "final", "f", "stop", "reason"]
    mine = [r for r in rows if r.startswith(long_id)]
    assert len(mine) == 1 and "succeeded" in mine[0] and "sgd lr=0.0001" in mine[0]
    assert mine[0].rstrip().endswith("steps")
    done = descent(service.url, "list", "--status", "succeeded", "--limit", "1")
    assert len(done.stdout.splitlines()) == 3 and "succeeded" in done.stdout.splitlines()[1]
    assert re.fullmatch(r"… [\d,]+ more \(descent list --cursor \S+, with the same filters\)", done.stdout.splitlines()[2])
    objectives = descent(service.url, "objectives")
    assert objectives.returncode == 0 and objectives.stdout.split()[:2] == ["name", "formula"]
    assert any(line.startswith("rosenbrock ") for line in objectives.stdout.splitlines())


@integration
def test_list_of_61_jobs_shows_the_50_newest_and_says_how_many_more(service):
    name = f"sixty-one-{os.getpid()}-{free_port()}"
    ids = [service.submit({**LONG, "steps": 1, "name": name})["id"] for _ in range(61)]
    out = descent(service.url, "list", "--name", name)
    assert out.returncode == 0, out.stderr
    header, *rows, last = out.stdout.splitlines()
    assert [r.split()[0] for r in rows] == ids[::-1][:50]  # the newest first
    found = re.fullmatch(r"… 11 more \(descent list --cursor (\S+), with the same filters\)", last)
    assert found, last
    rest = descent(service.url, "list", "--name", name, "--cursor", found.group(1)).stdout.splitlines()[1:]
    assert [r.split()[0] for r in rest] == ids[::-1][50:]  # the other 11, and no line saying more
    every = descent(service.url, "list", "--name", name, "--limit", "0").stdout.splitlines()[1:]
    assert len(every) == 61 and "more" not in every[-1]


@integration
def test_workers_prints_every_field_and_the_whole_id(service, long_id):
    job = json.loads(descent(service.url, "status", long_id, "--json").stdout)
    table = descent(service.url, "workers")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["id", "host", "pid", "queues", "device", "versions", "started", "last", "heartbeat",
                              "current", "job", "done", "state"]
    listed = json.loads(descent(service.url, "workers", "--json").stdout)["workers"]
    ran = [w for w in listed if w["id"] == job["worker"]]
    assert len(ran) == 1 and ran[0]["state"] == "alive" and ran[0]["jobs_done"] >= 1
    line = next(r for r in rows if r.split()[0] == job["worker"])  # the id as a job names it, never cut
    assert line.split()[1:3] == [ran[0]["host"], str(ran[0]["pid"])]
    assert f"descent {ran[0]['versions']['descent']}" in line and f"torch {ran[0]['versions']['torch']}" in line
    assert f"{ran[0]['started_at'][:19]}Z" in line and line.rstrip().endswith("alive")


@integration
def test_list_filters_by_name_and_orders_newest_first(service, tmp_path):
    name = f"cli-{os.getpid()}-{free_port()}"
    ids = [descent(service.url, "submit", spec_file(tmp_path, {**LONG, "steps": 3, "name": name}), "-q").stdout.strip()
           for _ in range(3)]
    newest_first = descent(service.url, "list", "--name", name).stdout.splitlines()[1:]
    assert [line.split()[0] for line in newest_first] == ids[::-1] and all(name in line for line in newest_first)
    oldest_first = descent(service.url, "list", "--name", name, "--order", "asc").stdout.splitlines()[1:]
    assert [line.split()[0] for line in oldest_first] == ids
    bad = descent(service.url, "list", "--stop-reason", "bored")
    assert bad.returncode == 1 and "stop_reason" in one_clean_line(bad.stderr)


@integration
def test_plot_writes_a_png(service, long_id, tmp_path):
    target = tmp_path / "contour.png"
    out = descent(service.url, "plot", long_id, "-o", str(target))
    assert out.returncode == 0, out.stderr
    assert target.read_bytes()[:8] == PNG and str(target) in out.stdout
    loss = descent(service.url, "plot", long_id, "--kind", "loss", "-o", str(tmp_path / "loss.png"))
    assert loss.returncode == 0 and (tmp_path / "loss.png").read_bytes()[:8] == PNG


@integration
def test_sweep_quiet_and_wait(service, tmp_path):
    sweep = {"base": {**LONG, "steps": 20}, "grid": {"optimizer.lr": [0.001, 0.01]}, "starts": [[1, 1], [2, 2]]}
    out = descent(service.url, "sweep", spec_file(tmp_path, sweep), "--wait")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["counts"]["succeeded"] == 4
    quiet = descent(service.url, "sweep", spec_file(tmp_path, sweep), "-q")
    assert quiet.returncode == 0 and UUID.fullmatch(quiet.stdout.strip())
    bad = descent(service.url, "sweep", spec_file(tmp_path, {**sweep, "grid": {"optimizer.lr": [-1]}}))
    assert bad.returncode == 1 and json.loads(bad.stdout)["error"]["field"] == "grid.optimizer.lr"
    assert "grid.optimizer.lr" in one_clean_line(bad.stderr) or "lr" in bad.stderr


@integration
def test_api_errors_are_one_line_on_stderr(service, tmp_path):
    out = descent(service.url, "submit", spec_file(tmp_path, {**LONG, "steps": -1}))
    assert out.returncode == 1 and json.loads(out.stdout)["error"]["field"] == "steps"
    assert one_clean_line(out.stderr).startswith("descent submit: ") and "400" in out.stderr
    for args in (["status", "no-such-job"], ["history", "no-such-job", "--csv"], ["wait", "no-such-job"]):
        missing = descent(service.url, *args)
        assert missing.returncode == 1 and "404" in one_clean_line(missing.stderr), args
    unreadable = descent(service.url, "submit", str(tmp_path / "nothing.json"))
    assert unreadable.returncode == 2 and "nothing.json" in one_clean_line(unreadable.stderr)


@integration
def test_an_api_that_is_down_is_one_line_and_a_non_zero_exit():
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["status", "x"], ["history", "x", "--csv"], ["list"], ["objectives"], ["wait", "x"]):
        out = descent(url, *args, DESCENT_RETRY_SECONDS="0.3")
        assert out.returncode != 0, args
        line = one_clean_line(out.stderr)
        assert url in line and line.startswith(f"descent {args[0]}: "), line
        assert "tried" in line and "Idempotency-Key" not in line  # retried; a read has no key


@integration
def test_a_submit_with_an_idempotency_key_makes_one_job(service, tmp_path):
    key = f"cli-{os.getpid()}-{free_port()}"
    spec = spec_file(tmp_path, {**LONG, "steps": 3})
    first = descent(service.url, "submit", spec, "--idempotency-key", key, "-q")
    again = descent(service.url, "submit", spec, "--idempotency-key", key, "-q")
    assert first.returncode == 0 and again.returncode == 0, (first.stderr, again.stderr)
    assert UUID.fullmatch(first.stdout.strip()) and again.stdout == first.stdout
    other = descent(service.url, "submit", spec, "-q")  # no key: a new random one, a new job
    assert other.returncode == 0 and other.stdout != first.stdout
    sweep = spec_file(tmp_path, {"base": {**LONG, "steps": 3}, "grid": {"optimizer.lr": [0.001]}}, "sweep.json")
    sweeps = [descent(service.url, "sweep", sweep, "--idempotency-key", key, "-q").stdout for _ in range(2)]
    assert UUID.fullmatch(sweeps[0].strip()) and sweeps[1] == sweeps[0]


@integration
def test_a_submit_that_gets_no_answer_names_the_key_to_submit_again_with(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    spec = spec_file(tmp_path, {**LONG, "steps": 3})
    given = descent(url, "submit", spec, "--idempotency-key", "my-key-7", DESCENT_RETRY_SECONDS="0.3")
    line = one_clean_line(given.stderr)
    assert given.returncode == 1 and given.stdout == "" and line.startswith("descent submit: ") and url in line
    assert "--idempotency-key my-key-7" in line and "idempotency_key=" not in line
    generated = descent(url, "sweep", spec, DESCENT_RETRY_SECONDS="0.3")
    found = re.search(r"--idempotency-key ([0-9a-f]{32})\b", one_clean_line(generated.stderr))
    assert generated.returncode == 1 and found, generated.stderr


@integration
@pytest.mark.parametrize("fmt", ["--csv", "--ndjson", "--every=1"])
def test_a_reader_that_stops_early_breaks_no_pipe(service, long_id, tmp_path, fmt):
    err = tmp_path / "err.txt"
    script = f'"{BIN / "descent"}" history {long_id} {fmt} 2>"{err}" | head -1'
    out = subprocess.run(["sh", "-c", script], env=env_for(service.url), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 1
    assert "Traceback" not in err.read_text() and "BrokenPipe" not in err.read_text() and err.read_text() == ""
    status = subprocess.run(["sh", "-c", f'"{BIN / "descent"}" status {long_id} --json 2>"{err}" | head -1'],
                            env=env_for(service.url), capture_output=True, text=True, timeout=120)
    assert status.stdout == "{\n" and err.read_text() == ""


# -- argument parsing (no server) ---------------------------------------------------------------
def test_history_arguments():
    args = build_parser().parse_args(["history", "J", "--csv", "--fields", "f,x", "--every", "5", "--limit", "7"])
    assert (args.id, args.csv, args.ndjson, args.fields) == ("J", True, False, "f,x")
    assert (args.every, args.limit, args.start) == (5, 7, 0)
    assert build_parser().parse_args(["history", "J"]).limit is None  # no cut by default


@pytest.mark.parametrize("argv", [["history", "J", "--csv", "--ndjson"], ["history", "J", "--every", "0"],
                                  ["list", "--status", "done"], ["list", "--order", "sideways"],
                                  ["plot", "J", "--kind", "pie"], ["submit"], ["list", "--limit", "-1"]])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2 and "Traceback" not in capsys.readouterr().err


def test_submit_and_sweep_flags():
    args = build_parser().parse_args(["submit", "s.json", "--wait", "-q", "--progress", "--timeout", "5"])
    assert (args.spec, args.wait, args.quiet, args.progress, args.timeout) == ("s.json", True, True, True, 5.0)
    sweep = build_parser().parse_args(["sweep", "-", "-q"])
    assert (sweep.spec, sweep.quiet, sweep.wait, sweep.idempotency_key) == ("-", True, False, None)
    keyed = build_parser().parse_args(["submit", "s.json", "--idempotency-key", "k-1"])
    assert keyed.idempotency_key == "k-1"
    listing = build_parser().parse_args(["list", "--status", "failed", "--name", "n", "--tag", "k:v", "--order", "desc",
                                         "--stop-reason", "diverged"])
    assert (listing.status, listing.name, listing.tag, listing.order) == ("failed", "n", "k:v", "desc")
    assert (listing.stop_reason, listing.limit) == ("diverged", 50)
    assert build_parser().parse_args(["list"]).order == "desc"  # newest first unless --order asc


def test_the_help_names_every_client_command():
    shown = build_parser().format_help()
    for command in ("submit", "status", "wait", "cancel", "history", "list", "objectives", "plot", "sweep", "x"):
        assert f"descent {command} " in shown, command
