"""Exact numbers in the journal: money and quantities are ``decimal.Decimal`` from the engine to the database
and back, never a float on the way.

* PostgreSQL: an unconstrained ``NUMERIC``.  psycopg sends a ``Decimal`` as a numeric and returns one, exact to
  every digit (``NUMERIC`` keeps the scale it was given: ``Decimal("1.50")`` comes back as ``Decimal("1.50")``).
* SQLite: ``TEXT`` holding the Decimal in plain notation (``format(d, "f")``: ``"0.1"``, ``"100"``,
  ``"0.0000001"``, never ``"1E-7"``), read back with ``Decimal(text)``.  SQLite has no decimal type, and
  SQLAlchemy's ``Numeric`` on SQLite goes through float both ways (the dialect has no native decimal support:
  the bind processor is ``float()``, SQLite stores a REAL, the result processor makes a Decimal of the float):
  ``Decimal("123456789.123456789")`` comes back from a ``Numeric`` column as ``Decimal("123456789.1234567910")``.
  Checked with SQLAlchemy 2.1 and SQLite 3.40 (tests/store/test_exact_money_migration.py shows it).  The plain
  form is what PostgreSQL's ``NUMERIC`` returns too, so both backends read back the same Decimal, scale included
  (a negative zero is stored as zero, as PostgreSQL does).

Any other database gets the TEXT form too: SQLAlchemy's ``Numeric`` binds through ``float()`` wherever the
dialect does not declare native decimals (even psycopg's dialect does not; its own numeric type skips the float),
so ``NUMERIC`` is used only where it is known to be exact.

On the way in the type takes ``Decimal`` and ``int`` (``numbers.Integral``, not ``bool``); on the way out it
gives ``Decimal``; NULL stays ``None``.  A ``float`` is refused with a :class:`NotExactError` (a ``TypeError``)
naming the column - a float that creeps back into the engine is caught by whatever test journals it - and a
NaN or infinite Decimal with a :class:`NotFiniteError` (a ``ValueError``).  SQLAlchemy wraps errors raised
while binding in ``StatementError``; ``Journal`` unwraps these two, so callers see them as they are.

Limit: on SQLite the column is text, so an SQL comparison or ``ORDER BY`` on it is textual, not numeric.  The
journal never filters or sorts on these columns; a query that needs to must do it in Python.
"""

from __future__ import annotations

import json
import numbers
from decimal import Decimal
from typing import Any

import sqlalchemy as sa


class NotExactError(TypeError):
    """A value that is not an exact number (a float, a string, ...) was handed to an exact journal column."""


class NotFiniteError(ValueError):
    """A NaN or infinite Decimal was handed to an exact journal column."""


def plain(d: Decimal) -> str:
    """``d`` in plain notation, every digit kept, never an exponent: ``Decimal("1E+2")`` -> ``"100"``,
    ``Decimal("1.50")`` -> ``"1.50"``, ``Decimal("-0")`` -> ``"0"``.  No context rounding is involved."""
    if d.is_zero():
        d = abs(d)
    return format(d, "f")


def to_exact(value: Any, column: str) -> Decimal | None:
    """``value`` as a finite Decimal, or None for None; anything inexact is refused naming ``column``."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise NotFiniteError(f"journal column {column} got {value}: money and quantities must be finite")
        return value
    if isinstance(value, float):
        raise NotExactError(f"journal column {column} got a float {float(value)!r}: money and quantities must be "
                            "Decimal")
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return Decimal(int(value))
    raise NotExactError(f"journal column {column} got a {type(value).__name__} {value!r}: money and quantities "
                        "must be Decimal")


def _numeric(dialect: sa.Dialect) -> bool:
    """Whether the column is a real ``NUMERIC`` (PostgreSQL) rather than text."""
    return dialect.name == "postgresql"


class Exact(sa.types.TypeDecorator[Decimal]):
    """An exact number column; ``column`` ("table.name") is only used to name it in refusals."""

    impl = sa.Numeric
    cache_ok = True

    def __init__(self, column: str) -> None:
        super().__init__()
        self.column = column

    @property
    def python_type(self) -> type[Decimal]:
        return Decimal

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if _numeric(dialect):
            return dialect.type_descriptor(sa.Numeric(asdecimal=True))
        return dialect.type_descriptor(sa.Text())

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Decimal | str | None:
        d = to_exact(value, self.column)
        if d is None or _numeric(dialect):
            return d
        return plain(d)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Decimal | None:
        if value is None or isinstance(value, Decimal):
            return value
        if isinstance(value, float):  # only if the column is not what the schema says (a REAL left behind)
            return Decimal(repr(value))
        return Decimal(value)


def _json_default(obj: object) -> str:
    if isinstance(obj, Decimal):
        return plain(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


# json.dumps(obj, default=...) builds an encoder per call; the journal encodes every event row and snapshot of an
# exit before it is sent, so one encoder with json.dumps's own settings serves them all (the same text)
_ENCODE = json.JSONEncoder(default=_json_default).encode


def json_dumps(obj: Any) -> str:
    """The journal's JSON serialiser: a Decimal becomes its plain string (``Decimal("0.1")`` -> ``"0.1"``),
    exact, never through a float; everything else as ``json.dumps`` does it."""
    return _ENCODE(obj)
