"""One engine per journal (store/engine_lock.py): a second engine is refused, naming the holder; readers are not;
the lock dies with its holder - closed, or killed with SIGKILL - on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tickguard.config import load
from tickguard.runtime.engine_factory import open_journal
from tickguard.store.journal import JournalInUse

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
