"""Money and quantities become exact: ``NUMERIC`` on PostgreSQL, ``TEXT`` holding the number on SQLite (which
has no decimal type), read and written as ``Decimal`` by ``tickguard.store.exact.Exact``.

Columns: trades.qty; orders.qty, filled, avg_price, commission; fills.qty, price, commission; legs.fraction,
filled, inflight.  legs.level and volatility.atr/adr stay floats (trigger levels are still floats in the engine).

Conversion rule: a float already in the journal becomes the Decimal of its shortest repr, ``Decimal(repr(x))``,
scale included: 0.1 -> 0.1, 100.0 -> 100.0 (equal to ``Decimal("100")``), 0.30000000000000004 stays
0.30000000000000004 (the float that was journaled, not a guess at what was meant), 1e-07 -> 0.0000001.
The conversion is done in Python, not by the databases' casts: PostgreSQL's float8 -> numeric cast and SQLite's
CAST(real AS TEXT) both round to 15 significant digits.  The downgrade makes each Decimal the nearest float.

On SQLite the tables are rebuilt (batch mode).  ``trades`` and ``orders`` are referenced by foreign keys, so the
rebuild must run with ``PRAGMA foreign_keys=OFF`` (``Journal`` migrates SQLite that way and checks the keys
afterwards); a bare SQLite connection has them off anyway.

The types and the text form are spelled out here rather than taken from ``tickguard.store.exact``: a migration
must mean the same thing whatever the code becomes.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

EXACT = sa.Numeric().with_variant(sa.Text(), "sqlite")

# table: (primary key, exact columns, the nullable ones among them)
COLUMNS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "trades": (("trade_id",), ("qty",), ()),
    "orders": (("order_key",), ("qty", "filled", "avg_price", "commission"), ()),
    "fills": (("exec_id",), ("qty", "price", "commission"), ("commission",)),
    "legs": (("trade_id", "name"), ("fraction", "filled", "inflight"), ()),
}


def _to_decimal(x: Any) -> Decimal | None:
    if x is None or isinstance(x, Decimal):
        return x
    if isinstance(x, float):
        return Decimal(repr(x))
    return Decimal(x)  # int, or text already written as a number


def _to_float(x: Any) -> float | None:
    return None if x is None else float(Decimal(x) if isinstance(x, str) else x)


def _convert(new_type: sa.types.TypeEngine[Any], old_type: sa.types.TypeEngine[Any],
             value: Callable[[Any], Any]) -> None:
    """Change every column of ``COLUMNS`` from ``old_type`` to ``new_type``, each value rewritten by ``value``."""
    conn = op.get_bind()
    for name, (pk, cols, nullable) in COLUMNS.items():
        table = sa.table(name, *(sa.column(c) for c in pk + cols))
        rows = conn.execute(sa.select(*(table.c[c] for c in pk + cols))).all()
        with op.batch_alter_table(name) as batch:
            for col in cols:
                batch.alter_column(col, type_=new_type, existing_type=old_type, existing_nullable=col in nullable)
        if not rows:
            continue
        update = (table.update().where(*(table.c[c] == sa.bindparam(f"k_{c}") for c in pk))
                  .values({c: sa.bindparam(f"v_{c}") for c in cols}))
        conn.execute(update, [{**{f"k_{c}": row[i] for i, c in enumerate(pk)},
                               **{f"v_{c}": value(row[len(pk) + i]) for i, c in enumerate(cols)}}
                              for row in rows])


def _to_text(x: Any) -> str | None:
    """SQLite's form: the Decimal in plain notation (no exponent), a negative zero as zero."""
    d = _to_decimal(x)
    return None if d is None else format(abs(d) if d.is_zero() else d, "f")


def upgrade() -> None:
    _convert(EXACT, sa.Float(), _to_text if op.get_bind().dialect.name == "sqlite" else _to_decimal)


def downgrade() -> None:
    _convert(sa.Float(), EXACT, _to_float)
