"""The retention settings: off by default, more than 0 when set, refused in one line otherwise."""
from __future__ import annotations

import pytest

from service.config import ConfigError, load_settings


@pytest.fixture
def clean(monkeypatch, tmp_path):  # type: ignore[no-untyped-def]
    for name in ("DESCENT_HISTORY_RETENTION_SECONDS", "DESCENT_JOB_RETENTION_SECONDS",
                 "DESCENT_RETENTION_INTERVAL_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DESCENT_DATA_DIR", str(tmp_path))
    return monkeypatch


def test_retention_is_off_by_default(clean):
    settings = load_settings()
    assert (settings.history_retention, settings.job_retention, settings.retention_on) == (None, None, False)
    assert settings.retention_interval == 300.0


def test_retention_set(clean):
    clean.setenv("DESCENT_JOB_RETENTION_SECONDS", "604800")
    clean.setenv("DESCENT_RETENTION_INTERVAL_SECONDS", "60")
    settings = load_settings()
    assert (settings.job_retention, settings.history_retention, settings.retention_on) == (604800.0, None, True)
    assert settings.retention_interval == 60.0


@pytest.mark.parametrize("name", ["DESCENT_HISTORY_RETENTION_SECONDS", "DESCENT_JOB_RETENTION_SECONDS",
                                  "DESCENT_RETENTION_INTERVAL_SECONDS"])
@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_a_retention_of_nothing_or_nonsense_is_refused_naming_it(clean, name, value):
    clean.setenv(name, value)
    with pytest.raises(ConfigError, match=name) as refused:
        load_settings()
    assert "\n" not in str(refused.value)
