"""One engine per journal (store/engine_lock.py): a second engine is refused, naming the holder; readers are not;
the lock dies with its holder - closed, or killed with SIGKILL - on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from test_exit_log import idle
from test_journal_id_migration import _alembic

from tickguard.config import load
from tickguard.runtime.engine_factory import open_journal
from tickguard.store.engine_lock import AdvisoryLock, FileLock
from tickguard.store.journal import JournalError, JournalInUse
from tickguard.store.journal_open import head_revision

HOLDER = textwrap.dedent("""
    import sys, time
    from tickguard.config import load
    from tickguard.runtime.engine_factory import open_journal
    target = sys.argv[1]
    journal = open_journal(load(None, {"journal": {"url": target} if "://" in target else {"path": target}}),
                           kind="simulated")
    print("held", flush=True)
    time.sleep(120)
""")


def settings(target: str):
    return load(None, {"journal": {"url": target} if "://" in target else {"path": target}})


def test_a_second_engine_is_refused_naming_the_holder_and_readers_are_not(journal_target):
    s = settings(journal_target)
    first = open_journal(s, kind="simulated")
    with pytest.raises(JournalInUse, match="in use by another running tickguard engine") as refused:
        open_journal(s, kind="simulated")
    holder = f"pid {os.getpid()}" if "://" not in journal_target else "database session"
    assert holder in str(refused.value) and "both send an exit" in str(refused.value)
    with pytest.raises(JournalInUse):  # the other kind too: the lock comes before the kind's claim
        open_journal(s, kind="live")
    reader = open_journal(s, create=False)  # tickguard trades / report / doctor while the engine runs
    assert reader is not None and reader.open_trades() == []
    reader.close()
    first.close()
    again = open_journal(s, kind="simulated")  # closed: the next engine may start
    again.close()


def test_another_path_to_the_same_sqlite_file_is_the_same_journal(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    first = open_journal(settings(str(tmp_path / "data" / "j.db")), kind="simulated")
    (tmp_path / "link.db").symlink_to(tmp_path / "data" / "j.db")
    monkeypatch.chdir(tmp_path / "data")
    for other in ("j.db", str(tmp_path / "link.db")):
        with pytest.raises(JournalInUse):
            open_journal(settings(other), kind="simulated")
    first.close()


def test_the_lock_dies_with_a_killed_engine(journal_target):
    """SIGKILL leaves nothing to clean up: a restart after a crash is never refused by a stale lock."""
    s = settings(journal_target)
    open_journal(s, create=True).close()  # created (and migrated) before the race
    child = subprocess.Popen([sys.executable, "-c", HOLDER, journal_target], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        with pytest.raises(JournalInUse):
            open_journal(s, kind="simulated")
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
        child.wait()
    deadline = time.monotonic() + 30  # PostgreSQL ends the dead session when it sees its socket closed
    while True:
        try:
            journal = open_journal(s, kind="simulated")
            break
        except JournalInUse:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    journal.close()


@pytest.mark.parametrize("command", ["sim", "run"])
def test_an_engine_command_on_a_journal_an_engine_holds_is_refused_without_a_traceback(tmp_path, command):
    """``tickguard run`` is refused before it connects (port 1: nothing listens - the refusal is the journal's)."""
    path = tmp_path / "j.db"
    held = open_journal(settings(str(path)), kind="simulated" if command == "sim" else "live")
    if command == "sim":
        args = ["sim", "--journal", str(path), "--duration", "5", "--speed", "0", "--no-live"]
    else:
        cfg = tmp_path / "run.toml"
        cfg.write_text(f'[ib]\nport = 1\naccount = "DU0000001"\n[journal]\npath = "{path}"\n')
        args = ["run", "--config", str(cfg), "--no-live"]
    try:
        done = subprocess.run([sys.executable, "-m", "tickguard", *args], capture_output=True, text=True, timeout=120)
    finally:
        held.close()
    assert done.returncode != 0
    assert "is in use by another running tickguard engine" in done.stderr and "Traceback" not in done.stderr


def test_a_hard_linked_journal_is_refused_to_an_engine_and_still_read(tmp_path):
    """Each name of a hard-linked file would have a lock of its own: the engine is refused, naming the cause."""
    path = tmp_path / "j.db"
    open_journal(settings(str(path)), kind="simulated").close()
    os.link(path, tmp_path / "other.db")
    for name in ("j.db", "other.db"):
        with pytest.raises(JournalError, match="has 2 hard links"):
            open_journal(settings(str(tmp_path / name)), kind="simulated")
    reader = open_journal(settings(str(path)), create=False)
    assert reader is not None and reader.open_trades() == []
    reader.close()


def _revision(target: str) -> str:
    engine = sa.create_engine(target if "://" in target else f"sqlite:///{target}")
    with engine.connect() as conn:
        revision = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
    engine.dispose()
    return revision


def _hold(target: str):
    """The lock as another engine holds it (its own process's view: a lock file / a database session)."""
    if "://" not in target:
        return FileLock(Path(target), target), None
    engine = sa.create_engine(target)
    conn = engine.connect()
    return AdvisoryLock(conn, target), (conn, engine)


def test_a_journal_is_migrated_only_under_the_engine_lock(journal_target):
    """A journal of an older schema held by a running engine (of the older version) is migrated by nobody: not by
    a reader - the running engine's next write would meet tables it does not know - and not by a second engine,
    which is refused before it touches the file.  Once the holder is gone, a reader migrates it."""
    _alembic(journal_target, command.upgrade, "0007")
    lock, session = _hold(journal_target)
    try:
        with pytest.raises(JournalError, match="older than this tickguard's .* a running engine holds it") as why:
            open_journal(settings(journal_target), create=False)
        assert not isinstance(why.value, JournalInUse)
        with pytest.raises(JournalInUse):
            open_journal(settings(journal_target), kind="simulated")
        assert _revision(journal_target) == "0007"  # untouched
    finally:
        lock.release()
        if session is not None:
            session[0].close()
            session[1].dispose()
    reader = open_journal(settings(journal_target), create=False)
    assert reader is not None
    reader.close()
    assert _revision(journal_target) == head_revision()


def test_a_failed_claim_releases_the_lock_in_the_same_process(journal_target):
    open_journal(settings(journal_target), kind="simulated").close()
    with pytest.raises(JournalError, match="simulated"):
        open_journal(settings(journal_target), kind="live")
    open_journal(settings(journal_target), kind="simulated").close()  # not refused by the failed attempt's lock


def _backend_pid(journal) -> int:
    return journal._conn.connection.driver_connection.info.backend_pid


def _terminate(pg_url: str, pid: int) -> None:
    import psycopg

    with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]


def test_postgresql_a_session_ended_under_the_engine_takes_the_lock_again_on_reconnect(pg_url):
    """The server ends the engine's session (pg_terminate_backend, an idle reaper): its lock goes with it.  The next
    write fails; the journal reconnects on the one after, and locks the new session before its commit - so a second
    engine is refused again."""
    s = settings(pg_url)
    journal = open_journal(s, kind="simulated")
    assert journal._conn.execute(sa.text("SHOW tcp_keepalives_idle")).scalar() in ("30", "30s")
    journal._conn.rollback()
    _terminate(pg_url, _backend_pid(journal))
    with pytest.raises(JournalError):
        journal.save_volatility("AAA", 1.0, 2.0, 1)
    journal.save_volatility("AAA", 1.5, 2.5, 2)  # a new session: locked again before this commit
    assert journal.load_volatility("AAA")["ts_ns"] == 2
    with pytest.raises(JournalInUse):
        open_journal(s, kind="simulated")
    journal.close()


def test_postgresql_a_commit_after_another_engine_took_the_lock_is_refused_and_not_made(pg_url):
    """Between the end of the first engine's session and its reconnect, a second engine started: the first one's
    next commit is refused (JournalInUse) and rolled back - nothing it records is ever sent."""
    s = settings(pg_url)
    first = open_journal(s, kind="simulated")
    _terminate(pg_url, _backend_pid(first))
    second = open_journal(s, kind="simulated")
    with pytest.raises(JournalError):
        first.save_volatility("AAA", 1.0, 2.0, 1)  # the dead session
    with pytest.raises(JournalInUse, match="in use by another running tickguard engine"):
        first.save_volatility("AAA", 1.5, 2.5, 2)  # a new session: the lock is the second engine's
    assert second.load_volatility("AAA") is None
    first.close()
    second.close()


def test_postgresql_journals_in_two_schemas_of_one_database_do_not_block_each_other(pg_url):
    import psycopg

    with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as admin:
        admin.execute("CREATE SCHEMA desk_a")
        admin.execute("CREATE SCHEMA desk_b")
    a, b = (f"{pg_url}?options=-csearch_path%3D{schema}" for schema in ("desk_a", "desk_b"))
    first, second = open_journal(settings(a), kind="simulated"), open_journal(settings(b), kind="live")
    assert first.journal_id != second.journal_id
    with pytest.raises(JournalInUse):
        open_journal(settings(a), kind="simulated")
    first.close()
    second.close()


@pytest.mark.parametrize("session", ["sim", "ib"])
def test_an_engine_that_fails_to_start_releases_its_journal(tmp_path, monkeypatch, session):
    """The session opened (and locked) the journal, then building its engine failed: the lock goes with the failure,
    so the next start in the same process is not refused."""
    import asyncio

    from tickguard.interfaces import ib_session, simulation

    def broken(*_args, **_kwargs):
        raise RuntimeError("engine construction failed")

    path = str(tmp_path / "j.db")
    s = settings(path)
    monkeypatch.setattr(simulation, "sim_engine", broken)
    monkeypatch.setattr(ib_session, "ib_engine", broken)
    run = simulation.run_session(s) if session == "sim" else ib_session.run_ib(s)
    with pytest.raises(RuntimeError, match="engine construction failed"):
        asyncio.run(run)
    open_journal(s, kind="simulated" if session == "sim" else "live").close()


def test_an_engine_writing_to_the_journal_keeps_a_next_engine_whose_lock_was_broken_out_with_a_clear_error(
        tmp_path, monkeypatch):
    """A running engine holds SQLite's write lock between its commits (its exit log: store/exit_log.py): a next
    engine on a broken lock cannot even open the journal while it writes - refused, by name, never half-started."""
    import tickguard.store.journal_open as journal_open

    monkeypatch.setattr(journal_open, "BUSY_TIMEOUT_MS", 100)  # how long the next one waits for the lock
    s = settings(str(tmp_path / "j.db"))
    first = open_journal(s, kind="simulated")
    first.take_over()
    first.save_volatility("AAA", 1.0, 2.0, 1)
    (tmp_path / "j.db.lock").unlink()
    with pytest.raises(JournalError, match="another process is writing to the journal .*stop it"):
        open_journal(s, kind="simulated")
    first.save_volatility("AAA", 1.2, 2.2, 2)  # the first goes on
    first.close()


def test_an_engine_whose_lock_file_was_deleted_is_fenced_off_by_the_next_engine(tmp_path):
    """A lock is a convention its holder cannot see broken (here: its file deleted under it, so the next engine
    gets a lock of its own).  The token the next engine writes at its start refuses every later commit of the
    first, so nothing more is sent by it; the next engine goes on."""
    path = tmp_path / "j.db"
    s = settings(str(path))
    first = open_journal(s, kind="simulated")
    first.take_over()  # as Engine.start does, once connected
    first.save_volatility("AAA", 1.0, 2.0, 1)
    (tmp_path / "j.db.lock").unlink()
    idle(first)  # it holds SQLite's write lock between its commits (its exit log), and lets go when idle
    second = open_journal(s, kind="simulated")
    first.save_volatility("AAA", 1.2, 2.2, 1)  # the second has not taken over yet (its start may still fail)
    idle(first)
    second.take_over()
    with pytest.raises(JournalInUse, match="was taken over by another tickguard engine after this one started"):
        first.save_volatility("AAA", 1.5, 2.5, 2)
    assert second.load_volatility("AAA")["ts_ns"] == 1  # the refused commit was rolled back
    second.save_volatility("AAA", 3.0, 4.0, 3)
    first.close()
    second.close()


def test_a_superseded_engine_whose_write_meets_the_other_engines_rows_is_told_so(tmp_path):
    """The later engine wrote a row the earlier one writes too (the same next trade id): the earlier one's write
    fails on the row before its commit could be fenced - it is told it was taken over, not a constraint error."""
    from test_journal import trade_row

    s = settings(str(tmp_path / "j.db"))
    first = open_journal(s, kind="simulated")
    first.take_over()
    (tmp_path / "j.db.lock").unlink()
    second = open_journal(s, kind="simulated")
    second.take_over()
    second.insert_trade(trade_row("T00002"))
    with pytest.raises(JournalInUse, match="was taken over"):
        first.insert_trade(trade_row("T00002"))
    with pytest.raises(JournalInUse, match="was taken over"), first.batch():
        first.insert_trade(trade_row("T00003"))
        first.insert_trade(trade_row("T00002"))
    assert [t["trade_id"] for t in second.list_trades()] == ["T00002"]
    first.close()
    second.close()


def test_an_engine_takes_the_journal_over_only_once_connected(tmp_path):
    """Engine.start takes the journal over after its broker connected, before it reads the journal: a start that
    fails before that point (a broker refusing it) leaves an engine still running on the journal alone."""
    import asyncio

    from tickguard.runtime.engine_factory import sim_engine

    path = tmp_path / "j.db"
    s = settings(str(path))
    first = open_journal(s, kind="simulated")
    first.take_over()
    (tmp_path / "j.db.lock").unlink()

    async def start(fail: bool) -> None:
        engine, venue = sim_engine(s, None, open_journal(s, kind="simulated"))
        if fail:
            async def refused() -> None:
                raise ConnectionError("client id already in use")
            engine.broker.connect = refused
        try:
            await engine.start(sorted(venue.specs)[:1])
        finally:
            await engine.broker.close()
            engine.journal.close()

    with pytest.raises(ConnectionError):
        asyncio.run(start(fail=True))
    first.save_volatility("AAA", 1.0, 2.0, 1)  # still its turn
    (tmp_path / "j.db.lock").unlink()
    idle(first)
    asyncio.run(start(fail=False))
    with pytest.raises(JournalInUse, match="was taken over"):
        first.save_volatility("AAA", 1.5, 2.5, 2)
    first.close()


def test_a_directory_given_as_the_journal_is_refused_without_a_lock_file_beside_it(tmp_path):
    (tmp_path / "adir.db").mkdir()
    with pytest.raises(JournalError, match="is a directory, not a file"):
        open_journal(settings(str(tmp_path / "adir.db")), kind="simulated")
    assert not (tmp_path / "adir.db.lock").exists()


def test_a_file_named_like_the_lock_that_is_a_database_is_never_overwritten(tmp_path):
    other = tmp_path / "desk.db.lock"
    open_journal(settings(str(other)), kind="simulated").close()  # a journal that happens to have that name
    before = other.read_bytes()
    with pytest.raises(JournalError, match="taken by a SQLite database"):
        open_journal(settings(str(tmp_path / "desk.db")), kind="simulated")
    assert other.read_bytes() == before


def test_a_lock_file_that_cannot_be_written_is_a_clear_error_and_leaves_no_lock_behind(tmp_path):
    """The stamp's write fails (a full disk, played by a file-size limit of 0): a JournalError naming the lock file,
    and the same process can start the engine once the cause is gone."""
    script = textwrap.dedent("""
        import resource, signal, sys
        from tickguard.config import load
        from tickguard.runtime.engine_factory import open_journal
        from tickguard.store.journal import JournalError
        s = load(None, {"journal": {"path": sys.argv[1]}})
        open_journal(s, create=True).close()
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
        try:
            open_journal(s, kind="simulated")
        except JournalError as exc:
            print("refused:", exc)
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        open_journal(s, kind="simulated").close()
        print("started")
    """)
    path = tmp_path / "j.db"
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "refused: journal" in done.stdout and "cannot lock or write its engine lock file" in done.stdout
    assert done.stdout.strip().endswith("started")


def test_postgresql_an_engine_back_after_another_came_and_went_is_refused_its_commit(pg_url):
    """The first engine's session ended; a second engine started, wrote and stopped; the first reconnects and takes
    the lock again (free now) - but the journal moved on without it: its commit is refused by the fence."""
    s = settings(pg_url)
    first = open_journal(s, kind="simulated")
    first.take_over()
    _terminate(pg_url, _backend_pid(first))
    second = open_journal(s, kind="simulated")
    second.take_over()
    second.save_volatility("AAA", 1.0, 2.0, 1)
    second.close()
    with pytest.raises(JournalError):
        first.save_volatility("AAA", 9.0, 9.0, 9)  # the dead session
    with pytest.raises(JournalInUse, match="was taken over by another tickguard engine after this one started"):
        first.save_volatility("AAA", 9.0, 9.0, 9)
    first.close()
    reader = open_journal(s, create=False)
    assert reader.load_volatility("AAA")["ts_ns"] == 1
    reader.close()


def test_postgresql_a_journal_whose_tables_are_not_where_new_ones_would_go_is_refused(pg_url):
    """A schema named after the user, made after the journal, comes first in the default search_path: the journal
    would be read from ``public``, its new tables made in the other schema, and its lock keyed by the wrong one."""
    import psycopg

    open_journal(settings(pg_url), kind="simulated").close()  # its tables in public
    with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("CREATE SCHEMA AUTHORIZATION postgres")
    with pytest.raises(JournalError, match="its tables are in schema 'public', but this connection makes new tables "
                                           "in 'postgres'"):
        open_journal(settings(pg_url), kind="simulated")
    open_journal(settings(f"{pg_url}?options=-csearch_path%3Dpublic"), kind="simulated").close()  # as it says


def test_postgresql_an_autocommit_connection_is_refused_to_an_engine(pg_url):
    with pytest.raises(JournalError, match="autocommit"):
        open_journal(settings(f"{pg_url}?autocommit=true"), kind="simulated")


def test_postgresql_the_refusal_names_a_holder_of_another_role_without_a_traceback(pg_url):
    """The server hides another role's session details (its start, its address): the message says what it can."""
    import uuid

    import psycopg

    base = pg_url.rsplit("/", 1)[0].replace("postgres@", "{role}@")
    db = pg_url.rsplit("/", 1)[1]
    roles = [f"tg_{uuid.uuid4().hex[:8]}" for _ in range(2)]
    with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as admin:
        for role in roles:
            admin.execute(f"CREATE ROLE {role} LOGIN")
            admin.execute(f"GRANT ALL ON SCHEMA public TO {role}")
    try:
        first = open_journal(settings(f"{base.format(role=roles[0])}/{db}"), kind="simulated")
        with pytest.raises(JournalInUse, match="database session [0-9]+ from") as refused:
            open_journal(settings(f"{base.format(role=roles[1])}/{db}"), kind="simulated")
        assert "pg_terminate_backend" in str(refused.value)
        first.close()
    finally:  # the roles own the journal's tables: the database goes first
        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            for role in roles:
                admin.execute(f"DROP ROLE IF EXISTS {role}")
