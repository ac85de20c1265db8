"""Migration 0004: a journal written when the executor said ``working`` opens with the states of
``core.order_state``, so it recovers; and the downgrade gives an older tickguard words it knows."""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa
from alembic import command

from tickguard.core.order_state import OrderStatus
from tickguard.store.journal import Journal
from tickguard.store.journal_open import _alembic_config


def _engine(target: str) -> sa.Engine:
    return sa.create_engine(target if "://" in target else f"sqlite:///{target}")


def _order(key: str, status: str, filled: int) -> dict:
    return dict(order_key=key, trade_id="T00001", leg="stop", user_id="alice", account="DU1", symbol="AAA",
                action="SELL", qty=Decimal(100), status=status, attempts=1, broker_order_id=7, filled=Decimal(filled),
                avg_price=Decimal(0), commission=Decimal(0), reason="", intent={"key": key}, created_ns=2,
                updated_ns=2)


def _journal_with(target: str, orders: dict[str, tuple[str, int]]) -> None:
    j = Journal.open(target)
    j.insert_trade(dict(trade_id="T00001", user_id="alice", account="DU1", symbol="AAA", side="long", qty=Decimal(100),
                        state="exiting", request={"symbol": "AAA"}, snapshot={}, created_ns=1, updated_ns=1))
    for key, (status, filled) in orders.items():
        j.insert_order(_order(key, status, filled))
    j.close()


def _downgrade(target: str, revision: str) -> None:
    engine = _engine(target)
    with engine.begin() as conn:
        cfg = _alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
    engine.dispose()


def _statuses(target: str) -> dict[str, str]:
    j = Journal.open(target, create=False)
    try:
        return {row["order_key"]: row["status"] for row in j.orders_of(["T00001"])}
    finally:
        j.close()


def test_an_old_journal_with_working_orders_opens_with_submitted_and_partially_filled(journal_target):
    _journal_with(journal_target, {"a": ("submitting", 0), "b": ("submitting", 0), "c": ("submitting", 40),
                                   "d": ("retry_wait", 0), "e": ("filled", 100)})
    _downgrade(journal_target, "0003")  # make it a journal of revision 0003, as the old executor wrote it
    engine = _engine(journal_target)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET status = 'working' WHERE order_key IN ('b', 'c')"))
    engine.dispose()
    statuses = _statuses(journal_target)  # opening migrates to head
    assert statuses == {"a": "submitting", "b": "submitted", "c": "partially_filled", "d": "retry_wait",
                        "e": "filled"}
    assert all(OrderStatus(s) for s in statuses.values())  # every stored value reads back as a state


def test_the_downgrade_writes_words_the_old_executor_knew(journal_target):
    _journal_with(journal_target, {"a": ("submitted", 0), "b": ("partially_filled", 40),
                                   "c": ("cancelling", 0), "d": ("unknown", 0), "e": ("cancelled", 0)})
    _downgrade(journal_target, "0003")
    engine = _engine(journal_target)
    with engine.connect() as conn:
        rows = dict(conn.execute(sa.text("SELECT order_key, status FROM orders")).all())
    engine.dispose()
    assert rows == {"a": "working", "b": "working", "c": "working", "d": "submitting", "e": "cancelled"}
