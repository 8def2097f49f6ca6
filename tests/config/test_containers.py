"""The container recipe is safe to share: a non-root image, a password instead of trust, the API
published on loopback only and running with auth required (no Docker engine needed to check)."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_the_image_runs_as_a_non_root_user():
    users = re.findall(r"^USER\s+(\S+)", (ROOT / "Dockerfile").read_text(), flags=re.M)
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
    assert not any(s.get("ports") for name, s in services.items() if name != "api")
    env = compose()["x-descent-env"]
    assert env["DESCENT_AUTH"] == "required" and "127.0.0.1" in env["DESCENT_ALLOWED_HOSTS"]
    for name in ("api", "worker-cpu", "migrate"):
        assert services[name]["environment"]["DESCENT_AUTH"] == "required", name
