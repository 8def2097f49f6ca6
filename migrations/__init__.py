"""Alembic migrations; a wheel installs this folder as ``service.migrations`` (see pyproject.toml)."""
