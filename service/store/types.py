"""Column types that keep floats faithful on every backend.

PostgreSQL stores NaN and infinities natively (double precision and double precision[]).
SQLite turns a NaN REAL into NULL, so there a NULL in a float column reads back as NaN (those
columns are never legitimately NULL); arrays are JSON text with NaN/Infinity tokens.
"""
from __future__ import annotations

import json
import math
from typing import Any

from sqlalchemy import Float, Text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine


class FaithfulFloat(TypeDecorator):
    impl = Float(precision=53)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.DOUBLE_PRECISION())
        return dialect.type_descriptor(Float(precision=53))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is not None and dialect.name == "sqlite" and math.isnan(value):
            return None
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None and dialect.name == "sqlite":
            return math.nan
        return value


class FloatArray(TypeDecorator):
    """A flat list of floats: ``double precision[]`` on PostgreSQL, JSON text elsewhere."""

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.ARRAY(postgresql.DOUBLE_PRECISION()))
        return dialect.type_descriptor(Text())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name == "postgresql":
            return value
        return json.dumps(value, allow_nan=True)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name == "postgresql":
            return value
        return json.loads(value)
