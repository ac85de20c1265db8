"""Helpers of the process-level tests: a fake IB Gateway and ``tickguard run`` in their own processes, a
read-only look at the journal, and the gateway's own record of what was executed."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg
from ib_async import IB, ExecutionFilter

from tickguard.store.journal import Journal

ACCOUNT = "DU0000001"
ENGINE_CLIENT_ID = 21  # the [ib] client_id of the engines' configs
TG = [sys.executable, "-m", "tickguard"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def engine_toml(port: int, journal_target: str, client_id: int = ENGINE_CLIENT_ID, extra: str = "") -> str:
    """The [ib] and [journal] sections of an engine on the fake gateway at ``port``: quick to reconnect,
    snapshots every 20 ms (so a kill finds recent levels journaled); ``extra`` is appended (trades, ...)."""
    key = "url" if "://" in journal_target else "path"
    return f"""
[ib]
port = {port}
client_id = {client_id}
account = "{ACCOUNT}"
connect_timeout_s = 5
connect_attempts = 20
reconnect_initial_s = 0.1
reconnect_max_s = 1
[journal]
{key} = "{journal_target}"
snapshot_interval_ms = 20
""" + extra


def shared_trades_toml(refs: list[str], symbols: list[str], qty_step: int, time_stop_s: int) -> str:
    """Trades whose tight stop and target fire within seconds and whose time stop closes what is left."""
    return "".join(f"""
[[trades]]
ref = "{ref}"
symbol = "{symbols[i % len(symbols)]}"
side = "{('long', 'short')[i % 2]}"
qty = {qty_step * (i + 1)}
account = "{ACCOUNT}"
rules = [{{kind = "stop_loss", distance = 0.1}}, {{kind = "take_profit", distance = 0.1}},
         {{kind = "time_stop", after_seconds = {time_stop_s + 4 * i}}}]
""" for i, ref in enumerate(refs))


def start_engine(cfg: Path, log: Path, runner: list[str] | None = None) -> subprocess.Popen:
    """``tickguard run`` on ``cfg`` (or ``runner`` + its run arguments), its output appended to ``log``."""
    return subprocess.Popen([*(runner or TG), "run", "--config", str(cfg), "--no-live"], stdout=log.open("a"),
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def run_until_over(cfg: Path, journal_target: str, n_trades: int, log: Path, timeout: float = 90,
                   final: frozenset[str] = frozenset({"closed"})) -> None:
    """An undisturbed run until every trade is over, then a clean stop (SIGTERM); every trade must end in
    ``final``."""
    probe = JournalProbe(journal_target)
    engine = start_engine(cfg, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and engine.poll() is None:
        states = probe.states()
        if sum(states.values()) == n_trades and set(states) <= {"closed", "rejected", "cancelled"}:
            break
        time.sleep(0.2)
    assert engine.poll() is None, log.read_text()[-3000:]
    if time.monotonic() >= deadline:  # stuck: have it print what each of its tasks waits on, for the failure
        engine.send_signal(signal.SIGUSR1)
        time.sleep(1)
    engine.send_signal(signal.SIGTERM)
    engine.wait(20)
    assert set(probe.states()) <= final, (probe.states(), log.read_text()[-8000:])


def start_gateway(port: int, *options: str, log: Path | None = None) -> subprocess.Popen:
    """``tickguard fake-gateway`` in its own process, listening on ``port`` once this returns.  Its output goes
    to ``log`` (a temporary file by default), never to a pipe: a pipe nobody reads fills up after 64 KiB, and
    the gateway would then block on its next log line - a frozen market that looks like a stuck engine."""
    if log is None:
        fd, name = tempfile.mkstemp(prefix="fake-gateway-", suffix=".log")
        os.close(fd)
        log = Path(name)
    gateway = subprocess.Popen([*TG, "fake-gateway", "--port", str(port), *options], stdout=log.open("a"),
                               stderr=subprocess.STDOUT, text=True)
    gateway.log = log  # type: ignore[attr-defined]
    wait_file_line(gateway, log, "listening on", 30)
    return gateway


def stop_gateway(gateway: subprocess.Popen) -> None:
    gateway.send_signal(signal.SIGINT)
    try:
        gateway.wait(10)
    except subprocess.TimeoutExpired:
        gateway.kill()
    log = getattr(gateway, "log", None)
    if log is not None and log.parent == Path(tempfile.gettempdir()):
        log.unlink(missing_ok=True)


def wait_file_line(proc: subprocess.Popen, path: Path, needle: str, timeout: float) -> str:
    """Poll ``path`` (a process's output file) with a deadline for a line holding ``needle``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in path.read_text().splitlines():
            if needle in line:
                return line
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} not seen (exit code {proc.poll()}): {path.read_text()[-2000:]}")


class JournalProbe:
    """Read-only look at the journal from the harness, to pick kill moments and to wait for the end."""

    def __init__(self, target: str) -> None:
        self.target = target

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        if "://" in self.target:
            dsn = self.target.replace("postgresql+psycopg://", "postgresql://")
            with psycopg.connect(dsn, connect_timeout=5) as conn:
                try:
                    return list(conn.execute(sql))
                except psycopg.errors.UndefinedTable:
                    return []  # schema not created yet
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




async def gateway_record(port: int, client_id: int = ENGINE_CLIENT_ID) -> tuple[list[Any], dict[str, float]]:
    ib = IB()
    # as the engine's client id (it has stopped): IB hands a client only its own executions, like the gateway
    await asyncio.wait_for(ib.connectAsync("127.0.0.1", port, clientId=client_id, timeout=10), 20)
    try:
        fills = await asyncio.wait_for(ib.reqExecutionsAsync(ExecutionFilter()), 20)
        positions = {p.contract.symbol: float(p.position) for p in ib.positions() if p.position}
        return fills, positions
    finally:
        ib.disconnect()


def assert_gateway_matches_journal(journal_target: str, fills: list[Any], positions: dict[str, float],
                                   refs: list[str]) -> None:
    """The gateway's record against the journal: no trade lost or duplicated, every key this journal's, no leg
    executed by two broker orders, every execution journaled exactly once, every trade flat, every order final."""
    journal = Journal.open(journal_target, create=False)
    rows = journal.list_trades()
    ids = [r["trade_id"] for r in rows]
    journal_fills = journal.fills_of(ids)
    orders = journal.orders_of(ids)
    journal_id = journal.journal_id
    journal.close()

    # no trade lost, none duplicated
    assert sorted(r["request"]["ref"] for r in rows) == sorted(refs)
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
