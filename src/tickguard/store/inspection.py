"""A read-only look at a journal: does it exist, which schema revision, live or simulated, how many open trades.

Why not ``Journal.open``: opening migrates an old journal and creates a missing one - right for an engine about to
run, wrong for a diagnosis (``tickguard doctor``), which must leave everything as it found it.  SQLite is opened
with ``mode=ro``; PostgreSQL only reads.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from tickguard.store.journal import FINAL_TRADE_STATES
from tickguard.store.journal_errors import JournalError
from tickguard.store.journal_open import SQLITE_MAGIC, describe, head_revision, is_url, known_revisions, schema_revision
from tickguard.store.schema import journal_meta, trades


@dataclass(frozen=True, slots=True)
class JournalState:
    where: str
    exists: bool
    revision: str | None = None  # its schema revision (None: empty, or not there yet)
    head: str = ""  # the revision this tickguard writes
    kind: str | None = None  # "live" / "simulated" once claimed
    open_trades: int = 0

    @property
    def known(self) -> bool:
        return self.revision is None or self.revision in known_revisions()

    @property
    def current(self) -> bool:
        return self.revision == self.head


def inspect_journal(target: str | Path) -> JournalState:
    """The journal at a SQLite path or a database URL, read without writing anything; ``JournalError`` if it
    cannot be read (unreachable, not a database, a database that is not a tickguard journal)."""
    where, head = describe(target), head_revision()
    if is_url(target):
        engine = sa.create_engine(str(target))
    else:
        path = Path(target)
        if not path.exists():
            if not path.parent.is_dir():
                raise JournalError(f"journal directory {path.parent} does not exist")
            return JournalState(where, exists=False, head=head)
        if path.is_dir():
            raise JournalError(f"journal path {path} is a directory, not a file")
        with path.open("rb") as fh:
            if fh.read(16) != SQLITE_MAGIC:
                raise JournalError(f"journal file {path} is not a SQLite database")
        engine = sa.create_engine("sqlite://", creator=lambda: sqlite3.connect(f"file:{path}?mode=ro", uri=True))
    try:
        with engine.connect() as conn:
            revision, tables = schema_revision(conn, where)
            if revision is None:
                return JournalState(where, exists=True, head=head)
            kind = (conn.execute(sa.select(journal_meta.c.value).where(journal_meta.c.name == "kind")).scalar()
                    if "journal_meta" in tables else None)
            open_trades = conn.execute(sa.select(sa.func.count()).select_from(trades)
                                       .where(trades.c.state.not_in(FINAL_TRADE_STATES))).scalar() or 0
    except sa.exc.OperationalError as exc:
        raise JournalError(f"cannot read the journal {where}: {exc.orig}") from exc
    except sa.exc.DatabaseError as exc:
        raise JournalError(f"journal {where} is unreadable (corrupt?): {exc.orig}") from exc
    finally:
        engine.dispose()
    return JournalState(where, True, revision, head, kind, int(open_trades))
