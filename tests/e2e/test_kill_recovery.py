"""Real process kills: the fake IB Gateway lives in its own process, the engine (``tickguard run``) is
SIGKILLed at random moments - some right after it journaled an exit and before that exit filled - and
restarted on the same journal each time.  At the end the gateway's own record is compared with the journal:
no trade lost, no leg executed by two orders, every fill journaled once, positions equal.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg
import pytest
from ib_async import IB, ExecutionFilter

from tickguard.store.journal import Journal

ACCOUNT = "DU0000001"
SYMBOLS = "AAA,BBB,CCC"
N_TRADES = 10
KILLS = 20
TG = [sys.executable, "-m", "tickguard"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_line(proc: subprocess.Popen, needle: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if needle in line:
            return line
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"{needle!r} not seen (exit code {proc.poll()})")


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


class JournalProbe:
    """Read-only look at the journal from the harness, to pick kill moments and to wait for the end."""

    def __init__(self, target: str) -> None:
        self.target = target

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        if "://" in self.target:
            dsn = self.target.replace("postgresql+psycopg://", "postgresql://")
            with psycopg.connect(dsn, connect_timeout=5) as conn:
                return list(conn.execute(sql))
        if not Path(self.target).exists():
            return []
        conn = sqlite3.connect(f"file:{self.target}?mode=ro", uri=True, timeout=5)
        try:
            return list(conn.execute(sql))
        except sqlite3.OperationalError:
            return []  # schema not created yet
        finally:
            conn.close()

    def exits_in_flight(self) -> int:
        rows = self._query("SELECT count(*) FROM orders WHERE leg <> 'entry' AND status IN "
                           "('submitting', 'submitted', 'partially_filled', 'cancelling')")
        return rows[0][0] if rows else 0

    def states(self) -> dict[str, int]:
        return dict(self._query("SELECT state, count(*) FROM trades GROUP BY state"))


ENGINE_CLIENT_ID = 21  # the [ib] client_id of the engine's config below


async def gateway_record(port: int) -> tuple[list[Any], dict[str, float]]:
    ib = IB()
    # as the engine's client id (it has stopped): IB hands a client only its own executions, like the gateway
    await asyncio.wait_for(ib.connectAsync("127.0.0.1", port, clientId=ENGINE_CLIENT_ID, timeout=10), 20)
    try:
        fills = await asyncio.wait_for(ib.reqExecutionsAsync(ExecutionFilter()), 20)
        positions = {p.contract.symbol: float(p.position) for p in ib.positions() if p.position}
        return fills, positions
    finally:
        ib.disconnect()


@pytest.mark.timeout(420)
def test_twenty_kills_lose_nothing_and_send_nothing_twice(tmp_path, journal_target):
    port = free_port()
    gateway = subprocess.Popen([*TG, "fake-gateway", "--port", str(port), "--seed", "4", "--symbols", SYMBOLS,
                                "--speed", "10", "--fill-delay", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_line(gateway, "listening on", 30)
        journal_key = "url" if "://" in journal_target else "path"
        cfg = tmp_path / "engine.toml"
        cfg.write_text(f"""
[ib]
port = {port}
client_id = {ENGINE_CLIENT_ID}
account = "{ACCOUNT}"
connect_timeout_s = 5
connect_attempts = 20
reconnect_initial_s = 0.1
reconnect_max_s = 1
[journal]
{journal_key} = "{journal_target}"
snapshot_interval_ms = 20
""" + trades_toml())
        probe = JournalProbe(journal_target)
        rng = random.Random(20261124)
        log = tmp_path / "engine.log"
        kills_with_exit_in_flight = 0

        def start_engine() -> subprocess.Popen:
            return subprocess.Popen([*TG, "run", "--config", str(cfg), "--no-live"], stdout=log.open("a"),
                                    stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})

        for _ in range(KILLS):
            engine = start_engine()
            deadline = time.monotonic() + rng.uniform(0.8, 3.0)
            hunt = rng.random() < 0.5  # half the kills wait for an exit between journal and fill
            while time.monotonic() < deadline and engine.poll() is None:
                if hunt and probe.exits_in_flight() > 0:
                    kills_with_exit_in_flight += 1
                    break
                time.sleep(0.005)
            assert engine.poll() is None, log.read_text()[-3000:]
            engine.send_signal(signal.SIGKILL)
            engine.wait(10)
        # a last, undisturbed run until every trade is over, then a clean stop
        engine = start_engine()
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            states = probe.states()
            if sum(states.values()) == N_TRADES and set(states) <= {"closed", "rejected", "cancelled"}:
                break
            time.sleep(0.2)
        engine.send_signal(signal.SIGTERM)
        engine.wait(20)
        assert set(probe.states()) <= {"closed", "rejected", "cancelled"}, (probe.states(), log.read_text()[-3000:])
        fills, positions = asyncio.run(gateway_record(port))
    finally:
        gateway.send_signal(signal.SIGINT)
        try:
            gateway.wait(10)
        except subprocess.TimeoutExpired:
            gateway.kill()

    print(f"\n{KILLS} kills, {kills_with_exit_in_flight} with an exit journaled and not yet filled")
    assert kills_with_exit_in_flight >= 1  # some kills landed between journaling an exit and its fill

    journal = Journal.open(journal_target, create=False)
    rows = journal.list_trades()
    ids = [r["trade_id"] for r in rows]
    journal_fills = journal.fills_of(ids)
    orders = journal.orders_of(ids)
    journal_id = journal.journal_id
    journal.close()

    # no trade lost, none duplicated
    assert sorted(r["request"]["ref"] for r in rows) == sorted(f"kill-{i}" for i in range(N_TRADES))
    ours = [f for f in fills if f.execution.orderRef.startswith("tg:")]
    # every key carries the journal's id: tg:<journal id>:<trade>:<leg>[:<n>]
    assert ours and all(f.execution.orderRef.startswith(f"tg:{journal_id}:") for f in ours)
    assert all(o["order_key"].startswith(f"tg:{journal_id}:") for o in orders)
    # no leg executed by two broker orders
    order_ids_per_key: dict[str, set[int]] = defaultdict(set)
    for f in ours:
        order_ids_per_key[f.execution.orderRef].add(f.execution.orderId)
    assert {k: v for k, v in order_ids_per_key.items() if len(v) > 1} == {}
    # every execution at the gateway is in the journal exactly once, and nothing else is
    assert sorted(f.execution.execId for f in ours) == sorted(f["exec_id"] for f in journal_fills)
    # each trade exited exactly what it entered, and the gateway agrees: flat
    per_trade: dict[str, float] = defaultdict(float)
    sign = {"BOT": 1, "SLD": -1}
    for f in ours:
        per_trade[f.execution.orderRef.split(":")[2]] += sign[f.execution.side] * float(f.execution.shares)
    assert {t: q for t, q in per_trade.items() if abs(q) > 1e-9} == {}
    assert positions == {}
    assert all(o["status"] in ("filled", "cancelled", "rejected") for o in orders)
