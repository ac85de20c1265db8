"""The write-ahead promise as a property: after every step of a random mix of journal use - nested batches,
``commit_now`` inside them, reads between writes, hot writes and SQLAlchemy's writes, fills new and replayed,
writes the database refuses or that are refused while binding, exceptions inside batches, before-commit hooks that
write or fail, after-commit hooks that write - what another connection sees committed is exactly what the
journal's current receipt covers (the order executor sends only that).  Written by an independent review of the
SQLite transactions moving onto the driver (sqlite_writes.py); four broken copies of that change each failed it."""

from __future__ import annotations

import random
import sqlite3
from decimal import Decimal

import psycopg
import pytest
import sqlalchemy as sa

from tickguard.store.exact import NotExactError
from tickguard.store.journal import Journal, JournalError


def trade_row(tid="T00001"):
    return dict(trade_id=tid, user_id="alice", account="DU1", symbol="AAA", side="long", qty=Decimal(100),
                state="open", request={"symbol": "AAA", "ref": f"r-{tid}"}, snapshot={"entry_filled": "0"},
                created_ns=1, updated_ns=1)


def order_row(key, tid="T00001", qty=Decimal(100)):
    return dict(order_key=key, trade_id=tid, leg="entry", user_id="alice", account="DU1", symbol="AAA",
                action="BUY", qty=qty, status="submitting", attempts=1, broker_order_id=None,
                filled=Decimal(0), avg_price=Decimal(0), commission=Decimal(0), reason="", intent={"key": key},
                created_ns=2, updated_ns=2)


def fill_row(exec_id, key="base"):
    return dict(exec_id=exec_id, order_key=key, trade_id="T00001", qty=Decimal(1), price=Decimal("10.5"),
                commission=None, ts_ns=3)


def outside(target: str) -> set[str]:
    """What another connection sees committed: order keys, volatility symbols, fill exec ids."""
    q = ("select 'o:' || order_key from orders union all select 'v:' || symbol from volatility "
         "union all select 'f:' || exec_id from fills")
    if "://" in target:
        with psycopg.connect(target.replace("postgresql+psycopg://", "postgresql://")) as con:
            return {r[0] for r in con.execute(q).fetchall()}
    con = sqlite3.connect(target)
    try:
        return {r[0] for r in con.execute(q).fetchall()}
    finally:
        con.close()


class Boom(Exception):
    pass


class Harness:
    """Random nesting of batches, commit_now, reads (SQLAlchemy's path) between writes, hot writes,
    SQLAlchemy-path writes (save_volatility), insert_fill (new and duplicate), failing writes, before_commit hooks
    that write or fail, after_commit hooks that write.  Invariant at every check: what another connection sees
    committed == exactly the writes the journal's current receipt covers."""

    def __init__(self, j: Journal, target: str, rng: random.Random) -> None:
        self.j, self.target, self.rng = j, target, rng
        self.pos: dict[str, int] = {}
        self.n = 0
        self.hook_mode = None  # None | "write" | "fail"
        self.after_mode = False
        self.after_budget = 0  # writes an after_commit hook may still make (a write there re-runs the hooks)
        j.before_commit.append(self.before)
        j.after_commit.append(self.after)

    def new(self, prefix):
        self.n += 1
        return f"{prefix}{self.n}"

    def record(self, key):
        self.pos[key] = self.j.position

    def check(self):
        r = self.j.receipt()
        covered = {k for k, p in self.pos.items() if r.covers(p)}
        seen = outside(self.target)
        assert seen == covered, (f"seen-not-covered {sorted(seen - covered)}; covered-not-seen "
                                 f"{sorted(covered - seen)}")

    def before(self, early):
        mode = self.hook_mode
        if mode == "write":
            key = self.new("hook")
            self.j.insert_order(order_row(key))
            self.record("o:" + key)
        elif mode == "fail":
            self.hook_mode = None
            key = self.new("hookfail")
            self.j.insert_order(order_row(key))
            self.record("o:" + key)
            raise Boom("before_commit hook")

    def after(self, receipt):
        if self.after_mode and self.after_budget > 0:
            self.after_budget -= 1
            key = self.new("after")
            self.j.insert_order(order_row(key))
            self.record("o:" + key)

    # one random operation each; "nested" recurses, "check" checks mid-batch
    KINDS = ("order", "order", "vol", "read", "read", "fill", "dup", "upd", "event", "legs", "commit_now", "nested",
             "nested", "check", "fail", "integrity", "notexact", "hookmode", "aftermode")

    def op(self, depth):
        getattr(self, "op_" + self.rng.choice(self.KINDS))(depth)

    def op_order(self, depth):
        key = self.new("k")
        self.j.insert_order(order_row(key))
        self.record("o:" + key)

    def op_vol(self, depth):  # SQLAlchemy's write path
        sym = self.new("S")
        self.j.save_volatility(sym, 1.0, 2.0, self.n)
        self.record("v:" + sym)

    def op_read(self, depth):
        j = self.j
        self.rng.choice([lambda: j.list_trades(), lambda: j.orders_of(["T00001"]), lambda: j.load_volatility("S1"),
                         lambda: j.known_refs(), lambda: j.max_trade_number(), lambda: j.legs_of(["T00001"]),
                         lambda: j.events_of(["T00001"]), lambda: j.fills_of(["T00001"]),
                         lambda: j.open_trades()])()

    def op_fill(self, depth):
        eid = self.new("e")
        assert self.j.insert_fill(fill_row(eid)) is True
        self.record("f:" + eid)

    def op_dup(self, depth):
        assert self.j.insert_fill(fill_row("e0")) is False  # a read after an insert that did nothing

    def op_upd(self, depth):
        self.j.update_order("base", status="working", updated_ns=self.n)

    def op_event(self, depth):
        self.j.event("x", self.n, {"n": self.n}, "T00001")

    def op_legs(self, depth):
        self.j.put_legs("T00001", [dict(name="stop", kind="stop", fraction=Decimal(1), level=Decimal("9.5"),
                                        armed=True, fired=0, filled=Decimal(0), inflight=Decimal(0),
                                        updated_ns=self.n)])

    def op_commit_now(self, depth):
        self.j.commit_now()

    def op_nested(self, depth):
        with self.j.batch():
            for _ in range(self.rng.randint(0, 5)):
                self.op(depth + 1)

    def op_check(self, depth):
        self.check()

    def op_fail(self, depth):
        raise Boom("inside a step")

    def op_integrity(self, depth):
        self.j.insert_order(order_row("base"))  # duplicate key: the database refuses it

    def op_notexact(self, depth):
        self.j.insert_order(order_row(self.new("float"), qty=1.5))  # refused while binding

    def op_hookmode(self, depth):
        self.hook_mode = self.rng.choice([None, "write", "fail"])

    def op_aftermode(self, depth):
        self.after_mode = not self.after_mode


def seeded(target: str) -> Journal:
    """A journal holding a trade, its order and a fill (the harness's positions 1-3)."""
    j = Journal.open(target)
    j.insert_trade(trade_row())
    j.insert_order(order_row("base"))
    j.insert_fill(fill_row("e0"))
    return j


def drive(h: Harness, steps: int, refused: list[str] | None = None) -> None:
    """``steps`` random steps (a batch of up to 8 operations, or one outside a batch), the invariant checked after
    each.  ``refused``: a JournalError is expected there and noted, unless it names a refused integrity write."""
    h.pos.update({"o:base": 2, "f:e0": 3})
    for _ in range(steps):
        h.after_budget = 2
        try:
            if h.rng.random() < 0.7:
                with h.j.batch():
                    for _ in range(h.rng.randint(0, 8)):
                        h.op(1)
            else:
                h.op(0)
        except (Boom, sa.exc.IntegrityError, NotExactError):
            pass
        except JournalError as exc:
            if refused is None:
                raise
            if "refused (IntegrityError" not in str(exc):
                refused.append(str(exc))
        h.hook_mode = None if h.hook_mode == "fail" else h.hook_mode
        h.check()


@pytest.mark.parametrize("seed", range(6))
def test_after_every_step_what_is_committed_is_exactly_what_the_receipt_covers(journal_target, seed):
    j = seeded(journal_target)
    drive(Harness(j, journal_target, random.Random(seed)), 60)
    j.close()
