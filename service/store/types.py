"""Column types that keep floats faithful on every backend.

PostgreSQL stores NaN and infinities natively (double precision and double precision[]).
SQLite turns a NaN REAL into NULL, so there NaN is stored as the text 'NaN' (a REAL column keeps
text that is not a number as text) and read back as a float; arrays are JSON text with
NaN/Infinity tokens.
"""
from __future__ import annotations

import json
import math
from typing import Any

from sqlalchemy import Float, Integer, Text
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

    def bind_processor(self, dialect: Dialect) -> Any:
        # Replaces Float's own processor on SQLite, which would turn "NaN" back into a float.
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        return lambda value: "NaN" if isinstance(value, float) and math.isnan(value) else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return float(value) if isinstance(value, str) else value


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


class ChunkArray(TypeDecorator):
    """A history chunk's array (``service.store.chunks``), handed over as the driver gives it:
    ``integer[]`` (``ints``) or ``double precision[]`` on PostgreSQL, JSON text elsewhere."""

    impl = Text
    cache_ok = True

    def __init__(self, ints: bool = False) -> None:
        super().__init__()
        self.ints = ints

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.ARRAY(Integer() if self.ints else postgresql.DOUBLE_PRECISION()))
        return dialect.type_descriptor(Text())
