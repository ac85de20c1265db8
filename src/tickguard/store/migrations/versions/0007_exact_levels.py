"""Trigger levels become exact: ``legs.level`` is ``NUMERIC`` on PostgreSQL and ``TEXT`` holding the number on
SQLite, like money since 0005.  The engine now holds every level as whole ticks and writes it as the exact
decimal price (``169.39``, never ``169.39000000000001``).

Conversion rule for levels already journaled as floats: the Decimal of the shortest repr, ``Decimal(repr(x))``,
as 0005 did for money; the next snapshot of a live trade rewrites its levels on the grid anyway.  The downgrade
makes each Decimal the nearest float.  On SQLite the table is rebuilt (batch mode).

Spelled out here rather than imported from ``tickguard.store.exact``: a migration must mean the same thing
whatever the code becomes.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

EXACT = sa.Numeric().with_variant(sa.Text(), "sqlite")


def _to_decimal(x: Any) -> Decimal | None:
    if x is None or isinstance(x, Decimal):
        return x
    if isinstance(x, float):
        return Decimal(repr(x))
    return Decimal(x)


def _to_text(x: Any) -> str | None:
    d = _to_decimal(x)
    return None if d is None else format(abs(d) if d.is_zero() else d, "f")


def _to_float(x: Any) -> float | None:
    return None if x is None else float(Decimal(x) if isinstance(x, str) else x)


def _convert(new_type: sa.types.TypeEngine[Any], old_type: sa.types.TypeEngine[Any],
             value: Callable[[Any], Any]) -> None:
    conn = op.get_bind()
    legs = sa.table("legs", sa.column("trade_id"), sa.column("name"), sa.column("level"))
    rows = conn.execute(sa.select(legs.c.trade_id, legs.c.name, legs.c.level)).all()
    with op.batch_alter_table("legs") as batch:
        batch.alter_column("level", type_=new_type, existing_type=old_type, existing_nullable=True)
    if rows:
        update = (legs.update().where(legs.c.trade_id == sa.bindparam("k_t"), legs.c.name == sa.bindparam("k_n"))
                  .values(level=sa.bindparam("v")))
        conn.execute(update, [{"k_t": t, "k_n": n, "v": value(level)} for t, n, level in rows])


def upgrade() -> None:
    _convert(EXACT, sa.Float(), _to_text if op.get_bind().dialect.name == "sqlite" else _to_decimal)


def downgrade() -> None:
    _convert(sa.Float(), EXACT, _to_float)
