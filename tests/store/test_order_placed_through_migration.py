"""Migration 0009: each order row says which broker session placed it; a journal from before keeps every order, its
rows say nothing (empty - recovery then re-sends as it always did), and the downgrade drops the column."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from test_journal_id_migration import _alembic, _old_journal_with_an_order

from tickguard.store.journal import Journal


def _columns(target: str) -> set[str]:
    engine = sa.create_engine(target if "://" in target else f"sqlite:///{target}")
    with engine.connect() as conn:
        names = {c["name"] for c in sa.inspect(conn).get_columns("orders")}
    engine.dispose()
    return names


def test_a_journal_from_before_keeps_its_orders_placed_through_nobody_and_the_downgrade_drops_the_column(
        journal_target):
    _old_journal_with_an_order(journal_target, "0008")
    assert "placed_through" not in _columns(journal_target)
    j = Journal.open(journal_target, create=False)
    assert [(o["status"], o["placed_through"]) for o in j.orders_of(["T00001"])] == [("submitted", "")]
    j.update_order("tg:T00001:entry", status="submitted", placed_through="IB client id 7 at gw:4002")
    assert j.orders_of(["T00001"])[0]["placed_through"] == "IB client id 7 at gw:4002"
    j.close()
    _alembic(journal_target, command.downgrade, "0008")
    assert "placed_through" not in _columns(journal_target)
