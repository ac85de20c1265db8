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
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from crash_runner import POINTS
from process_support import (
    ACCOUNT,
    ENGINE_CLIENT_ID,
    TG,
    JournalProbe,
    assert_gateway_matches_journal,
    free_port,
    gateway_record,
    wait_line,
)

RUNNER = Path(__file__).with_name("crash_runner.py")
SYMBOLS = "AAA,BBB"
REFS = ["crash-0", "crash-1", "crash-2"]


def config(port: int, journal_target: str) -> str:
    key = "url" if "://" in journal_target else "path"
    trades = []
    for i, ref in enumerate(REFS):
        # a tight stop and target fire within seconds; the time stop closes whatever is left
        trades.append(f"""
[[trades]]
ref = "{ref}"
symbol = "{SYMBOLS.split(',')[i % 2]}"
side = "{'long' if i % 2 == 0 else 'short'}"
qty = {200 * (i + 1)}
account = "{ACCOUNT}"
rules = [{{kind = "stop_loss", distance = 0.1}}, {{kind = "take_profit", distance = 0.1}},
         {{kind = "time_stop", after_seconds = {8 + 4 * i}}}]
""")
    return f"""
[ib]
port = {port}
client_id = {ENGINE_CLIENT_ID}
account = "{ACCOUNT}"
connect_timeout_s = 5
connect_attempts = 20
reconnect_initial_s = 0.1
reconnect_max_s = 1
[journal]
{key} = "{journal_target}"
snapshot_interval_ms = 20
""" + "".join(trades)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("point", POINTS)
def test_a_kill_at_each_point_of_an_exits_life_loses_nothing_and_sends_nothing_twice(tmp_path, journal_target,
                                                                                      point):
    port = free_port()
    gateway = subprocess.Popen([*TG, "fake-gateway", "--port", str(port), "--seed", "5", "--symbols", SYMBOLS,
                                "--speed", "10", "--fill-delay", "0.5",
                                "--partial-fill-prob", "1" if point == "partially_filled" else "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = tmp_path / "engine.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        wait_line(gateway, "listening on", 30)
        cfg = tmp_path / "engine.toml"
        cfg.write_text(config(port, journal_target))
        crashing = subprocess.Popen([sys.executable, str(RUNNER), point, "run", "--config", str(cfg), "--no-live"],
                                    stdout=log.open("a"), stderr=subprocess.STDOUT, env=env)
        assert crashing.wait(90) == -signal.SIGKILL, log.read_text()[-3000:]
        assert f"CRASH POINT {point}:" in log.read_text()
        engine = subprocess.Popen([*TG, "run", "--config", str(cfg), "--no-live"], stdout=log.open("a"),
                                  stderr=subprocess.STDOUT, env=env)
        probe = JournalProbe(journal_target)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and engine.poll() is None:
            states = probe.states()
            if sum(states.values()) == len(REFS) and set(states) <= {"closed", "rejected", "cancelled"}:
                break
            time.sleep(0.2)
        assert engine.poll() is None, log.read_text()[-3000:]
        engine.send_signal(signal.SIGTERM)
        engine.wait(20)
        assert set(probe.states()) == {"closed"}, (probe.states(), log.read_text()[-3000:])
        fills, positions = asyncio.run(gateway_record(port))
    finally:
        gateway.send_signal(signal.SIGINT)
        try:
            gateway.wait(10)
        except subprocess.TimeoutExpired:
            gateway.kill()
    assert_gateway_matches_journal(journal_target, fills, positions, REFS)
