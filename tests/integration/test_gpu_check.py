"""scripts/gpu_check.sh as CI runs it: on a machine without CUDA it says the GPU half is skipped,
runs the lesson's five cases and the throughput runs on the CPU, and passes, within 3 minutes."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run() -> tuple[subprocess.CompletedProcess[str], float]:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the check runs its GPU half (run scripts/gpu_check.sh by hand)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESCENT_")}
    started = time.monotonic()
    out = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], cwd=ROOT, capture_output=True, text=True,
                         timeout=240, env={**env, "PYTHON": sys.executable}, check=False)
    return out, time.monotonic() - started


def test_it_passes_on_the_cpu_alone_and_says_the_gpu_half_was_skipped(run):
    out, seconds = run
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "GPU: not available — GPU half skipped" in out.stdout
    assert re.search(r"^RESULT: PASS \(\d+ checks, \d+ s; GPU half skipped\)$", out.stdout, flags=re.MULTILINE)
    assert "FAIL" not in out.stdout
    assert seconds < 180, f"took {seconds:.0f} s, over CI's 3 minutes"


def test_the_lesson_cases_ran_on_the_cpu_in_both_dtypes(run):
    out, _ = run
    for case in range(1, 6):
        for dtype in ("float32", "float64"):
            assert re.search(rf"^PASS  case {case} {dtype} +cpu  ", out.stdout, flags=re.MULTILINE), (case, dtype)
    assert not re.search(r"\bgpu\b", out.stdout.split("GPU half skipped", 1)[1].split("RESULT:")[0])


def test_it_reports_cpu_steps_per_second_for_the_sweep_and_the_big_parabola(run):
    out, _ = run
    assert re.search(r"^PASS  sweep cpu  10,000 Rosenbrock starts, Adam, \d+ steps: 10,000 jobs of 10,000 succeeded",
                     out.stdout, flags=re.MULTILINE)
    assert re.search(r"^PASS  parabola cpu  1,000,000 elements", out.stdout, flags=re.MULTILINE)
    row = re.compile(r"^cpu +(sweep|parabola): .*? +([\d,]+\.\d) *(?:\(|$)", flags=re.MULTILINE)
    rates = {m.group(1): float(m.group(2).replace(",", "")) for m in row.finditer(out.stdout)}
    assert set(rates) == {"sweep", "parabola"} and all(r > 0 for r in rates.values()), out.stdout
