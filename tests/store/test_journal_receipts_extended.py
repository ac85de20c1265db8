"""The receipt property (test_journal_receipts.py) extended by an independent review of the SQLite transaction begun
ahead of its writes (``SqliteWrites.ready``): reads at depth 0, after-commit hooks that read / commit_now / make a
failing write (an ``_abandon`` inside ``_notify``, then ``ready()``), commit_now with nothing written, and another
connection writing between steps.  After every step what another connection sees committed is exactly what the
receipt covers; and no write of the journal is refused because a read of it kept an outdated snapshot (5 of 8
seeds were, before ``Journal._read`` gave such a snapshot up).  SQLite only: PostgreSQL's transactions are
SQLAlchemy's, unchanged, and test_journal_receipts.py covers them."""
from __future__ import annotations

import random
import sqlite3

import pytest
import sqlalchemy as sa
from test_journal_receipts import Boom, Harness, drive, order_row, outside, seeded, trade_row  # noqa: F401

from tickguard.store.journal import JournalError


class Ext(Harness):
    KINDS = (*Harness.KINDS, "read", "read", "commit_now", "otherwrite", "aftermode2")

    def __init__(self, j, target, rng, others):
        super().__init__(j, target, rng)
        self.others = others
        self.after2 = None  # None | "read" | "commit_now" | "failwrite"
        self.errors = []

    def after(self, receipt):
        super().after(receipt)
        m = self.after2
        if m == "read":
            self.j.open_trades()
        elif m == "commit_now" and self.after_budget > 0:
            self.after_budget -= 1  # bounded: a before-commit hook that writes + this would loop forever
            self.j.commit_now()
        elif m == "failwrite" and self.after_budget > 0:
            self.after_budget -= 1
            try:
                self.j.insert_order(order_row("base"))  # refused: at depth 0 an _abandon inside _notify
            except sa.exc.IntegrityError:
                pass
            except JournalError as exc:
                if "refused (IntegrityError" not in str(exc):
                    self.errors.append(str(exc))

    def op_aftermode2(self, depth):
        self.after2 = self.rng.choice([None, "read", "commit_now", "failwrite"])

    def op_otherwrite(self, depth):
        if not self.others or "://" in self.target:
            return
        con = sqlite3.connect(self.target, timeout=0.2)
        try:
            con.execute("CREATE TABLE IF NOT EXISTS scratch (x)")
            con.execute("INSERT INTO scratch VALUES (1)")
            con.commit()
        except sqlite3.OperationalError:
            pass  # the journal holds the write lock (inside a batch that wrote): not the point here
        finally:
            con.close()


def run(target, seed, others):
    j = seeded(target)
    h = Ext(j, target, random.Random(seed), others)
    drive(h, 80, h.errors)
    j.close()
    return h.errors


@pytest.mark.parametrize("seed", range(8))
def test_receipts_single_writer(tmp_path, seed):
    errors = run(str(tmp_path / "j.db"), seed, others=False)
    assert errors == []


@pytest.mark.parametrize("seed", range(8))
def test_receipts_with_another_writer_no_refused_writes(tmp_path, seed):
    errors = run(str(tmp_path / "j.db"), seed, others=True)
    assert errors == [], errors[:3]
