"""Settings: declared once, documented in the README, and refused in one line when bad."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from service.config import ConfigError, declared_variables, load_settings

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_variables() -> set[str]:
    section = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return set(re.findall(r"DESCENT_[A-Z_]+", "\n".join(rows)))


def test_the_readme_table_lists_exactly_the_declared_variables():
    assert readme_variables() == set(declared_variables())


def test_defaults_are_embedded(monkeypatch, tmp_path):
    for name in declared_variables():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DESCENT_DATA_DIR", str(tmp_path))
    settings = load_settings()
    assert settings.database_url == f"sqlite:///{tmp_path / 'descent.db'}" and settings.embedded_broker
    assert settings.api_url == "http://127.0.0.1:8000"
    assert settings.task_time_limit == settings.limits.max_seconds + 400


@pytest.mark.parametrize("name,value,words", [
    ("DESCENT_PORT", "abc", "DESCENT_PORT must be an integer"),
    ("DESCENT_LEASE_SECONDS", "soon", "DESCENT_LEASE_SECONDS must be a number"),
    ("DESCENT_MAX_STEPS", "-5", "DESCENT_MAX_STEPS must be an integer from 0 up"),
    ("DESCENT_MAX_WAITERS", "00", "DESCENT_MAX_WAITERS must be at least 1"),
    ("DESCENT_API_THREADS", "0", "DESCENT_API_THREADS must be at least 1"),
])
def test_a_bad_value_names_the_variable(monkeypatch, name, value, words):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=words):
        load_settings()


def test_a_command_with_a_bad_value_exits_with_one_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "DESCENT_PORT": "abc", "DESCENT_DATA_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "service.cli", "api"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip() == "descent: DESCENT_PORT must be an integer, got 'abc'"
