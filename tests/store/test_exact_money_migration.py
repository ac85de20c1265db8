"""Exact money and quantities in the journal (migration 0005 and ``tickguard.store.exact.Exact``): an old journal
of floats opens with exact Decimals, a new one round-trips Decimals to the last digit on SQLite and PostgreSQL,
JSON columns carry Decimals as exact strings, and a float handed to the journal is refused naming the column."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
import sqlalchemy as sa
from alembic import command

from tickguard.store.exact import Exact
from tickguard.store.journal import Journal
from tickguard.store.journal_open import _alembic_config, head_revision
from tickguard.store.schema import metadata

EXACT_COLUMNS = {"trades.qty", "orders.qty", "orders.filled", "orders.avg_price", "orders.commission", "fills.qty",
                 "fills.price", "fills.commission", "legs.fraction", "legs.filled", "legs.inflight", "legs.level"}


def _engine(target: str) -> sa.Engine:
    return sa.create_engine(target if "://" in target else f"sqlite:///{target}")


def _alembic(target: str, action, revision: str) -> None:
    engine = _engine(target)
    with engine.begin() as conn:
        cfg = _alembic_config()
        cfg.attributes["connection"] = conn
        action(cfg, revision)
    engine.dispose()


def _trade(**values) -> dict:
    return dict(trade_id="T00001", user_id="alice", account="DU1", symbol="AAA", side="long", qty=Decimal(100),
                state="open", request={"symbol": "AAA"}, snapshot={}, created_ns=1, updated_ns=1) | values


def _order(**values) -> dict:
    return dict(order_key="k", trade_id="T00001", leg="entry", user_id="alice", account="DU1", symbol="AAA",
                action="BUY", qty=Decimal(100), status="submitting", attempts=1, broker_order_id=None,
                filled=Decimal(0), avg_price=Decimal(0), commission=Decimal(0), reason="", intent={"key": "k"},
                created_ns=2, updated_ns=2) | values


def _fill(**values) -> dict:
    return dict(exec_id="e1", order_key="k", trade_id="T00001", qty=Decimal(100), price=Decimal("10.01"),
                commission=None, ts_ns=3) | values


def _leg(**values) -> dict:
    return dict(name="stop", kind="stop", fraction=Decimal(1), level=Decimal("98.5"), armed=True, fired=0,
                filled=Decimal(0),
                inflight=Decimal(0), updated_ns=4) | values


def _old_journal_with_floats(target: str) -> None:
    """A journal as tickguard wrote it at revision 0004: floats in every money and quantity column."""
    _alembic(target, command.upgrade, "0004")
    engine = _engine(target)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO trades VALUES ('T00001', 'alice', 'DU1', 'AAA', 'long', 100.0, 'open', "
                             "'{}', '{}', 1, 1)"))
        conn.execute(sa.text("INSERT INTO orders VALUES ('k', 'T00001', 'entry', 'alice', 'DU1', 'AAA', 'BUY', 100.0, "
                             "'partially_filled', 1, 7, 0.30000000000000004, 10.1, 1e-07, '', '{}', 2, 2)"))
        conn.execute(sa.text("INSERT INTO fills VALUES ('e1', 'k', 'T00001', 0.1, 123.45, NULL, 3), "
                             "('e2', 'k', 'T00001', 2.5, 0.3, -0.35, 4)"))
        conn.execute(sa.text("INSERT INTO legs VALUES ('T00001', 'stop', 'stop', 1.0, 9.5, true, 0, 0.0, 100.0, 5)"))
    engine.dispose()


def test_a_0004_journal_of_floats_opens_with_exact_decimals(journal_target):
    _old_journal_with_floats(journal_target)
    j = Journal.open(journal_target, create=False)  # opening migrates to head (SQLite: with foreign keys on)
    try:
        if j._conn.dialect.name == "sqlite":  # switched off to rebuild the tables, and back on
            assert j._conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        [trade] = j.list_trades()
        [order] = j.orders_of(["T00001"])
        fills = {f["exec_id"]: f for f in j.fills_of(["T00001"])}
        [leg] = j.legs_of(["T00001"])
    finally:
        j.close()
    # Decimal(repr(x)), scale included, on both backends: str() shows the digits and the scale
    assert str(trade["qty"]) == "100.0"
    assert {k: str(order[k]) for k in ("qty", "filled", "avg_price", "commission")} == {
        "qty": "100.0", "filled": "0.30000000000000004", "avg_price": "10.1", "commission": "1E-7"}
    assert [(str(f["qty"]), str(f["price"]), f["commission"]) for f in fills.values()] == [
        ("0.1", "123.45", None), ("2.5", "0.3", Decimal("-0.35"))]
    assert {k: str(leg[k]) for k in ("fraction", "filled", "inflight")} == {
        "fraction": "1.0", "filled": "0.0", "inflight": "100.0"}
    assert str(leg["level"]) == "9.5"  # trigger levels became exact too (migration 0007)
    assert all(isinstance(v, Decimal) for v in (trade["qty"], order["qty"], order["filled"], leg["inflight"]))


def test_the_migrated_journal_keeps_working_and_is_at_head(journal_target):
    _old_journal_with_floats(journal_target)
    j = Journal.open(journal_target, create=False)
    j.update_order("k", status="filled", filled=Decimal("100.0"), commission=Decimal("1.0000001"))
    j.insert_fill(_fill(exec_id="e3", qty=Decimal("97.4"), price=Decimal("10.1")))
    j.close()
    j = Journal.open(journal_target, create=False)
    [order] = j.orders_of(["T00001"])
    assert sum(f["qty"] for f in j.fills_of(["T00001"])) == order["filled"] == Decimal(100)  # exact, not ≈
    j.close()
    engine = _engine(journal_target)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == head_revision()
    engine.dispose()


def test_the_downgrade_gives_the_old_tickguard_floats(journal_target):
    j = Journal.open(journal_target)
    j.insert_trade(_trade(qty=Decimal("0.1")))
    j.insert_order(_order(filled=Decimal("123456789.123456789"), commission=Decimal("-2.5")))
    j.insert_fill(_fill())
    j.put_legs("T00001", [_leg(fraction=Decimal("0.5"))])
    j.close()
    _alembic(journal_target, command.downgrade, "0004")
    engine = _engine(journal_target)
    with engine.connect() as conn:
        order = conn.execute(sa.text("SELECT qty, filled, commission FROM orders")).one()
        trade_qty = conn.execute(sa.text("SELECT qty FROM trades")).scalar()
        fill = conn.execute(sa.text("SELECT price, commission FROM fills")).one()
        fraction = conn.execute(sa.text("SELECT fraction FROM legs")).scalar()
    engine.dispose()
    assert tuple(order) == (100.0, 123456789.123456789, -2.5) and all(type(v) is float for v in order)
    assert (trade_qty, tuple(fill), fraction) == (0.1, (10.01, None), 0.5)
    j = Journal.open(journal_target, create=False)  # and up again
    assert j.list_trades()[0]["qty"] == Decimal("0.1")
    j.close()


VALUES = [Decimal("0.1"), Decimal("123456789.123456789"), Decimal("-2.5")]


@pytest.mark.parametrize("value", VALUES, ids=str)
def test_a_new_journal_round_trips_decimals_exactly(journal_target, value):
    j = Journal.open(journal_target)
    j.insert_trade(_trade(qty=value))
    j.insert_order(_order(qty=value, filled=value, avg_price=value, commission=value))
    j.insert_fill(_fill(qty=value, price=value, commission=value))
    j.put_legs("T00001", [_leg(fraction=value, filled=value, inflight=value, level=value)])
    j.close()
    j = Journal.open(journal_target, create=False)
    read = [j.list_trades()[0]["qty"], *(j.orders_of(["T00001"])[0][k] for k in ("qty", "filled", "avg_price",
                                                                                  "commission")),
            *(j.fills_of(["T00001"])[0][k] for k in ("qty", "price", "commission")),
            *(j.legs_of(["T00001"])[0][k] for k in ("fraction", "filled", "inflight", "level"))]
    j.close()
    assert len(read) == len(EXACT_COLUMNS)
    assert all(type(v) is Decimal and v == value and str(v) == str(value) for v in read), read


def test_storage_is_numeric_on_postgresql_and_plain_text_on_sqlite(journal_target):
    j = Journal.open(journal_target)
    j.insert_trade(_trade(qty=Decimal("1E-7")))
    j.insert_order(_order(filled=Decimal("1E+2"), commission=Decimal("-0.00")))
    j.close()
    engine = _engine(journal_target)
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            stored = conn.execute(sa.text("SELECT typeof(qty), qty FROM trades")).one()
            assert tuple(stored) == ("text", "0.0000001")
            assert tuple(conn.execute(sa.text("SELECT filled, commission FROM orders")).one()) == ("100", "0.00")
        else:
            types = dict(conn.execute(sa.text("SELECT table_name || '.' || column_name, data_type "
                                              "FROM information_schema.columns WHERE table_schema = 'public'")).all())
            assert {c: types[c] for c in EXACT_COLUMNS} == dict.fromkeys(EXACT_COLUMNS, "numeric")
            assert types["volatility.atr"] == "double precision"  # a statistic, not a price
    engine.dispose()
    j = Journal.open(journal_target, create=False)
    [order] = j.orders_of(["T00001"])
    assert (str(j.list_trades()[0]["qty"]), str(order["filled"]), str(order["commission"])) == ("1E-7", "100", "0.00")
    j.close()


@pytest.mark.parametrize(("write", "column"), [
    (lambda j: j.insert_trade(_trade(qty=0.1)), "trades.qty"),
    (lambda j: j.insert_order(_order(order_key="k2", avg_price=0.1)), "orders.avg_price"),
    (lambda j: j.update_order("k", status="filled", filled=0.1), "orders.filled"),
    (lambda j: j.insert_fill(_fill(commission=0.1)), "fills.commission"),
    (lambda j: j.put_legs("T00001", [_leg(inflight=0.1)]), "legs.inflight"),
])
def test_a_float_is_refused_naming_the_column(journal_target, write, column):
    j = Journal.open(journal_target)
    j.insert_trade(_trade())
    j.insert_order(_order())
    j.put_legs("T00001", [_leg()])
    with pytest.raises(TypeError, match=rf"^journal column {column} got a float 0.1: money and quantities must "
                                        "be Decimal$"):
        write(j)
    j.insert_fill(_fill(exec_id="after"))  # the journal is still usable and nothing of the refused write is there
    assert [o["filled"] for o in j.orders_of(["T00001"])] == [Decimal(0)]
    assert [f["exec_id"] for f in j.fills_of(["T00001"])] == ["after"]
    assert [leg["inflight"] for leg in j.legs_of(["T00001"])] == [Decimal(0)]
    j.close()


def test_a_float_inside_a_batch_rolls_the_whole_step_back(journal_target):
    j = Journal.open(journal_target)
    j.insert_trade(_trade())
    with pytest.raises(TypeError, match="orders.qty got a float 100.0"), j.batch():
        j.insert_order(_order())
        j.insert_order(_order(order_key="k2", qty=100.0))
    assert j.orders_of(["T00001"]) == []
    j.close()


@pytest.mark.parametrize(("value", "error", "message"), [
    (Decimal("NaN"), ValueError, "got NaN: money and quantities must be finite"),
    (Decimal("-Infinity"), ValueError, "got -Infinity: money and quantities must be finite"),
    (float("nan"), TypeError, "got a float nan"),
    (math.inf, TypeError, "got a float inf"),
    ("0.1", TypeError, "got a str '0.1': money and quantities must be Decimal"),
    (True, TypeError, "got a bool True"),
])
def test_what_else_is_refused(tmp_path, value, error, message):
    j = Journal.open(tmp_path / "j.db")
    j.insert_trade(_trade())
    with pytest.raises(error, match=f"journal column orders.qty {message}"):
        j.insert_order(_order(qty=value))
    j.close()


def test_ints_are_exact_too_and_null_stays_none(journal_target):
    j = Journal.open(journal_target)
    j.insert_trade(_trade(qty=200))
    j.insert_order(_order(filled=0))
    j.insert_fill(_fill(commission=None))
    assert j.list_trades()[0]["qty"] == Decimal(200) and type(j.list_trades()[0]["qty"]) is Decimal
    assert j.orders_of(["T00001"])[0]["filled"] == Decimal(0)
    assert j.fills_of(["T00001"])[0]["commission"] is None
    j.close()


def test_json_columns_carry_decimals_as_exact_strings(journal_target):
    j = Journal.open(journal_target)
    snapshot = {"entry_avg": Decimal("0.1"), "realized": Decimal("-123456789.123456789"), "big": Decimal("1E+2"),
                "legs": {"stop": {"filled": Decimal("0.30")}}, "fills": [Decimal("2.5")], "level": 98.5}
    j.insert_trade(_trade(snapshot=snapshot, request={"symbol": "AAA", "qty": Decimal(100)}))
    j.event("fill", 5, {"qty": Decimal("0.1"), "price": Decimal("10.01")}, "T00001")
    j.close()
    j = Journal.open(journal_target, create=False)
    [trade] = j.list_trades()
    [event] = j.events_of(["T00001"])
    j.close()
    assert trade["snapshot"] == {"entry_avg": "0.1", "realized": "-123456789.123456789", "big": "100",
                                 "legs": {"stop": {"filled": "0.30"}}, "fills": ["2.5"], "level": 98.5}
    assert trade["request"] == {"symbol": "AAA", "qty": "100"}
    assert event["data"] == {"qty": "0.1", "price": "10.01"}


def test_every_exact_column_is_named_after_itself():
    """The refusal names ``Exact(column)``; a column copied from another table must not name the wrong one."""
    named = {f"{t.name}.{c.name}": c.type.column for t in metadata.tables.values() for c in t.columns
             if isinstance(c.type, Exact)}
    assert named == {name: name for name in EXACT_COLUMNS}


def test_sqlalchemy_numeric_on_sqlite_goes_through_float():
    """Why ``Exact`` is TEXT on SQLite: a plain ``Numeric`` column loses digits there."""
    engine = sa.create_engine("sqlite://")
    table = sa.Table("t", sa.MetaData(), sa.Column("x", sa.Numeric))
    table.metadata.create_all(engine)
    with engine.begin() as conn:  # silently: SQLAlchemy 2.1 does not even warn
        conn.execute(table.insert().values(x=Decimal("123456789.123456789")))
        assert conn.execute(sa.text("SELECT typeof(x) FROM t")).scalar() == "real"
        assert conn.execute(sa.select(table.c.x)).scalar() == Decimal("123456789.1234567910")  # not ...89
    engine.dispose()


def test_the_trades_view_shows_decimals_plainly_and_json_gets_exact_strings(tmp_path):
    """``tickguard trades`` (tickguard.interfaces.journal_view) over an exact journal: never an exponent, never
    a float, and ``json.dumps`` of what ``select`` returns (what ``--json`` prints) works as it is."""
    import json

    from rich.console import Console

    from tickguard.interfaces.journal_view import plain, render, select

    target = str(tmp_path / "j.db")
    j = Journal.open(target)
    snapshot = {"entry_filled": Decimal("100.0"), "entry_avg": Decimal("10.01333333333333333333333333"),
                "exited": Decimal("1E+2"), "realized": Decimal("1234.5"), "close_reason": "stop"}
    j.insert_trade(_trade(qty=Decimal("1E+2"), state="closed", snapshot=snapshot))
    j.insert_trade(_trade(trade_id="T00002", snapshot={"entry_filled": 100.0, "entry_avg": 0.1, "realized": None}))
    j.insert_order(_order(filled=Decimal("1E+2"), avg_price=Decimal("10.0100"), commission=Decimal("-0.00")))
    j.insert_fill(_fill(qty=Decimal("0.0000001")))
    j.put_legs("T00001", [_leg()])
    j.close()
    data = select(target)
    assert json.loads(json.dumps(data)) == data
    first, old = data
    assert (first["qty"], first["entry_filled"], first["entry_avg"], first["exited"], first["realized"]) == (
        "100", "100", "10.01333333333333333333333333", "100", "1234.5")
    assert {k: first["orders"][0][k] for k in ("qty", "filled", "avg_price", "commission")} == {
        "qty": "100", "filled": "100", "avg_price": "10.01", "commission": "0"}
    assert (first["fills"][0]["qty"], first["fills"][0]["price"]) == ("0.0000001", "10.01")
    assert {k: first["legs"][0][k] for k in ("fraction", "filled", "level")} == {"fraction": "1", "filled": "0",
                                                                                   "level": "98.5"}
    assert (old["entry_filled"], old["entry_avg"], old["realized"]) == ("100", "0.1", None)  # a pre-0005 snapshot
    console = Console(record=True, width=250)
    render(data, console)
    shown = console.export_text()
    assert "100@10.0133" in shown and "1,234.50" in shown and "stop@98.50" in shown and "100@0.10" in shown
    assert "E+" not in shown and "E-" not in shown
    assert [plain(Decimal(s)) for s in ("1E+2", "100.0", "1.50", "-0.00", "1E-7", "123456789.123456789")] == [
        "100", "100", "1.5", "0", "0.0000001", "123456789.123456789"]


def test_an_old_sqlite_journal_with_an_orphan_row_still_opens(tmp_path):
    """Migrating checks that it left no row without its parent, not that the journal never had one."""
    target = str(tmp_path / "j.db")
    _old_journal_with_floats(target)
    engine = _engine(target)  # a bare connection: foreign keys off, as an outside tool would write
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO fills VALUES ('e9', 'ghost', 'T00001', 1.5, 2.0, NULL, 9)"))
    engine.dispose()
    j = Journal.open(target, create=False)
    assert {f["exec_id"]: f["qty"] for f in j.fills_of(["T00001"])}["e9"] == Decimal("1.5")
    j.close()
