"""A journal whose creation is killed half-way (``kill -9`` during its first migration) must open again.

SQLite runs DDL inside a transaction only if one is begun for it - Python's sqlite3 module (legacy transaction
control) begins one before INSERT / UPDATE / DELETE but not before CREATE TABLE, so each table was committed as it
was created.  A ``tickguard run`` killed during its first start left a journal with tables and no schema version,
which every later start refused ("holds tables ... but no tickguard schema version").
"""

from __future__ import annotations

import subprocess
import sys

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext

from tickguard.store.journal import Journal
from tickguard.store.journal_open import head_revision

KILLED_MID_MIGRATION = """
import os, signal, sys
from tickguard.store import journal, journal_open

calls = []
real = journal_open._orphans

def orphans_then_die(conn):
    calls.append(1)
    if len(calls) == 2:  # the second check runs after every migration's DDL, before the commit
        os.kill(os.getpid(), signal.SIGKILL)
    return real(conn)

journal_open._orphans = orphans_then_die
journal.Journal.open(sys.argv[1])
"""


def test_a_journal_killed_while_being_created_opens_again(tmp_path):
    path = tmp_path / "journal.db"
    done = subprocess.run([sys.executable, "-c", KILLED_MID_MIGRATION, str(path)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == -9, done.stderr
    assert path.exists()
    journal = Journal.open(path)  # nothing of the killed creation was committed: created afresh
    try:
        assert journal.list_trades() == [] and journal.journal_id
    finally:
        journal.close()
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head_revision()
    engine.dispose()
