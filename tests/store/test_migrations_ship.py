"""Migrations ship with the package: a wheel, installed away from the source checkout, runs
`descent db upgrade`; and the schema check tells a database behind this code from one ahead of it."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from service.store import Database
from service.store.migrate import SchemaNewerThanCode, SchemaOutOfDate, check_schema, head_revision, upgrade

ROOT = Path(__file__).resolve().parents[2]
# Run in the child after `db upgrade`: where the package and the migrations were loaded from.
PROBE = """
import json, sys
import service.cli, service.store.migrate as migrate
files = {n: m.__file__ for n, m in list(sys.modules.items())
         if n.split(".")[0] in ("service", "workers") and getattr(m, "__file__", None)}
print(json.dumps({"migrations": str(migrate.MIGRATIONS), "files": files}))
"""


def _run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _build_wheel(tmp: Path) -> Path:
    """Build from a copy of the checkout, so the build leaves no build/ or egg-info in it and no
    stale build/lib files slip into the wheel; no network (the venv's setuptools builds it)."""
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".descent", "tests", "benchmarks"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-w", str(tmp / "dist"), str(src)], cwd=tmp, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, f"the wheel's build failed:\n{built.stdout}\n{built.stderr}"
    assert "Warning" not in built.stdout + built.stderr, built.stdout + built.stderr  # no BuildBackendWarning
    (wheel,) = (tmp / "dist").glob("descent-*.whl")
    return wheel


def _expected_files(src: Path) -> set[str]:
    """What the wheel must hold: every module of service/ and workers/, and all of migrations/
    (as service/migrations/)."""
    code = {p.relative_to(src).as_posix() for d in ("service", "workers") for p in (src / d).rglob("*.py")}
    migrations = {f"service/migrations/{p.relative_to(src / 'migrations').as_posix()}"
                  for p in (src / "migrations").rglob("*") if p.is_file()}
    return code | migrations


@pytest.mark.integration
def test_an_installed_wheel_upgrades_a_database(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = _expected_files(tmp_path / "src") - names
    assert not missing, f"the wheel lacks {sorted(missing)} (add the package to pyproject's list?)"
    assert "service/migrations/alembic.ini" in names and not any("versions/__init__" in n for n in names)

    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    _run(sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site),
         str(wheel), cwd=tmp_path)
    url = f"sqlite:///{tmp_path / 'x.db'}"
    # The venv supplies the dependencies; the --target dir comes first on sys.path, ahead of the
    # checkout's editable install, and the cwd is not the checkout.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESCENT_")}
    env.update(PYTHONPATH=str(site), DESCENT_DATABASE_URL=url, DESCENT_DATA_DIR=str(tmp_path / "data"))

    out = _run(sys.executable, "-m", "service.cli", "db", "upgrade", cwd=elsewhere, env=env)
    head = head_revision(Database(url))
    assert f"database at revision {head}" in out
    with sqlite3.connect(tmp_path / "x.db") as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(head,)]

    probe = json.loads(_run(sys.executable, "-c", PROBE, cwd=elsewhere, env=env))
    assert Path(probe["migrations"]) == site.resolve() / "service" / "migrations"
    assert Path(probe["files"]["service"]).resolve() == site.resolve() / "service" / "__init__.py"
    outside = {n: f for n, f in probe["files"].items() if not Path(f).resolve().is_relative_to(site.resolve())}
    assert not outside, f"loaded from outside the installed wheel: {outside}"


def test_an_empty_database_is_told_to_run_the_upgrade(tmp_path):
    with pytest.raises(SchemaOutOfDate, match="descent db upgrade") as info:
        check_schema(Database(f"sqlite:///{tmp_path / 'empty.db'}"))
    assert not isinstance(info.value, SchemaNewerThanCode)


def test_a_database_behind_this_code_is_told_to_run_the_upgrade(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'behind.db'}")
    upgrade(db, "0001")
    with pytest.raises(SchemaOutOfDate, match=r"is at revision 0001.*descent db upgrade") as info:
        check_schema(db)
    assert not isinstance(info.value, SchemaNewerThanCode)
    db.engine.dispose()


def test_a_database_newer_than_this_code_is_told_to_upgrade_descent(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'newer.db'}")
    upgrade(db)
    with db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    with pytest.raises(SchemaNewerThanCode, match=r"revision 9999_from_the_future.*upgrade Descent") as info:
        check_schema(db)
    assert "descent db upgrade" not in str(info.value)
    with pytest.raises(SchemaNewerThanCode, match="upgrade Descent"):
        upgrade(db)  # not Alembic's "Can't locate revision"
    db.engine.dispose()
