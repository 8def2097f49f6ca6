"""The container recipe is safe to share: a non-root image, a password instead of trust, the API
published on loopback only and running with auth required; and it is the stack the README
describes: readiness healthchecks, waitress with its threads set, CPU workers that scale, a GPU
worker behind a profile with a CUDA torch chosen by a build argument, an optional Flower, Redis on
a volume (no Docker engine needed to check; `docker-compose config -q` where docker-compose is)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from service.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_the_image_runs_as_a_non_root_user():
    users = re.findall(r"^USER\s+(\S+)", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0")


def test_postgres_needs_a_password_and_trust_is_gone():
    text = (ROOT / "docker-compose.yml").read_text()
    assert "trust" not in text.replace("trust-auth", "").replace("keeps trust", "")
    postgres = compose()["services"]["postgres"]["environment"]
    assert postgres["POSTGRES_PASSWORD"].startswith("${DESCENT_DB_PASSWORD")
    assert "${DESCENT_DB_PASSWORD" in compose()["x-descent-env"]["DESCENT_DATABASE_URL"]


def test_the_api_is_published_on_loopback_with_auth_required():
    services = compose()["services"]
    (port,) = services["api"]["ports"]
    assert port.startswith("${DESCENT_PUBLISH:-127.0.0.1}:")
    assert not any(s.get("ports") for name, s in services.items() if name not in ("api", "flower"))
    assert all(p.startswith("127.0.0.1:") for p in services["flower"]["ports"])
    env = compose()["x-descent-env"]
    assert env["DESCENT_AUTH"] == "required" and "127.0.0.1" in env["DESCENT_ALLOWED_HOSTS"]
    for name in ("api", "worker-cpu", "migrate"):
        assert services[name]["environment"]["DESCENT_AUTH"] == "required", name


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def build_args(service: dict) -> dict:  # type: ignore[type-arg]
    build = service.get("build")
    return build.get("args", {}) if isinstance(build, dict) else {}


def test_healthchecks_ask_readyz_so_a_service_is_healthy_only_with_its_database_and_broker():
    services = compose()["services"]
    test = " ".join(services["api"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/readyz" in test
    assert "/healthz" not in (ROOT / "docker-compose.yml").read_text()


def test_the_api_runs_under_waitress_with_its_thread_count_set():
    api = compose()["services"]["api"]
    assert api["command"][:2] == ["descent", "api"]
    threads = api["environment"]["DESCENT_API_THREADS"]
    default = re.fullmatch(r"\$\{DESCENT_API_THREADS:-(\d+)\}", threads)
    assert default and int(default.group(1)) > 0
    assert api["environment"]["DESCENT_AUTH"] == "required"  # the merge kept the shared environment


def test_cpu_workers_scale_no_fixed_name_or_port():
    worker = compose()["services"]["worker-cpu"]
    assert "container_name" not in worker and "ports" not in worker and "hostname" not in worker
    assert worker["command"] == ["descent", "worker", "--queues", "cpu"]
    assert "--scale worker-cpu=" in (ROOT / "docker-compose.yml").read_text()


def test_the_gpu_worker_sits_behind_its_profile_with_an_nvidia_reservation_and_a_cuda_torch():
    gpu = compose()["services"]["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["command"] == ["descent", "worker", "--queues", "gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    variant = build_args(gpu)["TORCH_VARIANT"]
    assert re.fullmatch(r"\$\{DESCENT_TORCH_CUDA:-cu\d+\}", variant)
    assert gpu["image"] != compose()["services"]["api"]["image"]  # a CUDA image never replaces the CPU one
    # The argument picks the wheel index; the version stays pyproject's pin.
    assert re.search(r"^ARG TORCH_VARIANT=cpu$", dockerfile(), flags=re.MULTILINE)
    assert re.search(r"^ARG TORCH_INDEX=\S+/\$\{TORCH_VARIANT\}$", dockerfile(), flags=re.MULTILINE)
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (torch_pin,) = [p for p in pins if p.startswith("torch")]
    assert f"pip install --no-cache-dir {torch_pin} --index-url ${{TORCH_INDEX}}" in dockerfile()


def test_flower_is_optional_built_with_its_package_and_on_loopback():
    services = compose()["services"]
    flower = services["flower"]
    assert flower["profiles"] == ["flower"]
    assert flower["command"][:4] == ["celery", "-A", "workers.app", "flower"]
    assert build_args(flower)["EXTRA_PACKAGES"].startswith("flower")
    assert re.search(r"^ARG EXTRA_PACKAGES=$", dockerfile(), flags=re.MULTILINE)
    assert flower["image"] not in (services["api"]["image"], services["worker-gpu"]["image"])
    unprofiled = [name for name, s in services.items() if not s.get("profiles")]
    assert sorted(unprofiled) == ["api", "migrate", "postgres", "redis", "worker-cpu"]


def test_redis_keeps_its_data_on_a_volume():
    spec = compose()
    redis = spec["services"]["redis"]
    assert "redisdata:/data" in redis["volumes"] and "redisdata" in spec["volumes"]
    assert "--appendonly" in redis["command"]


def test_redis_needs_a_password_and_everything_sends_it():
    spec = compose()
    redis = spec["services"]["redis"]
    password = "${DESCENT_REDIS_PASSWORD:-descent-local}"
    assert redis["command"][redis["command"].index("--requirepass") + 1] == password
    assert password in redis["healthcheck"]["test"]  # the healthcheck's ping authenticates too
    assert spec["x-descent-env"]["DESCENT_BROKER_URL"] == f"redis://:{password}@redis:6379/0"


def test_the_fleet_override_publishes_the_database_and_broker_on_a_private_address_only():
    fleet = yaml.safe_load((ROOT / "docker-compose.fleet.yml").read_text())["services"]
    assert sorted(fleet) == ["postgres", "redis"]
    for name, port in (("postgres", 5432), ("redis", 6379)):
        (published,) = fleet[name]["ports"]
        assert re.fullmatch(rf"\$\{{DESCENT_PRIVATE_ADDRESS:\?[^}}]+\}}:{port}:{port}", published), published
        assert set(fleet[name]) == {"ports"}  # passwords stay as docker-compose.yml sets them
    assert "docker-compose.fleet.yml" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", ["migrate", "api", "worker-cpu", "worker-gpu"])
def test_every_descent_service_runs_a_command_one_can_type_by_hand(name):
    command = compose()["services"][name]["command"]
    assert command[0] == "descent"
    build_parser().parse_args(command[1:])  # exits (SystemExit) on an argument the CLI does not take


@pytest.mark.parametrize("profiles", [[], ["gpu"], ["gpu", "flower"]], ids=["default", "gpu", "gpu+flower"])
def test_docker_compose_accepts_the_file(profiles):
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed")
    args = [a for p in profiles for a in ("--profile", p)]
    out = subprocess.run([exe, *args, "config", "-q"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stderr


def test_docker_compose_accepts_the_fleet_override_and_asks_for_the_address():
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed")
    files = ["-f", "docker-compose.yml", "-f", "docker-compose.fleet.yml"]
    env = {k: v for k, v in os.environ.items() if k != "DESCENT_PRIVATE_ADDRESS"}
    missing = subprocess.run([exe, *files, "config", "-q"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                             check=False, env=env)
    assert missing.returncode != 0 and "DESCENT_PRIVATE_ADDRESS" in missing.stderr
    out = subprocess.run([exe, *files, "config"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
                         env={**env, "DESCENT_PRIVATE_ADDRESS": "10.0.0.5"})
    assert out.returncode == 0, out.stderr
    merged = yaml.safe_load(out.stdout)["services"]
    assert "redis-server" in merged["redis"]["command"] and "--requirepass" in merged["redis"]["command"]
    ports = {name: merged[name]["ports"] for name in ("postgres", "redis")}
    assert ports == {"postgres": ["10.0.0.5:5432:5432/tcp"], "redis": ["10.0.0.5:6379:6379/tcp"]}
