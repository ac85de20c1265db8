"""Migration 0008: the index on ``orders.status`` goes (nothing reads orders by status); a journal from before keeps
every order, and the downgrade builds the index again."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from test_journal_id_migration import _alembic, _old_journal_with_an_order

from tickguard.store.journal import Journal


def _order_indexes(target: str) -> set[str]:
    engine = sa.create_engine(target if "://" in target else f"sqlite:///{target}")
    with engine.connect() as conn:
        names = {ix["name"] for ix in sa.inspect(conn).get_indexes("orders")}
    engine.dispose()
    return names


def test_a_journal_from_before_loses_the_status_index_and_keeps_its_orders_and_the_downgrade_restores_it(
        journal_target):
    _old_journal_with_an_order(journal_target, "0007")  # as tickguard wrote it before (opening would migrate)
    assert "ix_orders_status" in _order_indexes(journal_target)
    j = Journal.open(journal_target, create=False)
    assert [o["status"] for o in j.orders_of(["T00001"])] == ["submitted"]
    j.close()
    assert "ix_orders_status" not in _order_indexes(journal_target)
    assert "ix_orders_trade_id" in _order_indexes(journal_target)  # the one recovery reads by stays
    _alembic(journal_target, command.downgrade, "0007")
    assert "ix_orders_status" in _order_indexes(journal_target)
