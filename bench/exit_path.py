"""The exit path in one process: a crossing's bytes read -> its exit order's bytes written, against ib_async alone.

``bench/wire_to_wire.py`` measures from outside, across two processes on one machine - and on 2 cores both sides of
that measurement wait for a CPU at every wake-up (its ``cpu at`` line), so its tail is partly the machine's.  This
bench takes the scheduler and the gateway's own time out: the fake gateway (``bench/wire_gateway.py``'s), the real
engine (``IBBroker`` on ib_async, the SQLite journal with its write-ahead commit, the message budget) and a bare
ib_async client share one event loop and one clock.  A crossing is written straight to the client's socket; the
time runs from ib_async's ``Connection.data_received`` of those bytes to its ``Connection.sendMsg`` of the
placeOrder - per crossing, one at a time, nothing else streaming.  Baseline in the same run: the bare client
(``pendingTickersEvent`` -> ``placeOrder``), given the same crossing after each of the engine's.  The ratio is what
tickguard's own work per exit costs: evaluating, journaling and committing, the budget.  ``--parts`` adds a p50 per
stage of the engine's step (wrapping a few methods: slightly slower).

    python bench/exit_path.py [--trades 5000] [--crossings 300] [--parts]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ib_async import IB, MarketOrder, Stock, connection  # noqa: E402

from ibfake import outgoing as out  # noqa: E402
from ibfake.wire import encode_message  # noqa: E402
from tickguard.adapters.ib.ib_client import IBBroker  # noqa: E402
from tickguard.config import load  # noqa: E402
from tickguard.core.exit_rules import StopLoss  # noqa: E402
from tickguard.core.model import Side  # noqa: E402
from tickguard.core.trades import TradeRequest  # noqa: E402
from tickguard.runtime.engine import Engine  # noqa: E402
from tickguard.runtime.engine_factory import open_journal  # noqa: E402
from wire_gateway import CENTS, BenchGateway, build_plan  # noqa: E402

ACCOUNT = "DU0000001"
THROTTLE = {"rate": 300, "burst": 50, "entry_queue_max": 1_000_000, "entry_wait_max_s": 3600.0,
            "breaker_rejections": 10_000, "efficiency_min_orders": 1_000_000}


class Marks:
    """The read and the placeOrder write of one crossing, on the connection being measured."""

    def __init__(self) -> None:
        self.conn: Any = None
        self.read: int | None = None
        self.sent: int | None = None
        self.stages: dict[str, int] = {}
        self.want = 1  # placeOrders that end a crossing (--burst: one per symbol crossed)
        self.placed = 0

    def watch(self, conn: Any, want: int = 1) -> None:
        self.conn, self.read, self.sent, self.stages, self.want, self.placed = conn, None, None, {}, want, 0

    def install(self) -> None:
        received, send = connection.Connection.data_received, connection.Connection.sendMsg
        marks = self

        def data_received(conn: Any, data: bytes) -> None:
            if conn is marks.conn and marks.read is None:
                marks.read = time.perf_counter_ns()
            received(conn, data)

        def send_msg(conn: Any, msg: bytes) -> None:
            send(conn, msg)
            # an exit order: placeOrder (its id after the length) with an exit's ref (the engine's "tg:...", the
            # floor's "floor..."), after the crossing's read - a shadow check's what-if is a placeOrder too, without
            # a ref: one sent between ``watch`` and the read ended a crossing before it began, one after it early
            if (conn is marks.conn and marks.read is not None and marks.sent is None and msg[4:6] == b"3\0"
                    and (b"\0tg:" in msg or b"\0floor" in msg)):
                marks.placed += 1
                if marks.placed == marks.want:
                    marks.sent = time.perf_counter_ns()

        connection.Connection.data_received = data_received  # type: ignore[method-assign]
        connection.Connection.sendMsg = send_msg  # type: ignore[method-assign]

    def stage(self, owner: Any, attr: str, name: str) -> None:
        """Time-stamp the first call of ``owner.attr`` within a measured crossing (its start and end)."""
        original: Callable[..., Any] = getattr(owner, attr)
        marks = self

        def stamped(*args: Any, **kwargs: Any) -> Any:
            if marks.read is None or marks.sent is not None or f"{name}>" in marks.stages:
                return original(*args, **kwargs)
            marks.stages[f"{name}>"] = time.perf_counter_ns()
            try:
                return original(*args, **kwargs)
            finally:
                marks.stages[f"{name}<"] = time.perf_counter_ns()

        setattr(owner, attr, stamped)


async def cross(marks: Marks, conn: Any, transport: Any, crossings: list[tuple[list[int], float]]) -> int:
    """Write the crossing quotes (one per symbol: ``(its request ids, price)``) in one piece; the time from their
    read to the last of their exit orders written."""
    marks.watch(conn, len(crossings))
    transport.write(b"".join(encode_message(out.tick_price(r, 1, price, 100, 1))
                             for req_ids, price in crossings for r in req_ids))
    await until(lambda: marks.sent is not None,
                lambda: f"{marks.placed} of {len(crossings)} exit orders 10 s after a crossing at {crossings}")
    assert marks.read is not None and marks.sent is not None
    return marks.sent - marks.read


async def until(done: Callable[[], bool], failure: Callable[[], str], timeout_s: float = 10.0) -> None:
    """Turn the event loop until ``done()``; past ``timeout_s`` stop the bench with ``failure()``."""
    deadline = time.monotonic() + timeout_s
    while not done():
        await asyncio.sleep(0)
        if time.monotonic() > deadline:
            raise SystemExit(failure())


def quotes(session: Any, symbols: list[str], levels: list[int]) -> list[tuple[list[int], float]]:
    """The crossing quotes for one client's subscriptions: each symbol's request ids, and its level as a price."""
    subs = session.mkt_subs.items()
    return [([r for r, s in subs if s == sym], cents / CENTS) for sym, cents in zip(symbols, levels, strict=True)]


Started = tuple[dict[str, Any], BenchGateway, IBBroker, asyncio.Task[None], Engine]


async def started(args: argparse.Namespace) -> Started:
    """The gateway and the engine on it, with ``--trades`` open trades (stop levels per ``build_plan``)."""
    plan = build_plan(20, args.trades, args.crossings * args.burst, [1000])
    gw = await BenchGateway(plan, speed=0.0).start()
    await gw.advance(2.0)
    settings = load(None, {"ib": {"port": gw.port, "client_id": 17, "account": ACCOUNT, "symbols": plan["symbols"]},
                           "journal": {"path": str(Path(tempfile.mkdtemp()) / "journal.db")}, "throttle": THROTTLE})
    broker = IBBroker(settings.ib)
    engine = Engine(settings, broker, None, open_journal(settings, kind="live"))
    await engine.start(plan["symbols"])
    loop_task = asyncio.create_task(engine.run_until(2**62))
    while not all(engine.ticks.quote(s) is not None for s in plan["symbols"]):
        await gw.advance(0.2)
        await asyncio.sleep(0.01)
    trades = [engine.submit(TradeRequest(symbol=sym, side=Side.LONG, qty=1, account=ACCOUNT,
                                         rules=[StopLoss(price=cents / 100)]))
              for sym in plan["symbols"] for cents in plan["levels"][sym]]
    while not all(t.state.value == "open" for t in trades):
        await gw.advance(0.05)
        await asyncio.sleep(0.01)
    return plan, gw, broker, loop_task, engine


async def run(args: argparse.Namespace) -> dict[str, Any]:
    plan, gw, broker, loop_task, engine = await started(args)
    contracts = {s: Stock(s, "SMART", "USD") for s in plan["symbols"]}
    bare = [await BareClient.connected(gw, 99, contracts)]  # the floor
    if args.durable_floor:
        bare.append(await BareClient.connected(gw, 98, contracts, journal_rows=args.trades))
    await asyncio.sleep(3)  # the start-up's background work (shadow checks, first reconciliation) settles
    sessions = {s.client_id: s for s in gw.sessions if s.client_id is not None and not s.closed}
    marks = Marks()
    marks.install()
    if args.parts:
        from tickguard.core.tick_handler import TickHandler
        from tickguard.runtime.order_executor import OrderExecutor
        from tickguard.store.journal import Journal
        for owner, attr, name in ((Engine, "step", "step"), (TickHandler, "process", "evaluate"),
                                  (OrderExecutor, "submit", "submit"), (Journal, "commit_now", "commit"),
                                  (IBBroker, "place_order", "place")):
            marks.stage(owner, attr, name)
    used = dict.fromkeys(plan["symbols"], 0)
    tg: list[int] = []
    stages: dict[str, list[int]] = {}
    for k in range(args.crossings):
        symbols = [plan["symbols"][(k * args.burst + j) % len(plan["symbols"])] for j in range(args.burst)]
        levels = []
        for sym in symbols:
            levels.append(plan["levels"][sym][used[sym]])
            used[sym] += 1
        await asyncio.sleep(args.gap)
        tg.append(await cross(marks, broker.ib.client.conn, sessions[17].writer.transport,
                              quotes(sessions[17], symbols, levels)))
        seq = sorted([(marks.read, "read"), *((v, k) for k, v in marks.stages.items() if v <= (marks.sent or 0)),
                      (marks.sent, "sent")])
        for (t0, a), (t1, b) in itertools.pairwise(seq):
            stages.setdefault(f"{a} -> {b}", []).append(t1 - t0)
        for sym, cents in zip(symbols, levels, strict=True):
            gw.venue.exchange.on_quote(sym, cents / CENTS, cents / CENTS + 0.01, gw.venue.now_ns)
        for client in bare:
            await asyncio.sleep(args.gap)
            client.arm(symbols, levels)
            client.times.append(await cross(marks, client.ib.client.conn, sessions[client.client_id].writer.transport,
                                            quotes(sessions[client.client_id], symbols, levels)))
    rehearsal = await rehearsal_cost(engine) if args.rehearsal_cost else {}
    loop_task.cancel()
    await asyncio.gather(loop_task, return_exceptions=True)
    for client in bare:
        client.close()
    await broker.close()
    await gw.close()
    return {"tickguard": tg, "floor": bare[0].times, "floor+journal": bare[1].times if len(bare) > 1 else [],
            "stages": stages, "rehearsal": rehearsal}


async def rehearsal_cost(engine: Engine) -> dict[str, list[int]]:
    """What one exit rehearsal (runtime/exit_rehearsal.py) costs on this engine: 2,000 back to back (warm), and 500
    one a millisecond apart (as the engine's timer runs them)."""
    assert engine.rehearsal is not None, "[engine] exit_rehearsal_ms is 0"
    run = engine.rehearsal.run
    warm, spaced = [], []
    for _ in range(2000):
        t0 = time.perf_counter_ns()
        run()
        warm.append(time.perf_counter_ns() - t0)
    for _ in range(500):
        await asyncio.sleep(0.001)
        t0 = time.perf_counter_ns()
        run()
        spaced.append(time.perf_counter_ns() - t0)
    return {"back to back": warm, "one a millisecond": spaced}


class BareClient:
    """ib_async alone, placing a market order when a quote reaches its armed level - the floor.

    With ``journal_rows`` (``--durable-floor``) it first commits one row for the order to a SQLite journal of its
    own (WAL, ``synchronous=NORMAL`` as tickguard's; that many rows and a secondary index already in it, like an
    orders table), the row's values made before the crossing (as they could be for a known stop): the least a
    write-ahead rule costs on SQLite - the bound of any design that commits before it sends."""

    def __init__(self, ib: IB, client_id: int, contracts: dict[str, Any], journal_rows: int | None) -> None:
        self.ib, self.client_id, self.contracts = ib, client_id, contracts
        self.level: dict[str, float | None] = {}
        self.times: list[int] = []
        self.ref = "floor" if journal_rows is None else "floor+journal"
        self.db: sqlite3.Connection | None = None
        self.path: Path | None = None
        self.placed = 0
        if journal_rows is not None:
            self.path = Path(tempfile.mkdtemp()) / "floor.db"
            self.db = sqlite3.connect(self.path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("CREATE TABLE orders (order_key TEXT PRIMARY KEY, trade_id TEXT NOT NULL, status TEXT NOT "
                            "NULL, qty TEXT NOT NULL, intent TEXT NOT NULL, created_ns INTEGER NOT NULL)")
            self.db.execute("CREATE INDEX ix_orders_trade_id ON orders (trade_id)")
            self.db.executemany("INSERT INTO orders VALUES (?, ?, 'filled', '1', '{}', 0)",
                                [(f"tg:0:T{n:05d}:entry", f"T{n:05d}") for n in range(journal_rows)])
        ib.pendingTickersEvent += self.on_pending

    @classmethod
    async def connected(cls, gw: BenchGateway, client_id: int, contracts: dict[str, Any],
                        journal_rows: int | None = None) -> BareClient:
        ib = IB()
        ib.client.MaxRequests = 0  # as the engine's adapter does (adapters/ib/pacing.py): no FIFO holding a burst
        await ib.connectAsync("127.0.0.1", gw.port, clientId=client_id, timeout=20)
        await ib.qualifyContractsAsync(*contracts.values())
        for contract in contracts.values():
            ib.reqMktData(contract, "", False, False)
        client = cls(ib, client_id, contracts, journal_rows)
        while len(ib.tickers()) < len(contracts) or not all(t.bid > 0 for t in ib.tickers()):
            await gw.advance(0.2)
            await asyncio.sleep(0.02)
        return client

    def arm(self, symbols: list[str], levels: list[int]) -> None:
        for sym, cents in zip(symbols, levels, strict=True):
            self.level[sym] = cents / CENTS

    def on_pending(self, tickers: set[Any]) -> None:
        for t in tickers:
            sym, lv = t.contract.symbol, self.level.get(t.contract.symbol)
            if lv is not None and any(k.tickType == 1 and 0 < k.price <= lv + 1e-9 for k in t.ticks):
                self.level[sym] = None
                if self.db is not None:
                    self.db.execute("BEGIN")
                    self.db.execute("INSERT INTO orders VALUES (?, ?, 'submitting', '1', ?, ?)",
                                    (f"tg:0:X{self.placed:05d}:stop:1", f"X{self.placed:05d}",
                                     '{"action": "SELL", "qty": "1"}', self.placed))
                    self.db.execute("COMMIT")
                self.placed += 1
                self.ib.placeOrder(self.contracts[sym], MarketOrder("SELL", 1, orderRef=f"{self.ref}:{sym}",
                                                                    account=ACCOUNT))

    def close(self) -> None:
        """Disconnect; with a journal, check that every order it placed has its committed row (read back on a
        connection of its own)."""
        self.ib.disconnect()
        if self.db is None or self.path is None:
            return
        self.db.close()
        with contextlib.closing(sqlite3.connect(self.path)) as db:
            rows = db.execute("SELECT count(*) FROM orders WHERE status = 'submitting'").fetchone()[0]
        if rows != self.placed:
            raise SystemExit(f"floor+journal: {rows} committed rows for {self.placed} orders")
        print(f"floor+journal: {rows} rows committed, one before each of its {self.placed} orders")


def q(values: list[int], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p * (len(s) - 1)))] / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=5000)
    parser.add_argument("--crossings", type=int, default=300)
    parser.add_argument("--gap", type=float, default=0.01, help="seconds between two crossings (the loop settles)")
    parser.add_argument("--parts", action="store_true", help="p50 and p99 per stage of the engine's step")
    parser.add_argument("--durable-floor", action="store_true", help="a third series: the bare client committing "
                        "one prepared row to a SQLite journal before each order (write-ahead's least cost)")
    parser.add_argument("--rehearsal-cost", action="store_true", help="then time the engine's exit rehearsal "
                        "(runtime/exit_rehearsal.py): back to back, and one a millisecond")
    parser.add_argument("--burst", type=int, default=1, help="symbols crossing in one socket read (a market-wide "
                        "move): the time runs to the last of their exit orders")
    args = parser.parse_args()
    # the start-up's 5,000 entries fill the message budget for ~17 s; the shadow checker's what-ifs queued behind
    # them are refused with a WARNING each - the engine's own account of it, not this measurement's concern
    logging.getLogger("tickguard").setLevel(logging.ERROR)
    res = asyncio.run(run(args))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; {args.trades} open trades, {args.crossings} crossings each"
          + (f" of {args.burst} symbols at once (time to the last exit order)" if args.burst > 1 else ""))
    for name in ("tickguard", "floor", "floor+journal"):
        v = res[name]
        if not v:
            continue
        print(f"  {name:<13} read -> placeOrder written, ms: p50 {q(v, 0.5):.3f}  p90 {q(v, 0.9):.3f}  "
              f"p99 {q(v, 0.99):.3f}  max {q(v, 1):.3f}")
    print(f"  ratio tickguard / floor: p50 {q(res['tickguard'], 0.5) / q(res['floor'], 0.5):.2f}")
    if res["floor+journal"]:
        print(f"  ratio floor+journal / floor: p50 {q(res['floor+journal'], 0.5) / q(res['floor'], 0.5):.2f}")
    for how, v in res["rehearsal"].items():
        print(f"  one exit rehearsal, {how}: p50 {q(v, 0.5) * 1e3:.0f} us  p99 {q(v, 0.99) * 1e3:.0f} us")
    for stage, v in res["stages"].items():
        if len(v) >= len(res["tickguard"]) // 2:
            print(f"    {stage:<24} p50 {q(v, 0.5) * 1e3:7.0f} us  p99 {q(v, 0.99) * 1e3:7.0f} us")


if __name__ == "__main__":
    main()
