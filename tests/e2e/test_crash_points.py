"""The crash-point matrix, with real processes: ``tickguard run`` is SIGKILLed at each moment of an exit's
life (``crash_runner.py`` names them), on SQLite and on PostgreSQL, then restarted on the same journal and the
same fake IB Gateway (its own process, which lives on).  Every trade must end with its position closed at the
gateway, no leg executed twice, every execution journaled exactly once - the gateway's record is the judge.

``wire_before_commit`` is the fault write-ahead exists for: an exit at the broker that the journal never
recorded.  Recovery must find it by its key (this journal's id, this client id) and adopt it rather than send
the exit again.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest
from crash_runner import POINTS
from process_support import (
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

RUNNER = Path(__file__).with_name("crash_runner.py")
SYMBOLS = "AAA,BBB"
REFS = ["crash-0", "crash-1", "crash-2"]


def config(port: int, journal_target: str) -> str:
    return engine_toml(port, journal_target, extra=shared_trades_toml(REFS, SYMBOLS.split(","), 200, 8))


@pytest.mark.timeout(240)
@pytest.mark.parametrize("point", POINTS)
def test_a_kill_at_each_point_of_an_exits_life_loses_nothing_and_sends_nothing_twice(tmp_path, journal_target,
                                                                                      point):
    port = free_port()
    gateway = start_gateway(port, "--seed", "5", "--symbols", SYMBOLS, "--speed", "10", "--fill-delay", "0.5",
                            "--partial-fill-prob", "1" if point == "partially_filled" else "0")
    log = tmp_path / "engine.log"
    try:
        cfg = tmp_path / "engine.toml"
        cfg.write_text(config(port, journal_target))
        crashing = start_engine(cfg, log, runner=[sys.executable, str(RUNNER), point])
        assert crashing.wait(90) == -signal.SIGKILL, log.read_text()[-3000:]
        assert f"CRASH POINT {point}:" in log.read_text()
        run_until_over(cfg, journal_target, len(REFS), log)
        fills, positions = asyncio.run(gateway_record(port))
    finally:
        stop_gateway(gateway)
    assert_gateway_matches_journal(journal_target, fills, positions, REFS)
