"""Migration 0006: a journal gets a random id once; one created before gets it on migration, and the orders it
journaled keep the keys they were sent with (recovery matches them as journaled)."""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa
from alembic import command

from tickguard.store.journal import Journal
from tickguard.store.journal_open import _alembic_config


def _alembic(target: str, action, revision: str) -> None:
    engine = sa.create_engine(target if "://" in target else f"sqlite:///{target}")
    with engine.begin() as conn:
        cfg = _alembic_config()
        cfg.attributes["connection"] = conn
        action(cfg, revision)
    engine.dispose()


def _old_journal_with_an_order(target: str, revision: str) -> None:
    """A journal at schema ``revision`` (as an older tickguard left it) holding trade T00001 and its submitted entry
    order ``tg:T00001:entry`` - written as raw rows of that schema, the way that version wrote them."""
    _alembic(target, command.upgrade, revision)
    engine = sa.create_engine(target if "://" in target else f"sqlite:///{target}")
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO trades VALUES ('T00001', 'alice', 'DU1', 'AAA', 'long', '100', 'open', "
                             "'{}', '{}', 1, 1)"))
        conn.execute(sa.text("INSERT INTO orders VALUES ('tg:T00001:entry', 'T00001', 'entry', 'alice', 'DU1', 'AAA', "
                             "'BUY', '100', 'submitted', 1, 7, '0', '0', '0', '', '{}', 2, 2)"))
    engine.dispose()


def test_a_journal_from_before_ids_gets_one_and_keeps_its_keys(journal_target):
    _old_journal_with_an_order(journal_target, "0005")  # as tickguard wrote it before ids (opening would migrate)
    j = Journal.open(journal_target, create=False)
    jid = j.journal_id
    assert len(jid) == 8 and int(jid, 16) >= 0
    [order] = j.orders_of(["T00001"])
    assert order["order_key"] == "tg:T00001:entry" and order["qty"] == Decimal(100)
    j.close()
    assert Journal.open(journal_target, create=False).journal_id == jid  # created once, never again


def test_the_downgrade_drops_the_id_and_a_new_upgrade_makes_a_new_one(journal_target):
    j = Journal.open(journal_target)
    jid = j.journal_id
    j.close()
    _alembic(journal_target, command.downgrade, "0005")
    engine = sa.create_engine(journal_target if "://" in journal_target else f"sqlite:///{journal_target}")
    with engine.connect() as conn:
        assert "journal_meta" not in sa.inspect(conn).get_table_names()
    engine.dispose()
    j = Journal.open(journal_target)
    assert j.journal_id != jid
    j.close()
