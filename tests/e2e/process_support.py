"""Helpers of the process-level tests: a fake IB Gateway and ``tickguard run`` in their own processes, a
read-only look at the journal, and the gateway's own record of what was executed."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg
from ib_async import IB, ExecutionFilter

from tickguard.store.journal import Journal

ACCOUNT = "DU0000001"
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


ENGINE_CLIENT_ID = 21  # the [ib] client_id of the engines' configs


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
