"""Journals that share an IB account, one after another, on one fake IB Gateway (its own process), with real
kills: a first journal trades and is killed and restarted; then a second journal (another client id) trades the
same symbols with the same trade ids and refs, killed and restarted too; then a third (the FIRST one's client id
again, which at IB sees that client's executions of the day).  Each journal must end flat with only its own
executions applied: IB's record of the day holds every journal's orders, and orderRef carries the journal id.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from process_support import (
    JournalProbe,
    assert_gateway_matches_journal,
    engine_toml,
    free_port,
    gateway_record,
    run_until_over,
    shared_trades_toml,
    start_engine,
    start_gateway,
    stop_gateway,
)

from tickguard.store.journal import Journal

REFS = ["shared-0", "shared-1", "shared-2"]


def config(port: int, client_id: int, journal: str) -> str:
    # each journal asks IB for a different span of daily bars: identical history requests within 15 s are a pacing
    # violation (162) at IB and at the fake gateway, and a new journal has no saved volatility to fall back on
    days = 20 + client_id + len(journal)
    return engine_toml(port, journal, client_id, f"[volatility]\nhistory_days = {days}\n"
                       + shared_trades_toml(REFS, ["AAA", "BBB"], 100, 6))


def run_with_a_kill(cfg, journal: str, log) -> None:
    """Start, kill -9 once an exit is in flight (or after 4 s), restart, run until every trade is over, stop."""
    probe = JournalProbe(journal)
    engine = start_engine(cfg, log)
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline and probe.exits_in_flight() == 0 and engine.poll() is None:
        time.sleep(0.01)
    assert engine.poll() is None, log.read_text()[-3000:]
    engine.send_signal(signal.SIGKILL)
    engine.wait(10)
    run_until_over(cfg, journal, len(REFS), log)


@pytest.mark.timeout(300)
def test_journals_sharing_an_account_never_take_each_others_executions(tmp_path):
    port = free_port()
    gateway = start_gateway(port, "--seed", "6", "--symbols", "AAA,BBB", "--speed", "10", "--fill-delay", "0.5")
    runs = [("first", 21), ("second", 22), ("third", 21)]
    records = {}
    try:
        for name, client_id in runs:
            journal = str(tmp_path / f"{name}.db")
            cfg = tmp_path / f"{name}.toml"
            cfg.write_text(config(port, client_id, journal))
            run_with_a_kill(cfg, journal, tmp_path / f"{name}.log")
            records[name] = asyncio.run(gateway_record(port, client_id))
    finally:
        stop_gateway(gateway)
    ids = {}
    for name, _ in runs:
        journal_path = str(tmp_path / f"{name}.db")
        j = Journal.open(journal_path, create=False)
        ids[name] = j.journal_id
        j.close()
        fills, positions = records[name]
        mine = [f for f in fills if f.execution.orderRef.startswith(f"tg:{ids[name]}:")]
        # the gateway's record as this client sees it, reduced to this journal's keys, must match the journal
        assert_gateway_matches_journal(journal_path, mine, positions, REFS)
    assert len(set(ids.values())) == 3
    # the third journal (client 21 again) saw the first's executions at IB and applied none of them
    first_execs = {f.execution.execId for f in records["first"][0] if f.execution.orderRef.startswith("tg:")}
    third_view = {f.execution.execId for f in records["third"][0]}
    assert first_execs and first_execs <= third_view
