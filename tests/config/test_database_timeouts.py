"""The time bounds of database and broker connections: settings, their defaults derived from the
lease, and what a bad value says."""
from __future__ import annotations

import pytest

from service.config import ConfigError, DatabaseTimeouts, database_timeouts_from_env, load_settings
from service.queue import celery_config
from service.store.db import postgres_connect_args, postgres_options
from testkit.backends import embedded_settings


def test_defaults_follow_the_lease(tmp_path):
    settings = embedded_settings(tmp_path)
    assert settings.lease_seconds == 30
    assert settings.database_timeouts == DatabaseTimeouts(statement=300, lock=3, idle_in_transaction=30, tcp=30,
                                                          pool=3, connect=5)
    short = DatabaseTimeouts.for_lease(4)
    assert (short.lock, short.idle_in_transaction, short.tcp, short.statement) == (1, 4, 4, 300)
    idle, interval, count = short.keepalives()
    assert idle + interval * count <= short.tcp  # a silent peer is given up within the lease
    long = DatabaseTimeouts.for_lease(120)
    assert (long.lock, long.idle_in_transaction, long.statement) == (3, 120, 1200)


def test_variables_override_the_derived_values(monkeypatch):
    monkeypatch.setenv("DESCENT_LEASE_SECONDS", "8")
    monkeypatch.setenv("DESCENT_DB_STATEMENT_TIMEOUT", "0")
    monkeypatch.setenv("DESCENT_DB_LOCK_TIMEOUT", "0.5")
    monkeypatch.setenv("DESCENT_DB_POOL_TIMEOUT", "1.5")
    got = database_timeouts_from_env()
    assert (got.statement, got.lock, got.idle_in_transaction, got.tcp, got.pool) == (0, 0.5, 8, 8, 1.5)
    assert load_settings().database_timeouts == got


def test_a_bad_timeout_names_the_variable(monkeypatch):
    monkeypatch.setenv("DESCENT_DB_CONNECT_TIMEOUT", "1")
    with pytest.raises(ConfigError, match="DESCENT_DB_CONNECT_TIMEOUT must be at least 2"):
        load_settings()
    monkeypatch.delenv("DESCENT_DB_CONNECT_TIMEOUT")
    monkeypatch.setenv("DESCENT_DB_POOL_TIMEOUT", "0")
    with pytest.raises(ConfigError, match="DESCENT_DB_POOL_TIMEOUT must be more than 0"):
        database_timeouts_from_env()


def test_every_postgresql_connection_is_bounded_on_both_ends():
    timeouts = DatabaseTimeouts.for_lease(30)
    args = postgres_connect_args(timeouts)
    assert args["keepalives"] == 1 and args["tcp_user_timeout"] == 30_000 and args["connect_timeout"] == 5
    assert (args["keepalives_idle"], args["keepalives_interval"], args["keepalives_count"]) == (10, 5, 3)
    options = postgres_options(timeouts)
    for part in ("-c jit=off", "-c statement_timeout=300000", "-c lock_timeout=3000",
                 "-c idle_in_transaction_session_timeout=30000", "-c tcp_keepalives_idle=10",
                 "-c tcp_keepalives_interval=5", "-c tcp_keepalives_count=3", "-c tcp_user_timeout=30000"):
        assert part in options


def test_redis_sockets_are_bounded(tmp_path):
    settings = embedded_settings(tmp_path, broker_url="redis://127.0.0.1:6379/0", broker_timeout=2.0)
    config = celery_config(settings)
    options = config["broker_transport_options"]
    assert options["socket_timeout"] == 2.0 and options["socket_connect_timeout"] == 2.0
    assert options["socket_keepalive"] is True and options["health_check_interval"] == 4
    assert config["broker_connection_timeout"] == 2.0
