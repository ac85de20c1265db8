"""Real process kills: the fake IB Gateway lives in its own process, the engine (``tickguard run``) is
SIGKILLed at random moments - some right after it journaled an exit and before that exit filled - and
restarted on the same journal each time.  At the end the gateway's own record is compared with the journal:
no trade lost, no leg executed by two orders, every fill journaled once, positions equal.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time

import pytest
from process_support import (
    ACCOUNT,
    JournalProbe,
    assert_gateway_matches_journal,
    engine_toml,
    free_port,
    gateway_record,
    run_until_over,
    start_engine,
    start_gateway,
    stop_gateway,
)

SYMBOLS = "AAA,BBB,CCC"
N_TRADES = 10
KILLS = 20


def trades_toml() -> str:
    out = []
    for i in range(N_TRADES):
        # exits spread over the whole kill window: tight price levels fire early, time stops later
        rules = [
            '[{kind = "stop_loss", distance = 0.15}, {kind = "take_profit", distance = 0.15}]',
            '[{kind = "stop_loss", distance = 0.2}, {kind = "take_profit", fraction = 0.5, distance = 0.1},'
            ' {kind = "take_profit", fraction = 0.5, distance = 0.25}]',
            f'[{{kind = "trailing_stop", distance = 0.12}}, {{kind = "time_stop", after_seconds = {6 + 3 * i}}}]',
            f'[{{kind = "stop_loss", distance = 2.0}}, {{kind = "time_stop", after_seconds = {4 + 4 * i}}}]',
        ]
        out.append(f"""
[[trades]]
ref = "kill-{i}"
symbol = "{SYMBOLS.split(',')[i % 3]}"
side = "{'long' if i % 2 == 0 else 'short'}"
qty = {100 * (1 + i % 3)}
account = "{ACCOUNT}"
user = "{'alice' if i % 2 == 0 else 'bob'}"
rules = {rules[i % 4]}
""")
    return "".join(out)


@pytest.mark.timeout(420)
def test_twenty_kills_lose_nothing_and_send_nothing_twice(tmp_path, journal_target):
    port = free_port()
    gateway = start_gateway(port, "--seed", "4", "--symbols", SYMBOLS, "--speed", "10", "--fill-delay", "2")
    try:
        cfg = tmp_path / "engine.toml"
        cfg.write_text(engine_toml(port, journal_target, extra=trades_toml()))
        probe = JournalProbe(journal_target)
        rng = random.Random(20261124)
        log = tmp_path / "engine.log"
        kills_with_exit_in_flight = 0
        for _ in range(KILLS):
            engine = start_engine(cfg, log)
            states = probe.states()
            # half the kills wait for an exit between journal and fill, while there is a trade left to exit
            hunt = rng.random() < 0.5 and bool(set(states) - {"closed", "rejected", "cancelled"})
            # the hunting kills wait longer for one (a loaded machine starts the engine slowly)
            deadline = time.monotonic() + rng.uniform(0.8, 3.0) + (25.0 if hunt else 0.0)
            while time.monotonic() < deadline and engine.poll() is None:
                if hunt and probe.exits_in_flight() > 0:
                    kills_with_exit_in_flight += 1
                    break
                time.sleep(0.005)
            assert engine.poll() is None, log.read_text()[-3000:]
            engine.send_signal(signal.SIGKILL)
            engine.wait(10)
        # a last, undisturbed run until every trade is over, then a clean stop
        run_until_over(cfg, journal_target, N_TRADES, log, timeout=150,
                       final=frozenset({"closed", "rejected", "cancelled"}))
        fills, positions = asyncio.run(gateway_record(port))
    finally:
        stop_gateway(gateway)

    print(f"\n{KILLS} kills, {kills_with_exit_in_flight} with an exit journaled and not yet filled")
    assert_gateway_matches_journal(journal_target, fills, positions, [f"kill-{i}" for i in range(N_TRADES)])
    assert kills_with_exit_in_flight >= 1  # some kills landed between journaling an exit and its fill
