"""How long does a routine reconciliation pass hold the event loop to compare IB's book with the journal?

``Reconciler.apply`` (runtime/reconciliation.py) over a day of N filled entries: N orders ended at the broker, N
executions, N open trades in the journal, a few hundred exits still working - the state of
``bench/wire_to_wire.py`` after its crossings, where this pass held the loop ~23 ms every 30 s at N = 5,000 (the
read of the book, ``bench/order_book_read.py``, is a hold of its own).  Nothing else runs while it does.

Baseline in the same run: the least any such pass must do - look up each of the book's orders and executions in
the executor's records once (a dict lookup each).  The ratio says how far the pass is from touching each entry
once.  Run: ``python bench/reconcile_pass.py [--trades N] [--working W] [--thrash MB] [--fresh] [--as-read]``
(``--thrash``: memory cold before each, as in a running engine; ``--fresh``: the first pass after the day's fills
were heard as events); against another tree, with that tree's ``src`` first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import time
from decimal import Decimal
from types import SimpleNamespace

from tickguard.adapters.broker import FillEvent, OrderBook
from tickguard.core.exit_rules import StopLoss
from tickguard.core.model import Action, OrderIntent, OrderType, PriorityClass, Side
from tickguard.core.open_positions import OpenPositions
from tickguard.core.order_state import OrderStatus
from tickguard.core.trades import Trade, TradeRequest
from tickguard.runtime.order_record import OrderRecord
from tickguard.runtime.reconciliation import Reconciler

JOURNAL_ID = "0123abcd"
ACCOUNT = "DU0000001"
NS = 1_000_000_000
ONE = Decimal(1)


def intent(key: str, trade_id: str, symbol: str, leg: str, action: Action) -> OrderIntent:
    return OrderIntent(key=key, trade_id=trade_id, leg=leg, user="demo", account=ACCOUNT, symbol=symbol,
                       action=action, qty=ONE, order_type=OrderType.MARKET, limit_price=None,
                       priority=PriorityClass.ENTRY if leg == "entry" else PriorityClass.EXIT_CRITICAL, created_ns=0)


def day(trades: int, working: int, symbols: int = 20) -> tuple[Reconciler, OrderBook]:
    """The reconciler, executor records, trades and IB's book after ``trades`` filled entries, the last
    ``working`` of them with a stop exit working at the broker."""
    orders: dict[str, OrderRecord] = {}
    open_trades: dict[str, Trade] = {}
    ended: dict[str, tuple[int, OrderStatus]] = {}
    book_working: dict[str, tuple[int, Decimal]] = {}
    executions: list[FillEvent] = []
    positions: dict[str, Decimal] = {}
    for i in range(trades):
        tid, symbol = f"T{i + 1:05d}", f"W{i % symbols:03d}"
        request = TradeRequest(symbol=symbol, side=Side.LONG, qty=1, account=ACCOUNT, rules=[StopLoss(price=99.0)])
        open_trades[tid] = Trade(tid, request, 1, 0, entry_filled=ONE)
        key = f"tg:{JOURNAL_ID}:{tid}:entry"
        exec_id = f"0000e{i:06d}.01.01"
        record = OrderRecord(intent(key, tid, symbol, "entry", Action.BUY), status=OrderStatus.FILLED, attempts=1,
                             order_id=i + 1, filled=ONE, notional=Decimal("99.81"))
        record.exec_ids.add(exec_id)
        orders[key] = record
        ended[key] = (i + 1, OrderStatus.FILLED)
        executions.append(FillEvent(i + 1, key, exec_id, ACCOUNT, symbol, Action.BUY, ONE, Decimal("99.81"), 0,
                                    Decimal("1.00")))
        positions[symbol] = positions.get(symbol, Decimal(0)) + ONE
        if i >= trades - working:
            exit_key = f"tg:{JOURNAL_ID}:{tid}:stop:1"
            orders[exit_key] = OrderRecord(intent(exit_key, tid, symbol, "stop", Action.SELL),
                                           status=OrderStatus.SUBMITTED, attempts=1, order_id=trades + i + 1)
            book_working[exit_key] = (trades + i + 1, Decimal(0))
    applied = {f.exec_id for f in executions}  # heard as events: the executor applied every one
    at_broker = {key: r for key, r in orders.items() if r.status.at_broker}  # as the executor keeps them
    executor = SimpleNamespace(orders=orders, session="", held_elsewhere=set(), applied_execs=applied,
                               at_broker=at_broker, journaled_over={})
    held = OpenPositions()  # as the trade manager keeps them (core/open_positions.py)
    for trade in open_trades.values():
        held.add(trade, trade.entry_filled)
    manager = SimpleNamespace(trades=open_trades, positions=held)
    reconciler = Reconciler(executor, manager, lambda: 0,  # type: ignore[arg-type]
                            JOURNAL_ID, 30 * NS, 5 * NS, 5 * NS)
    book = OrderBook(book_working, ended, executions, {ACCOUNT: positions}, ACCOUNT)
    return reconciler, book


def floor(reconciler: Reconciler, book: OrderBook) -> None:
    orders = reconciler._executor.orders
    for key in book.working:
        orders.get(key)
    for key in book.ended:
        orders.get(key)
    for fill in book.executions:
        orders.get(fill.ref)


def timed(run: object, passes: int, junk: bytearray | None = None, before: object = None) -> list[float]:
    """Each pass's ms; with ``junk``, walked before each pass (a write per 64-byte line): memory cold, as after the
    30 s of quote stream between two passes of a running engine.  ``before`` runs before each, untimed."""
    out = []
    for _ in range(passes):
        if before is not None:
            before()  # type: ignore[operator]
        if junk:
            for i in range(0, len(junk), 64):
                junk[i] ^= 1
        t0 = time.perf_counter()
        run()  # type: ignore[operator]
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=5000)
    parser.add_argument("--working", type=int, default=300)
    parser.add_argument("--passes", type=int, default=15)
    parser.add_argument("--thrash", type=int, default=0, help="MB walked before each pass and each baseline (cold)")
    parser.add_argument("--as-read", action="store_true", help="the book as a running pass now gets it from the "
                        "adapter: without the executions the engine applied and the orders it holds final "
                        "(adapters/broker.py KnownToEngine) - against a tree before it, run that one without")
    parser.add_argument("--fresh", action="store_true", help="every execution new to the pass (heard as events "
                        "since the last one): the first pass after a day's fills, as in bench/wire_to_wire.py")
    args = parser.parse_args()
    junk = bytearray(args.thrash * 1024 * 1024) if args.thrash else None
    reconciler, book = day(args.trades, args.working)
    whole = book  # the baseline looks up every entry of the day's book, whatever the pass is handed
    if args.as_read:  # what the adapter leaves out as it reads (the same test as KnownToEngine's, on this book)
        ex = reconciler._executor
        book = OrderBook(book.working, {k: v for k, v in book.ended.items() if not ex.orders[k].final},
                         [f for f in book.executions if f.exec_id not in ex.applied_execs], book.positions,
                         book.default_account)
    reconciler.apply(book, 0)  # the first pass sees every execution; the routine ones after it are measured
    assert reconciler.state.differences == {} and reconciler._suspect == set(), reconciler._suspect
    gc.collect()
    gc.freeze()  # as the engine does after start-up (runtime/gc_policy.py)
    passes: list[float] = []
    floors: list[float] = []
    for _ in range(3):  # interleaved, so a slow patch of the machine hits both
        floors += timed(lambda: floor(reconciler, whole), args.passes, junk)
        passes += timed(lambda: reconciler.apply(book, 0), args.passes, junk,
                        (lambda: reconciler._seen_execs.clear()) if args.fresh else None)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    print(f"{args.trades} filled entries and executions, {args.working} exits working"
          + (f", {args.thrash} MB walked before each (cold)" if junk else "")
          + (", every execution new to the pass" if args.fresh else "")
          + (", the book as the adapter now hands it over" if args.as_read else "") + "; ms (median / max):")
    print(f"  one lookup per book entry (baseline): {statistics.median(floors):.2f} / {max(floors):.2f}")
    print(f"  Reconciler.apply, a routine pass:     {statistics.median(passes):.2f} / {max(passes):.2f}")
    print(f"  ratio pass / baseline: {statistics.median(passes) / statistics.median(floors):.1f}")


if __name__ == "__main__":
    main()
