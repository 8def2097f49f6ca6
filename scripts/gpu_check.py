"""The GPU check (``scripts/gpu_check.sh`` runs this): the embedded service with a CPU worker and,
where torch sees CUDA, a GPU worker; the lesson's five cases on ``device: cpu`` and ``device: gpu``
in float32 and float64, compared (1e-4 relative in float32, 1e-10 in float64) and held to the
lesson's numbers to 4 decimals; then a batched sweep (10,000 Rosenbrock starts, Adam) and the
1,000,000-element parabola on each device, with steps per second. Exit status 1 on any FAIL.

Without CUDA the GPU half is skipped (and said so) and the runs are shorter, so the CPU half fits
a CI machine. ``--fake-gpu`` runs the GPU half's plumbing without CUDA (the gpu queue's worker
runs its jobs on the CPU): for testing this script only, its "gpu" numbers are CPU numbers.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testkit import processes
from testkit.backends import embedded_settings
from testkit.processes import Service
from tests.helpers.lesson import LESSON_LOGLOG, LESSON_PARABOLA

RTOL = {"float32": 1e-4, "float64": 1e-10}
SKIP_LINE = "GPU: not available — GPU half skipped"
SWEEP_STARTS = 10_000
PARABOLA_ELEMENTS = 1_000_000
# The lesson's numbers (DESIGN.md), to 4 decimals.
LOGLOG_GRAD = [[0.0201, 0.0109], [0.0449, 0.0351]]
LOGLOG_500 = [[4.9900, 9.9948], [0.9775, 1.9825]]
GRAPH = ["MulBackward0", "SumBackward0", "PowBackward0", "AccumulateGrad"]


@dataclass
class CheckService(Service):
    """The testkit service, with extra environment for its processes (``--fake-gpu``)."""

    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, **self.extra_env}


@dataclass
class Report:
    """Every check's verdict, printed as it is made."""

    passed: int = 0
    failed: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> bool:
        print(f"{'PASS' if ok else 'FAIL'}  {what}", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed.append(what)
        return ok


def max_rel_diff(a: Any, b: Any) -> float:
    """The largest ``|a - b| / max(|a|, |b|)`` over the elements (0 where both are 0)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        return float("inf")
    scale = np.maximum(np.abs(x), np.abs(y))
    diff = np.abs(x - y)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(scale > 0, diff / scale, 0.0)
    return float(rel.max()) if rel.size else 0.0


def to_4_decimals(a: Any, b: Any) -> bool:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return x.shape == y.shape and bool(np.all(np.abs(x - y) <= 5e-5))


# -- the lesson -------------------------------------------------------------------------------
LESSON5 = {"objective": "10 * (x ** 2).sum()", "x0": [8, 8], "steps": 500, "optimizer": {"name": "sgd", "lr": 0.001}}
CASES: dict[int, tuple[str, dict[str, Any]]] = {
    1: ("gradient 20X of 10*sum(X**2), graph", dict(LESSON_PARABOLA)),
    2: ("gradient of prod(log(log(w+7)))", {**LESSON_LOGLOG, "steps": 0}),
    3: ("500 SGD steps on prod(log(log(w+7)))", dict(LESSON_LOGLOG)),
    4: ("the same with torch.optim.SGD spelt out", {**LESSON_LOGLOG, "optimizer": {"name": "sgd", "lr": 0.001,
                                                                                   "momentum": 0, "dampening": 0}}),
    5: ("10*sum(x**2) from [8, 8], every step recorded", LESSON5),
}


def lesson_values(svc: Service, case: int, job: dict[str, Any]) -> dict[str, Any]:
    """The numbers of a finished lesson job that the devices must agree on."""
    result = job["result"]
    values: dict[str, Any] = {"f": result["f"], "x": result["x"]}
    if case in (1, 2):
        values["grad"] = result["grad"]
    if case == 5:
        rows = svc.history(job["id"])
        values["history.x"] = [r["x"] for r in rows]
        values["history.f"] = [r["f"] for r in rows]
    return values


def manual_loglog(dtype: str) -> list[list[float]]:
    """The lesson's 500 manual steps ``w.data -= 0.001 * w.grad`` in ``dtype``, on this CPU."""
    w = torch.tensor(LESSON_LOGLOG["x0"], dtype=getattr(torch, dtype), requires_grad=True)
    for _ in range(500):
        torch.log(torch.log(w + 7)).prod().backward()
        w.data -= 0.001 * w.grad
        w.grad.zero_()
    return w.detach().tolist()


def lesson_reference_ok(case: int, dtype: str, job: dict[str, Any], values: dict[str, Any]) -> bool:
    """The lesson's own numbers, to 4 decimals (DESIGN.md). Its 500 steps were taken in float32,
    whose rounding moves the fourth decimal: in float64 they are held to the manual update instead."""
    result = job["result"]
    if case == 1:
        x0 = np.asarray(LESSON_PARABOLA["x0"], dtype=np.float64)
        return to_4_decimals(values["grad"], 20 * x0) and result["graph"] == GRAPH
    if case == 2:
        return to_4_decimals(values["grad"], LOGLOG_GRAD)
    if case in (3, 4) and dtype == "float64":
        return max_rel_diff(values["x"], manual_loglog(dtype)) <= RTOL[dtype]
    if case in (3, 4):
        return to_4_decimals(values["x"], LOGLOG_500)
    # Case 5: SGD on 10*sum(x**2) multiplies x by (1 - 20 lr) each step.
    expected = [[8 * 0.98 ** t] * 2 for t in range(501)]
    return len(values["history.x"]) == 501 and to_4_decimals(values["history.x"], expected)


def run_lesson(svc: CheckService, devices: list[str], report: Report) -> None:
    print(f"\n-- the lesson's five cases on {' and '.join(devices)} "
          f"(devices compared to {RTOL['float32']:g} relative in float32, {RTOL['float64']:g} in float64)", flush=True)
    ids = {(case, dtype, device): svc.submit({**spec, "dtype": dtype, "device": device,
                                              "name": f"gpu-check lesson {case} {dtype} {device}"})["id"]
           for case, (_, spec) in CASES.items() for dtype in RTOL for device in devices}
    got: dict[tuple[int, str, str], dict[str, Any]] = {}
    for key, job_id in ids.items():
        case, dtype, device = key
        job = svc.wait(job_id, timeout=240, poll=0.1)
        label = f"case {case} {dtype:7} {device:3}  {CASES[case][0]}"
        if job["status"] != "succeeded":
            report.check(False, f"{label}: job {job['status']}: {job.get('error')}")
            continue
        values = lesson_values(svc, case, job)
        got[key] = values
        ran_on = job["result"]["device"]
        if device == "gpu":  # held to the CPU's numbers below, with the tolerances
            report.check(ran_on.startswith("cuda") or bool(svc.extra_env), f"{label}: ran on {ran_on}")
            continue
        what = ("the manual update's numbers to 1e-10" if case in (3, 4) and dtype == "float64"
                else "the lesson's numbers to 4 decimals")
        report.check(lesson_reference_ok(case, dtype, job, values), f"{label}: {what} (on {ran_on})")
    if "gpu" not in devices:
        return
    for case in CASES:
        for dtype, rtol in RTOL.items():
            a, b = got.get((case, dtype, "cpu")), got.get((case, dtype, "gpu"))
            if a is None or b is None:
                report.check(False, f"case {case} {dtype:7} cpu vs gpu: a job did not succeed")
                continue
            worst = max(max_rel_diff(a[name], b[name]) for name in a)
            report.check(worst <= rtol, f"case {case} {dtype:7} cpu vs gpu: max relative difference {worst:.2e} "
                                        f"<= {rtol:g} ({', '.join(a)})")
    for dtype in RTOL:  # case 4 is case 3's optimiser spelt out: the same numbers on one device
        for device in devices:
            a, b = got.get((3, dtype, device)), got.get((4, dtype, device))
            if a is not None and b is not None:
                report.check(a["x"] == b["x"], f"case 4 {dtype:7} {device:3}  equals case 3 bit for bit")


# -- throughput -------------------------------------------------------------------------------
@dataclass
class Speed:
    device: str
    run: str
    steps: int
    seconds: float  # the engine's time, from the job's result
    wall: float  # from submission to the last job's end, storage included
    lanes: int = 1

    def line(self) -> str:
        rate = self.steps / self.seconds if self.seconds > 0 else float("inf")
        extra = f"  ({self.lanes * rate:,.0f} start-steps/s)" if self.lanes > 1 else ""
        return (f"{self.device:6} {self.run:44} {self.steps:>6} {self.seconds:>9.2f} {self.wall:>8.1f} "
                f"{rate:>11,.1f}{extra}")


def run_sweep(svc: CheckService, device: str, steps: int, starts: int, report: Report) -> Speed | None:
    body = {"base": {"objective": {"name": "rosenbrock"}, "optimizer": {"name": "adam", "lr": 0.01},
                     "steps": steps, "record": {"every": steps, "x": False}, "device": device},
            "starts": {"count": starts, "init": "uniform", "low": -2, "high": 2, "seed": 0},
            "name": f"gpu-check sweep {device}"}
    t0 = time.perf_counter()
    resp = svc.http.post(svc.url + "/v1/sweeps", json=body, timeout=300)
    if resp.status_code != 202:
        report.check(False, f"sweep {device}: POST /v1/sweeps answered {resp.status_code}: {resp.text[:300]}")
        return None
    sweep = resp.json()
    deadline = time.time() + 300
    while time.time() < deadline:
        sweep = svc.http.get(f"{svc.url}/v1/sweeps/{sweep['id']}", params={"limit": 1}, timeout=60).json()
        counts = sweep["counts"]
        if counts.get("queued", 0) + counts.get("running", 0) == 0:
            break
        time.sleep(0.25)
    wall = time.perf_counter() - t0
    counts = sweep["counts"]
    label = f"sweep {device:3}  {starts:,} Rosenbrock starts, Adam, {steps} steps"
    if not report.check(counts.get("succeeded") == starts, f"{label}: {counts.get('succeeded', 0):,} jobs "
                        f"of {starts:,} succeeded ({', '.join(f'{k} {v}' for k, v in counts.items() if v)})"):
        return None
    page = svc.http.get(f"{svc.url}/v1/sweeps/{sweep['id']}/jobs", params={"limit": 1}, timeout=60).json()
    result = page["jobs"][0]["result"]
    report.check(device != "gpu" or bool(svc.extra_env) or result["device"].startswith("cuda"),
                 f"{label}: ran on {result['device']}")
    # A batch's lanes share one clock: any job's seconds is the batch's time up to its end.
    return Speed(device, f"sweep: {starts:,} Rosenbrock starts, Adam", steps, result["seconds"], wall,
                 lanes=starts)


def run_parabola(svc: CheckService, device: str, steps: int, elements: int) -> tuple[Speed | None, dict[str, Any]]:
    spec = {"objective": "10 * (x ** 2).sum()", "x0": {"shape": [elements], "init": "normal", "seed": 0},
            "optimizer": {"name": "sgd", "lr": 0.001}, "steps": steps, "record": {"every": steps, "x": False},
            "device": device, "name": f"gpu-check parabola {device}"}
    t0 = time.perf_counter()
    job = svc.wait(svc.submit(spec)["id"], timeout=300, poll=0.25)
    wall = time.perf_counter() - t0
    if job["status"] != "succeeded":
        return None, job
    return Speed(device, f"parabola: {elements:,} elements, SGD", steps, job["result"]["seconds"], wall), job


def run_throughput(svc: CheckService, devices: list[str], args: argparse.Namespace, report: Report) -> list[Speed]:
    print(f"\n-- throughput (one run at a time; torch threads per worker: {svc.settings.torch_threads})", flush=True)
    speeds: list[Speed] = []
    parabolas: dict[str, dict[str, Any]] = {}
    for device in devices:
        if (speed := run_sweep(svc, device, args.sweep_steps, args.sweep_starts, report)) is not None:
            speeds.append(speed)
        speed, job = run_parabola(svc, device, args.parabola_steps, args.parabola_elements)
        label = f"parabola {device:3}  {args.parabola_elements:,} elements, {args.parabola_steps} steps"
        if report.check(speed is not None, f"{label}: job {job['status']} on {(job.get('result') or {}).get('device')}"
                        + (f": {job.get('error')}" if speed is None else "")):
            speeds.append(speed)  # type: ignore[arg-type]
            parabolas[device] = job["result"]
    if len(parabolas) == 2:
        a, b = parabolas["cpu"], parabolas["gpu"]
        worst = max(max_rel_diff(a[k], b[k]) for k in ("f", "grad_norm"))
        report.check(worst <= RTOL["float32"], f"parabola cpu vs gpu: max relative difference in f and grad_norm "
                                               f"{worst:.2e} <= {RTOL['float32']:g}")
    return speeds


def print_speeds(speeds: list[Speed]) -> None:
    print(f"\n{'device':6} {'run':44} {'steps':>6} {'seconds':>9} {'wall s':>8} {'steps/s':>11}")
    for speed in speeds:
        print(speed.line())
    by = {(s.run, s.device): s for s in speeds}
    for run in dict.fromkeys(s.run for s in speeds):
        cpu, gpu = by.get((run, "cpu")), by.get((run, "gpu"))
        if cpu is not None and gpu is not None and gpu.seconds > 0 and cpu.seconds > 0:
            # The same steps on each device: the speed-up is the ratio of the steps per second.
            print(f"gpu/cpu speed-up, {run}: {cpu.seconds / gpu.seconds:.1f}x "
                  f"(cpu {cpu.steps / cpu.seconds:,.1f} steps/s, gpu {gpu.steps / gpu.seconds:,.1f} steps/s)")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: 1 or more")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep-steps", type=_positive,
                        help="Adam steps of each sweep start (default 500 with CUDA, 50 without)")
    parser.add_argument("--parabola-steps", type=_positive,
                        help="SGD steps of the big parabola (default 1000 with CUDA, 100 without)")
    parser.add_argument("--sweep-starts", type=_positive, default=SWEEP_STARTS,
                        help=f"starts of the sweep (default {SWEEP_STARTS:,}; fewer for a test of this script)")
    parser.add_argument("--parabola-elements", type=_positive, default=PARABOLA_ELEMENTS,
                        help=f"elements of the big parabola (default {PARABOLA_ELEMENTS:,}; fewer for a test)")
    parser.add_argument("--fake-gpu", action="store_true",
                        help="test this script without CUDA: the gpu worker runs on the CPU")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    gpu = cuda or args.fake_gpu
    devices = ["cpu", "gpu"] if gpu else ["cpu"]
    args.sweep_steps = args.sweep_steps or (500 if cuda else 50)
    args.parabola_steps = args.parabola_steps or (1000 if cuda else 100)
    threads = max(1, min(os.cpu_count() or 1, 16))

    print("== Descent GPU check ==")
    print(f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
          f"{os.cpu_count()} CPUs", flush=True)
    if cuda:
        print(f"GPU: {torch.cuda.get_device_name(0)} (torch CUDA {torch.version.cuda})")
    elif args.fake_gpu:
        print("GPU: none — --fake-gpu: the gpu worker runs its jobs on the CPU (a test of this script)")
    else:
        print(SKIP_LINE)
    report = Report()
    started = time.perf_counter()
    if not (processes.BIN / "descent").exists():  # the project is on PYTHONPATH, not installed
        shim = Path(tempfile.mkdtemp(prefix="descent-bin-"))
        (shim / "descent").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m service.cli "$@"\n')
        (shim / "descent").chmod(0o755)
        processes.BIN = shim
    with tempfile.TemporaryDirectory(prefix="descent-gpu-check-") as tmp:
        settings = replace(embedded_settings(Path(tmp)), batch_max=args.sweep_starts, torch_threads=threads)
        svc = CheckService(settings=settings, log_dir=Path(tmp),
                           extra_env={"DESCENT_GPU_WITHOUT_CUDA": "yes"} if args.fake_gpu and not cuda else {})
        try:
            svc.start(workers=1)
            if gpu:
                svc.start_worker("gpu")
                svc.wait_for_workers(2)
            print(f"service up: API and {len(devices)} worker(s) ({', '.join(devices)}) "
                  f"in {time.perf_counter() - started:.1f} s", flush=True)
            run_lesson(svc, devices, report)
            speeds = run_throughput(svc, devices, args, report)
            print_speeds(speeds)
        except Exception as exc:  # noqa: BLE001 - reported as a FAIL with the service's logs
            report.check(False, f"the check broke off: {type(exc).__name__}: {exc}")
            print(svc.logs()[-6000:], file=sys.stderr)
        finally:
            svc.stop()
    total = time.perf_counter() - started
    if report.failed:
        print(f"\nRESULT: FAIL ({len(report.failed)} of {report.passed + len(report.failed)} checks failed, "
              f"{total:.0f} s)")
        return 1
    print(f"\nRESULT: PASS ({report.passed} checks, {total:.0f} s{'; GPU half skipped' if not gpu else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
