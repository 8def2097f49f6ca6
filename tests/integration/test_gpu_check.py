"""scripts/gpu_check.sh as CI runs it: on a machine without CUDA it says the GPU half is skipped,
runs the lesson's five cases and the throughput runs on the CPU, and passes, within 3 minutes.

Then, in one small run of ``gpu_check.sh --fake-gpu`` (the gpu worker runs its jobs on the CPU),
what only the lent GPU machine would show: the GPU half's plumbing, and the install from wheels on
a bare machine, simulated by a Python that has torch, numpy and the other packages the machine
brings (KINDS.md, as scripts/gpu_deps.py lists them) but none of the service's, with the wheels
fetch_gpu_wheels.sh fetches for this Python (cached under the pytest cache, keyed by their pins).
Where the package index is out of reach that run is made on .venv, and the install test skips
(fails under CI=true).

Those two runs take minutes: their tests (marker ``gpu_check``) run when what they check differs
from where they last passed, here or in the committed record (tests/integration/conftest.py says
what that is), or with DESCENT_TEST_GPU_CHECK=always."""
from __future__ import annotations

import ast
import hashlib
import importlib.metadata as md
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("gpu_deps", ROOT / "scripts" / "gpu_deps.py")
gpu_deps = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_deps)

# Small runs: the plumbing, not the numbers.
SMALL = ["--sweep-steps", "5", "--parabola-steps", "5", "--sweep-starts", "100", "--parabola-elements", "10000"]
# Left out of the simulated machine although KINDS.md lists it: the wheels' fallback/ must bring it.
ABSENT_FROM_MACHINE = "prometheus-client"
NETWORK_ERROR = re.compile(r"NewConnectionError|Failed to establish a new connection|Max retries exceeded|"
                           r"Temporary failure in name resolution|Name or service not known|Network is unreachable|"
                           r"Connection refused|ProxyError|timed out|Could not fetch URL|ConnectionError")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESCENT_")}
    return {**env, **extra}


def gpu_check(*args: str, env: dict[str, str], timeout: float = 240) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    out = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=timeout, env=env, check=False)
    return out, time.monotonic() - started


def lines(out: subprocess.CompletedProcess[str]) -> str:
    return out.stdout[-6000:] + "\n--- stderr\n" + out.stderr[-6000:]


# -- the CPU half alone, as CI runs it ---------------------------------------------------------
@pytest.fixture(scope="module")
def run() -> tuple[subprocess.CompletedProcess[str], float]:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the check runs its GPU half (run scripts/gpu_check.sh by hand)")
    return gpu_check(env=clean_env(PYTHON=sys.executable))


@pytest.mark.gpu_check
def test_it_passes_on_the_cpu_alone_and_says_the_gpu_half_was_skipped(run):
    out, seconds = run
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "GPU: not available — GPU half skipped" in out.stdout
    assert re.search(r"^RESULT: PASS \(\d+ checks, \d+ s; GPU half skipped\)$", out.stdout, flags=re.MULTILINE)
    assert "FAIL" not in out.stdout
    assert "gpu_check: installed" not in out.stdout  # .venv has every package: nothing to install
    assert seconds < 180, f"took {seconds:.0f} s, over CI's 3 minutes"


@pytest.mark.gpu_check
def test_the_lesson_cases_ran_on_the_cpu_in_both_dtypes(run):
    out, _ = run
    for case in range(1, 6):
        for dtype in ("float32", "float64"):
            assert re.search(rf"^PASS  case {case} {dtype} +cpu  ", out.stdout, flags=re.MULTILINE), (case, dtype)
    assert not re.search(r"\bgpu\b", out.stdout.split("GPU half skipped", 1)[1].split("RESULT:")[0])


@pytest.mark.gpu_check
def test_it_reports_cpu_steps_per_second_for_the_sweep_and_the_big_parabola(run):
    out, _ = run
    assert re.search(r"^PASS  sweep cpu  10,000 Rosenbrock starts, Adam, \d+ steps: 10,000 jobs of 10,000 succeeded",
                     out.stdout, flags=re.MULTILINE)
    assert re.search(r"^PASS  parabola cpu  1,000,000 elements", out.stdout, flags=re.MULTILINE)
    row = re.compile(r"^cpu +(sweep|parabola): .*? +([\d,]+\.\d) *(?:\(|$)", flags=re.MULTILINE)
    rates = {m.group(1): float(m.group(2).replace(",", "")) for m in row.finditer(out.stdout)}
    assert set(rates) == {"sweep", "parabola"} and all(r > 0 for r in rates.values()), out.stdout


# -- the GPU half's plumbing -------------------------------------------------------------------
def assert_gpu_half(out: subprocess.CompletedProcess[str]) -> None:
    """The GPU half ran and passed: the lesson compared across devices, steps/s on each device and
    the speed-up of each run."""
    text = out.stdout
    assert out.returncode == 0, lines(out)
    assert "FAIL" not in text and "GPU half skipped" not in text, lines(out)
    assert re.search(r"^RESULT: PASS \(\d+ checks, \d+ s\)$", text, flags=re.MULTILINE), lines(out)
    assert re.search(r"^service up: API and 2 worker\(s\) \(cpu, gpu\)", text, flags=re.MULTILINE)
    for case in range(1, 6):
        for dtype in ("float32", "float64"):
            for device in ("cpu", "gpu"):
                assert re.search(rf"^PASS  case {case} {dtype} +{device}  ", text, flags=re.MULTILINE), (case, dtype)
            assert re.search(rf"^PASS  case {case} {dtype} +cpu vs gpu: max relative difference \S+ <= ", text,
                             flags=re.MULTILINE), (case, dtype)
    for device in ("cpu", "gpu"):
        assert re.search(rf"^PASS  sweep {device}  100 Rosenbrock starts, Adam, 5 steps: 100 jobs of 100 succeeded",
                         text, flags=re.MULTILINE), device
        assert re.search(rf"^PASS  parabola {device}  10,000 elements, 5 steps: job succeeded", text,
                         flags=re.MULTILINE), device
    assert re.search(r"^PASS  parabola cpu vs gpu: max relative difference", text, flags=re.MULTILINE)
    row = re.compile(r"^(cpu|gpu) +(sweep|parabola): .*? +([\d,]+\.\d) *(?:\(|$)", flags=re.MULTILINE)
    rates = {(m.group(1), m.group(2)): float(m.group(3).replace(",", "")) for m in row.finditer(text)}
    assert set(rates) == {(d, r) for d in ("cpu", "gpu") for r in ("sweep", "parabola")}, text
    assert all(rate > 0 for rate in rates.values()), rates
    speedup = re.compile(r"^gpu/cpu speed-up, (sweep|parabola): [^:]+: ([\d.]+)x "
                         r"\(cpu ([\d,.]+) steps/s, gpu ([\d,.]+) steps/s\)$", flags=re.MULTILINE)
    found = {m.group(1): m.groups()[1:] for m in speedup.finditer(text)}
    assert set(found) == {"sweep", "parabola"}, text
    for run_, (ratio, cpu, gpu) in found.items():
        assert float(cpu.replace(",", "")) == rates[("cpu", run_)], (run_, cpu, rates)
        assert float(gpu.replace(",", "")) == rates[("gpu", run_)], (run_, gpu, rates)
        assert float(ratio) >= 0


# -- what the bare GPU machine needs ------------------------------------------------------------
def third_party_imports(paths: list[Path]) -> dict[str, str]:
    """Top-level module -> a file importing it, for every import (lazy ones too) in ``paths``."""
    first_party = {"service", "workers", "testkit", "tests", "scripts", "gpu_deps"}
    found: dict[str, str] = {}
    for path in paths:
        for file in [path] if path.is_file() else sorted(path.rglob("*.py")):
            for node in ast.walk(ast.parse(file.read_text(), str(file))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                         else [])
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in first_party:
                        found.setdefault(top, str(file.relative_to(ROOT)))
    return found


def test_every_import_of_the_service_is_carried_as_a_wheel_or_brought_by_the_machine():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_deps.py"), "pins"], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    carry = {canonicalize_name(line.split()[1].split("==")[0]) for line in out.stdout.splitlines()
             if line.startswith("carry ")}
    assert carry and not carry & gpu_deps.MACHINE_HAS and not carry & gpu_deps.NEVER_CARRY
    # The audit's: the service imports these at start-up; on the machine they come from its own
    # packages (KINDS.md), and from fallback/ where one is missing or unfit.
    assert {"prometheus-client", "matplotlib", "requests"} <= gpu_deps.MACHINE_HAS
    assert {"flask", "celery", "kombu", "sqlalchemy", "alembic", "pydantic", "waitress", "psycopg", "redis"} <= carry
    to_dists = md.packages_distributions()
    imports = third_party_imports([ROOT / "service", ROOT / "workers", ROOT / "migrations", ROOT / "testkit" /
                                   "processes.py", ROOT / "testkit" / "backends.py", ROOT / "tests" / "helpers" /
                                   "lesson.py", ROOT / "scripts" / "gpu_check.py"])
    for module, where in imports.items():
        dists = {canonicalize_name(d) for d in to_dists.get(module, [module])}
        assert dists & (carry | gpu_deps.MACHINE_HAS), f"{module} (imported in {where}): neither carried nor on " \
                                                       f"the machine ({sorted(dists)})"


def test_a_machine_package_too_old_for_a_carried_one_is_taken_from_the_fallback_wheels(tmp_path):
    # What the machine's typing-extensions might be: older than the carried pydantic asks for.
    old = tmp_path / "machine" / "typing_extensions-4.0.0.dist-info"
    old.mkdir(parents=True)
    (old / "METADATA").write_text("Metadata-Version: 2.1\nName: typing_extensions\nVersion: 4.0.0\n")
    fallback = tmp_path / "fallback"
    fallback.mkdir()
    wheel = fallback / f"typing_extensions-{md.version('typing-extensions')}-py3-none-any.whl"
    wheel.touch()
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_deps.py"), "check", "--fallback", str(fallback)],
                         capture_output=True, text=True, timeout=120, check=False,
                         env=clean_env(PYTHONPATH=str(tmp_path / "machine")))
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout.split() == [str(wheel)], out.stdout + out.stderr
    assert re.search(r"typing-extensions 4\.0\.0 does not fit pydantic's typing-extensions>=", out.stderr), out.stderr


def network_or_fail(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; under CI=true it is required")
    pytest.skip(reason)


def fetch_wheels(cache_root: Path) -> tuple[Path | None, str]:
    """fetch_gpu_wheels.sh's wheels for this Python, cached by their pins under ``cache_root``:
    (their folder, "") or (None, why not) where the package index is out of reach."""
    version = platform.python_version()
    pins = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_deps.py"), "pins", "--python-version", version],
                          capture_output=True, text=True, timeout=60, check=False)
    assert pins.returncode == 0, pins.stderr
    key = hashlib.sha256(f"{version} manylinux x86_64\n{pins.stdout}".encode()).hexdigest()[:16]
    cache_root.mkdir(parents=True, exist_ok=True)
    dest = cache_root / key
    if (dest / ".complete").exists():
        return dest, ""
    part = cache_root / f"{key}.part-{os.getpid()}"
    out = subprocess.run(["bash", str(ROOT / "scripts" / "fetch_gpu_wheels.sh"), "--python-version", version],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
                         env=clean_env(PYTHON=sys.executable, DEST=str(part)))
    if out.returncode != 0:
        shutil.rmtree(part, ignore_errors=True)
        if NETWORK_ERROR.search(out.stdout + out.stderr):
            return None, f"fetch_gpu_wheels.sh could not reach the package index: {out.stderr.strip()[-400:]}"
        pytest.fail(f"fetch_gpu_wheels.sh failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    (part / ".complete").touch()
    for old in cache_root.iterdir():  # earlier pins' wheels
        if old.is_dir() and old.name != key and ".part-" not in old.name:
            shutil.rmtree(old, ignore_errors=True)
    try:
        part.rename(dest)
    except OSError:  # another session cached them meanwhile
        shutil.rmtree(part, ignore_errors=True)
    return dest, ""


def bare_machine(base: Path) -> tuple[Path, dict[str, str]]:
    """(python, env): a fresh venv with no packages, and on PYTHONPATH a folder of links to the
    packages of .venv that the GPU machine brings (torch, numpy, matplotlib, requests, pip, ...) less
    ABSENT_FROM_MACHINE: the machine's Python, as far as the service can tell."""
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip",
                    str(base / "venv")], check=True, timeout=120)
    site = base / "site"
    site.mkdir()
    purelib = Path(sysconfig.get_paths()["purelib"])
    brought = set()
    for dist in md.distributions(path=[str(purelib)]):
        name = canonicalize_name(dist.metadata["Name"])
        if name not in gpu_deps.MACHINE_HAS or name == ABSENT_FROM_MACHINE:
            continue
        brought.add(name)
        for top in {Path(str(f)).parts[0] for f in dist.files or []}:
            if top in ("..", "__pycache__") or top.endswith(".pth") or (site / top).exists():
                continue
            if (purelib / top).exists():
                (site / top).symlink_to(purelib / top)
    assert {"torch", "numpy", "pip", "packaging", "matplotlib", "requests"} <= brought, brought
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    env = {k: v for k, v in clean_env().items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.update(PYTHON=str(base / "venv" / "bin" / "python"), PYTHONPATH=str(site), PATH=path, PYTHONNOUSERSITE="1")
    return base / "venv" / "bin" / "python", env


@dataclass
class FakeGpuRun:
    out: subprocess.CompletedProcess[str]
    seconds: float
    wheels: Path | None  # None: ran on .venv, the wheels being out of reach (why_not)
    why_not: str = ""
    probe: subprocess.CompletedProcess[str] | None = None


@pytest.fixture(scope="module")
def fake_gpu(request, tmp_path_factory) -> FakeGpuRun:
    """``gpu_check.sh --fake-gpu`` with small runs, on the simulated bare GPU machine with the
    wheels (as on the lent machine); on .venv where the wheels cannot be fetched."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        wheels, why_not = None, "the wheels are manylinux x86_64: this machine is not"
    else:
        cache = getattr(request.config, "cache", None)
        wheels, why_not = fetch_wheels(cache.mkdir("descent-gpu-wheels") if cache is not None
                                       else Path("/tmp/descent-gpu-wheels"))
    if wheels is None:
        return FakeGpuRun(*gpu_check("--fake-gpu", *SMALL, env=clean_env(PYTHON=sys.executable)), None, why_not)
    python, env = bare_machine(tmp_path_factory.mktemp("bare-gpu-machine"))
    probe = subprocess.run([str(python), "-c", "import torch, numpy, matplotlib, requests; import flask"], env=env,
                           capture_output=True, text=True, timeout=120, check=False)
    return FakeGpuRun(*gpu_check("--fake-gpu", *SMALL, env={**env, "WHEELS": str(wheels)}), wheels, probe=probe)


@pytest.mark.gpu_check
def test_the_gpu_half_with_fake_gpu_compares_the_devices_and_reports_both_speeds(fake_gpu):
    out = fake_gpu.out
    assert_gpu_half(out)
    if not torch.cuda.is_available():
        assert "GPU: none — --fake-gpu: the gpu worker runs its jobs on the CPU" in out.stdout
        assert re.search(r"^PASS  case 3 float32 gpu  .*: ran on cpu$", out.stdout, flags=re.MULTILINE)
    assert fake_gpu.seconds < 150, f"took {fake_gpu.seconds:.0f} s"


@pytest.mark.gpu_check
def test_on_a_bare_machine_it_installs_the_wheels_and_passes(fake_gpu):
    if fake_gpu.wheels is None:
        network_or_fail(fake_gpu.why_not)
    out, wheels, text = fake_gpu.out, fake_gpu.wheels, fake_gpu.out.stdout
    # The simulation holds: torch, numpy and the machine's packages are there, the service's are not.
    assert fake_gpu.probe.returncode != 0 and "No module named 'flask'" in fake_gpu.probe.stderr, \
        fake_gpu.probe.stderr[-2000:]
    assert out.returncode == 0, lines(out)
    assert re.search(r"^gpu_check: \S+ lacks the service's packages or holds unfit ones \(.*\bflask\b.*\)$", text,
                     flags=re.MULTILINE), lines(out)
    carried = len(list(wheels.glob("*.whl")))
    assert re.search(rf"^gpu_check: installed {carried} wheels from {re.escape(str(wheels))} into ", text,
                     flags=re.MULTILINE), lines(out)
    # KINDS.md lists prometheus-client, the simulated machine lacks it: fallback/ brings it.
    assert re.search(r"^gpu_check: installed from .*/fallback, missing or unfit here: prometheus_client-\S+\.whl$",
                     text, flags=re.MULTILINE), lines(out)
    assert f"python {platform.python_version()}, torch {torch.__version__}" in text
    assert re.search(r"^RESULT: PASS \(\d+ checks, \d+ s\)$", text, flags=re.MULTILINE), lines(out)
