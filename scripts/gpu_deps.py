"""What the service and scripts/gpu_check.py need at run time, for a machine that has its own CUDA
torch and no network (the lent nvidia-h200 machine): which wheels to carry, and whether a Python
has everything. Standard library only, plus ``packaging`` (or pip's copy of it).

    python scripts/gpu_deps.py pins [--python-version 3.12.3]
        the wheels scripts/fetch_gpu_wheels.sh fetches, pinned to this Python's installed versions:
        "carry NAME==VERSION" for each package of the runtime closure that the machine lacks, and
        "fallback NAME==VERSION" for each package the machine brings that pyproject or a carried
        package asks for (the machine's copy is used; the fallback wheel only where it is missing
        or its version does not fit the request)
    python scripts/gpu_deps.py check [--fallback DIR]
        exit 0 when this Python has every package of the closure, at versions that fit what
        pyproject and the carried packages ask for (torch's and the machine's own packages' needs
        are the machine's affair), and can import every module of service/ and workers/ and what gpu_check.py and the processes it
        starts import later; else exit 1, each problem on stderr and on stdout the names of the
        distributions missing or unfit (with --fallback DIR: the paths of their wheels in DIR)

The closure starts from pyproject.toml's dependencies (with their extras) and follows each
installed distribution's requirements, with environment markers, down to the packages that
MACHINE_HAS lists, which the machine brings (torch and numpy among them: never carried).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata as md
import pkgutil
import re
import sys
import tomllib
from pathlib import Path

try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version
except ImportError:  # a Python with pip alone
    from pip._vendor.packaging.markers import default_environment  # type: ignore[no-redef]
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
    from pip._vendor.packaging.utils import canonicalize_name  # type: ignore[no-redef]
    from pip._vendor.packaging.version import Version  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]

# /work/.library/device/KINDS.md, "Python packages already there", nvidia-h200, image 'cuda', as read
# on 2026-11-17 (python3 is 3.12 with torch 2.11.0+cu130 and numpy 2.5.2 there).
_KINDS_MD = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio interface-meta iniconfig jax jax-cuda13-pjrt
jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities
linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes
mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba
numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx
onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client
propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions
pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl
tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop
wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
"""
MACHINE_HAS = frozenset(_KINDS_MD.split())
MACHINE_PYTHON = "3.12.3"
# The machine's own: never carried, whatever their version (the service runs on the torch it finds).
NEVER_CARRY = frozenset({"torch", "numpy"})
# Imported later than start-up, or only in the processes gpu_check.py starts: the API's server,
# the SQL broker, the worker's command line, the plots, the migrations.
LATER_MODULES = (
    "waitress", "kombu.transport.sqlalchemy", "kombu.exceptions", "celery.bin.celery", "celery.apps.worker",
    "celery.concurrency.solo", "alembic.command", "alembic.runtime.migration", "psycopg",
    "matplotlib.backends.backend_agg", "prometheus_client", "requests",
    "testkit.processes", "testkit.backends", "tests.helpers.lesson",
)
PACKAGES = ("service", "workers")  # every module of these, but __main__


def roots() -> list[Requirement]:
    """pyproject.toml's dependencies."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"]]


def target_environment(python_version: str | None) -> dict[str, str]:
    """Marker values for CPython ``python_version`` on Linux x86_64 (this Python's where None)."""
    env = default_environment()
    if python_version:
        full = python_version if python_version.count(".") >= 2 else f"{python_version}.0"
        env.update(python_version=".".join(full.split(".")[:2]), python_full_version=full,
                   implementation_version=full, implementation_name="cpython",
                   platform_python_implementation="CPython", sys_platform="linux", platform_system="Linux",
                   os_name="posix", platform_machine="x86_64")
    return env


def applies(req: Requirement, extras: set[str], env: dict[str, str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**env, "extra": extra}) for extra in {"", *extras})


def installed_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def walk(env: dict[str, str], descend_into_machine: bool):
    """Yield (parent, requirement) for each edge of the closure, roots' parent being "pyproject.toml".
    Machine packages are leaves unless ``descend_into_machine`` (NEVER_CARRY's always are)."""
    extras_of: dict[str, set[str]] = {}  # the extras each distribution was asked for, so far
    todo: list[tuple[str, Requirement]] = [("pyproject.toml", r) for r in roots()]
    while todo:
        parent, req = todo.pop(0)
        yield parent, req
        name = canonicalize_name(req.name)
        old = extras_of.get(name)
        if old is not None and set(req.extras) <= old:
            continue
        extras_of[name] = (old or set()) | set(req.extras)
        if name in NEVER_CARRY or (name in MACHINE_HAS and not descend_into_machine):
            continue
        if installed_version(name) is None:
            continue
        for child in (Requirement(r) for r in md.requires(name) or ()):
            # On a later visit, only what the new extras bring.
            if applies(child, extras_of[name], env) and (old is None or not applies(child, old, env)):
                todo.append((name, child))


def pins(python_version: str) -> tuple[list[str], list[str], list[str]]:
    """(carry, fallback, errors): NAME==VERSION of this Python's installed versions."""
    carry: dict[str, str] = {}
    fallback: dict[str, str] = {}
    errors: list[str] = []
    for parent, req in walk(target_environment(python_version), descend_into_machine=False):
        name = canonicalize_name(req.name)
        if name in NEVER_CARRY or name in carry or name in fallback:
            continue
        version = installed_version(name)
        if version is None:
            errors.append(f"{name} (needed by {parent}) is not installed in {sys.executable}")
            continue
        (fallback if name in MACHINE_HAS else carry)[name] = version
    return ([f"{n}=={v}" for n, v in sorted(carry.items())], [f"{n}=={v}" for n, v in sorted(fallback.items())],
            errors)


def requirement_problems() -> dict[str, list[str]]:
    """Distribution name -> why it does not fit, for this Python."""
    problems: dict[str, list[str]] = {}
    for parent, req in walk(target_environment(None), descend_into_machine=False):
        name = canonicalize_name(req.name)
        version = installed_version(name)
        if version is None:
            problems.setdefault(name, []).append(f"{name}: not installed ({parent} needs {req})")
        elif name not in NEVER_CARRY and req.specifier and not req.specifier.contains(Version(version),
                                                                                      prereleases=True):
            problems.setdefault(name, []).append(f"{name} {version} does not fit {parent}'s {req}")
    return problems


def modules() -> list[str]:
    """Every module of service/ and workers/ (what the API and the workers import at start-up
    is among them), then LATER_MODULES."""
    names: list[str] = []
    for package in PACKAGES:
        names.append(package)
        path = [str(ROOT / package)]
        names += [m.name for m in pkgutil.walk_packages(path, prefix=f"{package}.", onerror=lambda _: None)
                  if not m.name.endswith("__main__")]
    return names + list(LATER_MODULES)


def import_problems() -> list[str]:
    sys.path.insert(0, str(ROOT))
    problems = []
    for name in modules():
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - each is reported
            problems.append(f"import {name}: {type(exc).__name__}: {exc}")
    return problems


def wheel_of(folder: Path, name: str) -> Path | None:
    for whl in sorted(folder.glob("*.whl")):
        if canonicalize_name(whl.name.split("-")[0]) == name:
            return whl
    return None


def cmd_check(args: argparse.Namespace) -> int:
    problems = requirement_problems()
    for lines in problems.values():
        for line in lines:
            print(f"gpu_deps: {line}", file=sys.stderr)
    if problems:  # the imports would fail too, more noisily
        for name in sorted(problems):
            if args.fallback is None:
                print(name)
            elif (whl := wheel_of(Path(args.fallback), name)) is not None:
                print(whl)
            else:
                print(f"gpu_deps: {name}: no wheel in {args.fallback}", file=sys.stderr)
        return 1
    failed = import_problems()
    for line in failed:
        print(f"gpu_deps: {line}", file=sys.stderr)
    return 1 if failed else 0


def cmd_pins(args: argparse.Namespace) -> int:
    carry, fallback, errors = pins(args.python_version)
    for line in errors:
        print(f"gpu_deps: {line}; run `make install` first", file=sys.stderr)
    if errors:
        return 1
    print("\n".join([f"carry {p}" for p in carry] + [f"fallback {p}" for p in fallback]))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pins", help="the wheels to fetch, pinned to this Python's versions")
    p.add_argument("--python-version", default=MACHINE_PYTHON,
                   help=f"the machine's Python, X.Y.Z (default {MACHINE_PYTHON}, the nvidia-h200 machine's)")
    p.set_defaults(fn=cmd_pins)
    p = sub.add_parser("check", help="exit 0 when this Python can run the service and gpu_check.py")
    p.add_argument("--fallback", metavar="DIR", help="print the wheels in DIR of what is missing or unfit")
    p.set_defaults(fn=cmd_check)
    args = parser.parse_args(argv)
    if args.command == "pins" and not re.fullmatch(r"\d+\.\d+(\.\d+)?", args.python_version):
        parser.error(f"--python-version {args.python_version}: X.Y expected")
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
