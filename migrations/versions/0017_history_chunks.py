"""History chunks: a job's steps as arrays, one row per chunk, and the view ``history_rows``

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 22:00:00

One row of ``history`` per recorded step made a history cost a tuple and an index entry a step:
the store wrote at under half a plain COPY's rows/s, and a 10,000-job sweep spent most of its
time storing rows. ``history_chunks`` holds consecutive steps of one job as arrays (steps, f,
grad_norm, lr, x and grad flattened), at most about 7,600 bytes of values a chunk, so that on
PostgreSQL a chunk stays one inline, uncompressed tuple (``toast_tuple_target`` 8160, arrays
stored EXTERNAL: never compressed). On SQLite the arrays are JSON text (NaN the string "NaN",
infinities ``1e999``/``-1e999``; x and grad an array per row). The view ``history_rows`` shows a
history as one row per step: ``job_id, step, f, grad_norm, lr, x, grad``.

Existing histories move into chunks of as many steps as that size allows (a row without x in a
job that recorded x reads as NaNs, as a page of rows always showed it); ``history`` is dropped.
The downgrade moves every chunk's rows back into ``history``.
"""
from __future__ import annotations

import json
import math
from typing import Any, Iterator

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None

CHUNK_BYTES = 7_600  # as service.store.chunks.CHUNK_BYTES
DOUBLE = sa.Float(precision=53).with_variant(postgresql.DOUBLE_PRECISION(), "postgresql")
FLOAT_ARRAY = sa.Text().with_variant(postgresql.ARRAY(postgresql.DOUBLE_PRECISION()), "postgresql")
ARRAYS = ("steps", "f", "grad_norm", "lr", "x", "grad")

PG_VIEW = """CREATE VIEW history_rows AS
SELECT c.job_id, u.step, u.f, u.grad_norm, u.lr,
       c.x[(u.i - 1) * c.width + 1 : u.i * c.width] AS x,
       c.grad[(u.i - 1) * c.width + 1 : u.i * c.width] AS grad
FROM history_chunks AS c
CROSS JOIN LATERAL unnest(c.steps, c.f, c.grad_norm, c.lr) WITH ORDINALITY AS u(step, f, grad_norm, lr, i)"""

SQLITE_VIEW = """CREATE VIEW history_rows AS
SELECT c.job_id AS job_id, s.value AS step,
       json_extract(c.f, '$[' || s.key || ']') AS f,
       json_extract(c.grad_norm, '$[' || s.key || ']') AS grad_norm,
       json_extract(c.lr, '$[' || s.key || ']') AS lr,
       json_extract(c.x, '$[' || s.key || ']') AS x,
       json_extract(c.grad, '$[' || s.key || ']') AS grad
FROM history_chunks AS c, json_each(c.steps) AS s"""

# Each job's rows numbered into groups of a chunk's size (by the job's widths of x and grad).
PG_NUMBERED = f"""SELECT job_id, step, f, grad_norm, lr, x, grad, wx, wg,
       (row_number() OVER (PARTITION BY job_id ORDER BY step) - 1) / greatest(1, {CHUNK_BYTES} / (28 + 8 * (wx + wg))) AS g
FROM (SELECT h.*, max(coalesce(cardinality(h.x), 0)) OVER (PARTITION BY h.job_id) AS wx,
             max(coalesce(cardinality(h.grad), 0)) OVER (PARTITION BY h.job_id) AS wg FROM history AS h) AS t"""


def _flat(name: str, width: str) -> str:
    return (f"SELECT job_id, g, array_agg(e ORDER BY step, o) AS a FROM numbered CROSS JOIN LATERAL "
            f"unnest(coalesce({name}, array_fill('NaN'::float8, ARRAY[{width}]))) WITH ORDINALITY AS u(e, o) "
            "GROUP BY job_id, g")


PG_MOVE = f"""WITH numbered AS ({PG_NUMBERED}),
grouped AS (SELECT job_id, g, min(step) AS first_step, max(step) AS last_step, count(*) AS n_rows,
                   max(greatest(wx, wg)) AS width, array_agg(step ORDER BY step) AS steps,
                   array_agg(f ORDER BY step) AS f, array_agg(grad_norm ORDER BY step) AS grad_norm,
                   array_agg(lr ORDER BY step) AS lr, bool_or(x IS NOT NULL) AS has_x,
                   bool_or(grad IS NOT NULL) AS has_grad
            FROM numbered GROUP BY job_id, g),
xs AS ({_flat("x", "wx")}),
grads AS ({_flat("grad", "wg")})
INSERT INTO history_chunks (job_id, first_step, last_step, n_rows, width, steps, f, grad_norm, lr, x, grad)
SELECT c.job_id, c.first_step, c.last_step, c.n_rows, c.width, c.steps, c.f, c.grad_norm, c.lr,
       CASE WHEN c.has_x THEN coalesce(xs.a, '{{}}') END, CASE WHEN c.has_grad THEN coalesce(grads.a, '{{}}') END
FROM grouped AS c LEFT JOIN xs ON xs.job_id = c.job_id AND xs.g = c.g
LEFT JOIN grads ON grads.job_id = c.job_id AND grads.g = c.g"""


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    int_array = sa.Text().with_variant(postgresql.ARRAY(sa.Integer()), "postgresql")
    op.create_table(
        "history_chunks",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("first_step", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_step", sa.Integer(), nullable=False),
        sa.Column("n_rows", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("steps", int_array, nullable=False),
        sa.Column("f", FLOAT_ARRAY, nullable=False),
        sa.Column("grad_norm", FLOAT_ARRAY, nullable=False),
        sa.Column("lr", FLOAT_ARRAY, nullable=False),
        sa.Column("x", FLOAT_ARRAY, nullable=True),
        sa.Column("grad", FLOAT_ARRAY, nullable=True),
        sa.PrimaryKeyConstraint("job_id", "first_step", name="pk_history_chunks"),
    )
    if postgres:
        op.execute("ALTER TABLE history_chunks SET (toast_tuple_target = 8160, autovacuum_vacuum_scale_factor = 0.01, "
                   "autovacuum_vacuum_threshold = 1000)")
        op.execute("ALTER TABLE history_chunks " + ", ".join(f"ALTER COLUMN {c} SET STORAGE EXTERNAL" for c in ARRAYS))
        op.execute(PG_MOVE)
        op.execute(PG_VIEW)
    else:
        _sqlite_up(bind)
        op.execute(SQLITE_VIEW)
    # Chunks never overlap, so a chunk's last step is as unique as its first: the renewal's check
    # that a worker's last written step is stored, and a write's check for rows already stored,
    # find it by this index whatever the statistics.
    op.create_index("ux_history_chunks_job_last", "history_chunks", ["job_id", "last_step"], unique=True)
    if postgres:
        op.execute("ANALYZE history_chunks")
    op.drop_table("history")


def downgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    # ``history`` as revision 0001 made it: one row per step
    op.create_table("history", sa.Column("job_id", sa.String(length=36), nullable=False),
                    sa.Column("step", sa.Integer(), autoincrement=False, nullable=False),
                    *(sa.Column(name, DOUBLE, nullable=False) for name in ("f", "grad_norm", "lr")),
                    *(sa.Column(name, FLOAT_ARRAY, nullable=True) for name in ("x", "grad")),
                    sa.PrimaryKeyConstraint("job_id", "step"))
    if postgres:
        op.execute("ALTER TABLE history SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 50000)")
        op.execute("INSERT INTO history (job_id, step, f, grad_norm, lr, x, grad) "
                   "SELECT job_id, step, f, grad_norm, lr, x, grad FROM history_rows")
    else:
        _sqlite_down(bind)
    op.execute("DROP VIEW history_rows")
    op.drop_table("history_chunks")


# -- SQLite: the values through Python, as service.store.chunks writes and reads them ------------

def _json_floats(values: list[Any]) -> str:
    text = json.dumps(values, separators=(",", ":"))
    return text.replace("NaN", '"NaN"').replace("Infinity", "1e999")


def _float(value: Any) -> float:
    return float(value)  # SQLite's REAL, or the text 'NaN'


def _old_rows(bind: Any) -> Iterator[list[tuple[Any, ...]]]:
    """Each job's rows of ``history``, in step order, a job at a time."""
    rows: list[tuple[Any, ...]] = []
    for row in bind.exec_driver_sql("SELECT job_id, step, f, grad_norm, lr, x, grad FROM history ORDER BY job_id, step"):
        if rows and rows[-1][0] != row[0]:
            yield rows
            rows = []
        rows.append(tuple(row))
    if rows:
        yield rows


def _sqlite_up(bind: Any) -> None:
    for rows in _old_rows(bind):
        xs = [None if r[5] is None else json.loads(r[5]) for r in rows]
        grads = [None if r[6] is None else json.loads(r[6]) for r in rows]
        wx = max((len(v) for v in xs if v is not None), default=0)
        wg = max((len(v) for v in grads if v is not None), default=0)
        size = max(1, CHUNK_BYTES // (28 + 8 * (wx + wg)))
        out = []
        for lo in range(0, len(rows), size):
            part = rows[lo:lo + size]

            def arrays(values: list[Any], width: int) -> str | None:
                if all(v is None for v in values):
                    return None
                return _json_floats([[math.nan] * width if v is None else [float(e) for e in v] for v in values])

            out.append((part[0][0], part[0][1], part[-1][1], len(part), max(wx, wg), json.dumps([r[1] for r in part]),
                        _json_floats([_float(r[2]) for r in part]), _json_floats([_float(r[3]) for r in part]),
                        _json_floats([_float(r[4]) for r in part]), arrays(xs[lo:lo + size], wx),
                        arrays(grads[lo:lo + size], wg)))
        bind.exec_driver_sql("INSERT INTO history_chunks (job_id, first_step, last_step, n_rows, width, steps, f, "
                             "grad_norm, lr, x, grad) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", out)


def _values(text: str) -> list[Any]:
    return json.loads(text.replace('"NaN"', "NaN"))


def _sqlite_down(bind: Any) -> None:
    def stored(value: float) -> Any:
        return "NaN" if math.isnan(value) else value  # as FaithfulFloat stores it

    def array(values: list[Any] | None, i: int) -> str | None:
        return None if values is None else json.dumps(values[i], allow_nan=True)

    for chunk in bind.exec_driver_sql("SELECT job_id, steps, f, grad_norm, lr, x, grad FROM history_chunks").all():
        steps, f, gn, lr = json.loads(chunk[1]), _values(chunk[2]), _values(chunk[3]), _values(chunk[4])
        xs = None if chunk[5] is None else _values(chunk[5])
        grads = None if chunk[6] is None else _values(chunk[6])
        bind.exec_driver_sql("INSERT INTO history (job_id, step, f, grad_norm, lr, x, grad) VALUES (?, ?, ?, ?, ?, ?, ?)",
                             [(chunk[0], step, stored(f[i]), stored(gn[i]), stored(lr[i]), array(xs, i), array(grads, i))
                              for i, step in enumerate(steps)])
