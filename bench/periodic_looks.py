"""How long do the engine's periodic looks at its open trades hold the event loop, when memory is cold?

Two looks run while quotes stream, on the engine's only thread: the market-data watchdog asks every second which
symbols have a watched trade (``TradeManager.symbols_in``), and the shadow checker looks at every live trade every
2 s, ``LOOK_SLICE`` of them per engine step (``ShadowChecker.on_time``).  Between two looks the quote stream has
run for a second: on a VM the trade objects are no longer in any cache, and each object touched costs misses of
the cache and of the TLB.  A look that touches every trade then holds the loop for milliseconds - an exit whose
crossing arrives meanwhile waits for it (bench/wire_to_wire.py ``--probe``, on a busy host: 2.5-3.8 ms a second
in ``symbols_in``, 2-9 ms for the shadow's first step of a look).

Here: N open trades over S symbols (``--closes`` of them closed between two looks, as crossings close them), and
before each look ``--thrash`` MB of memory is walked (the stream's stand-in: it evicts the caches).  Printed: each
look's longest hold of the loop (the watchdog's call; the shadow's longest step) and the sum of a shadow look's steps,
cold and warm.  Baseline in the same run: a walk that reads one attribute of every trade once (``min`` of ``id``
lengths) - what "touching every trade" costs on this machine, cold.  Against another tree: that tree's ``src``
first on ``PYTHONPATH``.

    python bench/periodic_looks.py [--trades 5000] [--symbols 20] [--looks 30] [--closes 40] [--thrash 64]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import time
from decimal import Decimal

from tickguard.core.exit_rules import StopLoss
from tickguard.core.model import Side, Tick
from tickguard.core.order_state import OrderStatus
from tickguard.core.price_grid import CENT
from tickguard.core.trade_manager import TradeManager
from tickguard.core.trades import TradeRequest
from tickguard.core.volatility import VolSnapshot
from tickguard.runtime.shadow import ShadowChecker, stop_exit_key
from tickguard.runtime.watchdog import WATCHED_STATES

NS = 1_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000 * NS

    def __call__(self) -> int:
        return self.now


def opened(n: int, symbols: int, clock: Clock) -> tuple[TradeManager, list[str]]:
    """``n`` open long trades round-robin over ``symbols`` symbols, each trade of a symbol a cent of stop under the
    one before (99.00, 98.99, ...): a quote at a symbol's highest stop closes one trade, as in wire_to_wire."""
    names = [f"S{i:03d}" for i in range(symbols)]
    quotes = {s: Tick(s, CENT.units(100.0), CENT.units(100.01), 0, 100.0, clock.now, clock.now, 0) for s in names}
    vols = {s: VolSnapshot(s, 2.0, 3.0, clock.now) for s in names}
    tm = TradeManager(clock, vols.get, quotes.get)
    for i in range(n):
        tm.submit(TradeRequest(symbol=names[i % symbols], side=Side.LONG, qty=1,
                               rules=[StopLoss(price=round(99.0 - (i // symbols) * 0.01, 2))]))
    for intent in tm.outbox:
        tm.on_fill(intent, Decimal(1), Decimal(100), clock.now, Decimal(0))
        tm.on_intent_closed(intent, OrderStatus.FILLED, Decimal(0), "")
    tm.outbox = []
    return tm, names


def close_one(tm: TradeManager, clock: Clock, symbol: str, crossed: int) -> None:
    """A quote at ``symbol``'s highest stop still open (``crossed`` fired before it) closes its trade, the exit
    filled, as a crossing of the stream does between two looks."""
    bid = CENT.units(round(99.0 - crossed * 0.01, 2))
    clock.now += 1
    tm.evaluate(Tick(symbol, bid, bid + 1, 0, 100.0, clock.now, clock.now, 0))
    assert len(tm.outbox) == 1, tm.outbox
    for intent in tm.outbox:
        tm.on_fill(intent, Decimal(1), Decimal(99), clock.now, Decimal(0))
        tm.on_intent_closed(intent, OrderStatus.FILLED, Decimal(0), "")
    tm.outbox = []


def thrash(junk: bytearray) -> None:
    """Walk ``junk`` (a write per 64-byte line) and make some garbage: the stream's stand-in between two looks."""
    for i in range(0, len(junk), 64):
        junk[i] ^= 1
    _ = [str(i) for i in range(50_000)]


async def _never(_order: object) -> None:  # a what-if: never awaited here (no event loop: no check starts)
    raise AssertionError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=5000)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--looks", type=int, default=30)
    parser.add_argument("--closes", type=int, default=40, help="trades closed between two looks (wire_to_wire's "
                        "200 crossings in 10 s: 40 in a shadow look's 2 s)")
    parser.add_argument("--thrash", type=int, default=64, help="MB walked before each look (0: warm)")
    args = parser.parse_args()
    clock = Clock()
    tm, names = opened(args.trades, args.symbols, clock)
    crossings = 0
    shadow = ShadowChecker(_never, tm, clock, 60 * NS, 4, lambda _t: None, scan_ns=2 * NS,
                           exit_key=stop_exit_key(tm))
    junk = bytearray(args.thrash * 1024 * 1024)
    gc.disable()  # the looks' own cost, not a collection that happens to fall in one
    figures: dict[str, dict[str, list[float]]] = {}
    for mode in ("cold", "warm"):
        f = figures[mode] = {"baseline": [], "watchdog": [], "shadow_step_max": [], "shadow_look": []}
        for _ in range(args.looks):
            for _ in range(args.closes):
                close_one(tm, clock, names[crossings % len(names)], crossings // len(names))
                crossings += 1
            clock.now += 2 * NS
            if mode == "cold":
                thrash(junk)
            t0 = time.perf_counter_ns()
            min(len(t.id) for t in tm.trades.values())
            f["baseline"].append((time.perf_counter_ns() - t0) / 1e3)
            if mode == "cold":
                thrash(junk)
            t0 = time.perf_counter_ns()
            tm.symbols_in(WATCHED_STATES)
            f["watchdog"].append((time.perf_counter_ns() - t0) / 1e3)
            if mode == "cold":
                thrash(junk)
            steps = []
            while True:
                t0 = time.perf_counter_ns()
                shadow.on_time(clock.now)
                steps.append((time.perf_counter_ns() - t0) / 1e3)
                if shadow._next_scan > clock.now:  # the look is done (its queued checks wait: no event loop here)
                    break
            f["shadow_step_max"].append(max(steps))
            f["shadow_look"].append(sum(steps))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; {args.trades} trades over {args.symbols} symbols, {args.looks} looks, "
          f"{args.closes} closed before each, {args.thrash} MB walked before each cold one")
    for mode, f in figures.items():
        base = statistics.median(f["baseline"])
        print(f"  {mode}: touch every trade once (baseline) {base:7.0f} us")
        for name in ("watchdog", "shadow_step_max", "shadow_look"):
            med = statistics.median(f[name])
            print(f"    {name:<16} median {med:7.0f} us  max {max(f[name]):7.0f} us  ({med / base:.2f}x baseline)")


if __name__ == "__main__":
    main()
