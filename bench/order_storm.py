"""How long does an exit storm take to reach the wire, against the least the message budget allows?

N long trades on one symbol (through ``ib_async`` to the fake gateway, in this process), then one quote far below
every stop: all N exits fire in one engine step.  Measured: from the moment the engine receives that quote to the
moment the last exit order is handed to the socket.  Baseline, in the same run: the budget's own minimum for N
messages - the first ``burst`` at once, the rest at ``rate`` per window (``(N - burst) * window / rate``) - so the
ratio says what the engine adds on top of the pacing it must keep.  Also: the order the exits left in (most at
risk first?) and the gateway's count of the busiest 1 s window.  Run: ``python bench/order_storm.py [--exits N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "adapters" / "ib"), str(ROOT / "tests" / "ibfake"), str(ROOT / "tests")]

from ib_engine_support import ACCOUNT, engine_on_gateway, until  # noqa: E402

from ibfake.clock import PacingLimits  # noqa: E402
from tickguard.adapters.broker import BrokerOrder  # noqa: E402
from tickguard.core.exit_rules import StopLoss  # noqa: E402
from tickguard.core.message_budget import order_lane  # noqa: E402
from tickguard.core.model import Side  # noqa: E402
from tickguard.core.trades import TradeRequest  # noqa: E402


def trade(i: int) -> TradeRequest:
    return TradeRequest(symbol="AAA", side=Side.LONG, qty=1 + i % 7, account=ACCOUNT,
                        rules=[StopLoss(distance=Decimal("5.00") + Decimal(i % 100) / 100, unit="price")])


async def storm(n: int, rate: int, burst: int, gateway_limit: int) -> dict[str, float]:
    settings = {"throttle": {"rate": rate, "burst": burst, "entry_queue_max": 100_000, "window_margin_s": 0.3},
                "watchdog": {"enabled": False}}
    async with engine_on_gateway(["AAA"], client_id=51, settings=settings,
                                 gateway={"pacing": PacingLimits(max_msgs_per_s=gateway_limit)}) as run:
        gw, engine, broker = run.gw, run.engine, run.broker
        trades = [engine.submit(trade(i)) for i in range(n)]
        await until(lambda: all(t.state.value != "pending_entry" for t in trades), gw, timeout=600)
        quote = engine.ticks.quote("AAA")
        assert quote is not None
        low = float(engine.grid("AAA").price(quote.bid)) - 10
        await asyncio.sleep(1.5)  # the entries' budget window passes: the storm starts with a full budget
        wire: list[tuple[float, str]] = []
        place = broker.place_order

        def timed(order: BrokerOrder) -> int:
            wire.append((time.perf_counter(), order.ref))
            return place(order)

        broker.place_order = timed  # type: ignore[method-assign]
        received: list[float] = []
        dispatch = engine.dispatch

        def first_seen(events: list) -> None:
            if not received and events:
                received.append(time.perf_counter())
            dispatch(events)

        engine.dispatch = first_seen  # type: ignore[method-assign]
        received.clear()
        gw.burst("AAA", [(low, low + 0.01)])
        await until(lambda: sum(1 for _, ref in wire if ":stop:" in ref) >= n, gw, step=0.0, timeout=600)
        exits = [(t, ref) for t, ref in wire if ":stop:" in ref]
        records = {r.intent.key: r for r in engine.executor.orders.values()}
        risks = [order_lane(records[ref].intent) for _, ref in exits]
        report = gw.pacing_report()[51]
        return {"elapsed_s": exits[-1][0] - received[0], "first_exit_ms": (exits[0][0] - received[0]) * 1e3,
                "in_risk_order": float(risks == sorted(risks)), "max_in_window": report.max_in_window,
                "refused": report.refused}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exits", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=450, help="budget (the gateway allows rate * 10 / 9)")
    parser.add_argument("--burst", type=int, default=45)
    args = parser.parse_args()
    figures = asyncio.run(storm(args.exits, args.rate, args.burst, args.rate * 10 // 9))
    floor = max(0, args.exits - args.burst) * 1.3 / args.rate  # the budget's window is 1 s + 0.3 s margin here
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    print(f"{args.exits} exits, budget {args.rate}/1.3 s (burst {args.burst}), gateway limit "
          f"{args.rate * 10 // 9}/s")
    print(f"  first exit on the wire after the storm quote: {figures['first_exit_ms']:.2f} ms")
    print(f"  last exit on the wire: {figures['elapsed_s']:.3f} s; the budget's minimum {floor:.3f} s; "
          f"ratio {figures['elapsed_s'] / floor if floor else float('nan'):.3f}")
    print(f"  exits in risk order: {bool(figures['in_risk_order'])}; busiest 1 s at the gateway: "
          f"{figures['max_in_window']:.0f} messages; refused by the gateway: {figures['refused']:.0f}")


if __name__ == "__main__":
    main()
