"""Journal tables.  ``events`` is the append-only log; the other tables are the current state, kept in the
same transactions, so recovery reads state directly and ``tickguard trades`` can filter it.

Money and quantities are :class:`~tickguard.store.exact.Exact` (``NUMERIC`` on PostgreSQL, ``TEXT`` on SQLite,
``Decimal`` in Python; a float is refused); so are trigger levels (``legs.level``, exact prices on the grid).
Volatility figures are statistics and stay ``Float``."""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from tickguard.store.exact import Exact

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
metadata = sa.MetaData()

trades = sa.Table(
    "trades", metadata,
    sa.Column("trade_id", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.String(64), nullable=False, index=True),
    sa.Column("account", sa.String(64), nullable=False),
    sa.Column("symbol", sa.String(32), nullable=False, index=True),
    sa.Column("side", sa.String(8), nullable=False),
    sa.Column("qty", Exact("trades.qty"), nullable=False),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("request", JSON, nullable=False),
    sa.Column("snapshot", JSON, nullable=False),
    sa.Column("created_ns", sa.BigInteger, nullable=False),
    sa.Column("updated_ns", sa.BigInteger, nullable=False),
)

orders = sa.Table(
    "orders", metadata,
    sa.Column("order_key", sa.String(128), primary_key=True),
    sa.Column("trade_id", sa.String(64), sa.ForeignKey("trades.trade_id"), nullable=False, index=True),
    sa.Column("leg", sa.String(16), nullable=False),
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("account", sa.String(64), nullable=False),
    sa.Column("symbol", sa.String(32), nullable=False),
    sa.Column("action", sa.String(4), nullable=False),
    sa.Column("qty", Exact("orders.qty"), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # not indexed: nothing reads orders by status (0008)
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("broker_order_id", sa.BigInteger),
    sa.Column("filled", Exact("orders.filled"), nullable=False, default=Decimal(0)),
    sa.Column("avg_price", Exact("orders.avg_price"), nullable=False, default=Decimal(0)),
    sa.Column("commission", Exact("orders.commission"), nullable=False, default=Decimal(0)),
    sa.Column("reason", sa.Text, nullable=False, default=""),
    sa.Column("intent", JSON, nullable=False),
    sa.Column("created_ns", sa.BigInteger, nullable=False),
    sa.Column("updated_ns", sa.BigInteger, nullable=False),
    # the broker session that placed it (IB: client id and gateway), "" before 0009 (runtime/recovery.py's guard)
    sa.Column("placed_through", sa.String(128), nullable=False, default="", server_default=""),
)

fills = sa.Table(
    "fills", metadata,
    sa.Column("exec_id", sa.String(64), primary_key=True),
    sa.Column("order_key", sa.String(128), sa.ForeignKey("orders.order_key"), nullable=False, index=True),
    sa.Column("trade_id", sa.String(64), nullable=False, index=True),
    sa.Column("qty", Exact("fills.qty"), nullable=False),
    sa.Column("price", Exact("fills.price"), nullable=False),
    sa.Column("commission", Exact("fills.commission")),
    sa.Column("ts_ns", sa.BigInteger, nullable=False),
)

events = sa.Table(
    "events", metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("ts_ns", sa.BigInteger, nullable=False),
    sa.Column("user_id", sa.String(64)),
    sa.Column("account", sa.String(64)),
    sa.Column("trade_id", sa.String(64), index=True),
    sa.Column("order_key", sa.String(128)),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("data", JSON, nullable=False),
)

volatility = sa.Table(
    "volatility", metadata,
    sa.Column("symbol", sa.String(32), primary_key=True),
    sa.Column("atr", sa.Float, nullable=False),
    sa.Column("adr", sa.Float, nullable=False),
    sa.Column("ts_ns", sa.BigInteger, nullable=False),
)

legs = sa.Table(
    "legs", metadata,
    sa.Column("trade_id", sa.String(64), sa.ForeignKey("trades.trade_id"), primary_key=True),
    sa.Column("name", sa.String(16), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("fraction", Exact("legs.fraction"), nullable=False),
    sa.Column("level", Exact("legs.level")),
    sa.Column("armed", sa.Boolean, nullable=False),
    sa.Column("fired", sa.Integer, nullable=False),
    sa.Column("filled", Exact("legs.filled"), nullable=False),
    sa.Column("inflight", Exact("legs.inflight"), nullable=False),
    sa.Column("updated_ns", sa.BigInteger, nullable=False),
)

journal_meta = sa.Table(
    "journal_meta", metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("value", sa.String(200), nullable=False),
)
