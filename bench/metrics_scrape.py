"""What a Prometheus scrape costs the engine: the whole simulated engine with metrics scraped and without, in the
same run, and how long one scrape holds the event loop with thousands of open trades.

    python bench/metrics_scrape.py                 # 20 symbols, 5,000 open trades, scrapes every 0.25 s
    python bench/metrics_scrape.py --quick         # 5 symbols, 300 trades (used by the tests)

Each round builds the same engine (same seed: same ticks, same trades) and runs it for the same virtual time, once
with a scraper task that calls the HTTP handler's work (``EngineMetrics.refresh`` + the exposition) every
``--every`` wall seconds, once without; the rounds alternate and the best of each is kept (noise only slows a run
down).  Figures: engine ticks per wall second with and without scrapes (the ratio is the cost), one scrape's
wall time (mean, max) and its longest hold of the event loop (the longest slice between two yields).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from prometheus_client import CollectorRegistry, generate_latest

from tick_storm import machine  # the same machine line as the tick-storm benchmark (bench/ is on the path)
from tickguard.config import load
from tickguard.core.exit_rules import StopLoss, TakeProfit
from tickguard.core.model import Side
from tickguard.core.trades import TradeRequest
from tickguard.runtime.engine_factory import sim_engine
from tickguard.runtime.metrics import EngineMetrics, exposition

NS = 1_000_000_000


async def build(symbols: int, trades: int):
    """An engine on the simulated market with ``trades`` open trades (wide levels: they stay open)."""
    s = load(None, {"sim": {"speed": 0, "symbols": symbols, "seed": 3},
                    "throttle": {"entry_queue_max": 1_000_000, "entry_wait_max_s": 86_400},
                    "shadow": {"enabled": False}, "volatility": {"intraday": False}})
    engine, venue = sim_engine(s)
    names = sorted(venue.specs)
    await engine.start(names)
    await engine.run_until(engine.broker.now_ns() + 2 * NS)
    for i in range(trades):
        engine.submit(TradeRequest(symbol=names[i % len(names)], side=(Side.LONG, Side.SHORT)[i % 2],
                                   qty=Decimal(10), account=f"DU{i % 4}",
                                   rules=[StopLoss(distance=20.0), TakeProfit(distance=20.0)]))
    await engine.run_until(engine.broker.now_ns() + (trades // 40 + 5) * NS)  # the budget lets 45 entries a second go
    return engine


async def one_round(symbols: int, trades: int, virtual_s: float, every_s: float | None) -> dict:
    engine = await build(symbols, trades)
    collector = EngineMetrics(engine)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    scrapes: list[float] = []

    async def scraper() -> None:
        assert every_s is not None
        while True:
            await asyncio.sleep(every_s)
            began = time.perf_counter()
            await exposition(collector, registry, generate_latest)
            scrapes.append(time.perf_counter() - began)

    ticks0 = engine.ticks.counters.accepted
    gc.collect()
    task = asyncio.get_running_loop().create_task(scraper()) if every_s else None
    wall0 = time.perf_counter()
    await engine.run_until(engine.broker.now_ns() + int(virtual_s * NS))
    wall = time.perf_counter() - wall0
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    live = len(engine.trades.live_trades())
    ticks = engine.ticks.counters.accepted - ticks0
    await engine.broker.close()
    return {"ticks": ticks, "wall_s": wall, "ticks_per_s": ticks / wall, "live_trades": live,
            "scrapes": len(scrapes), "scrape_mean_ms": 1e3 * sum(scrapes) / len(scrapes) if scrapes else None,
            "scrape_max_ms": 1e3 * max(scrapes) if scrapes else None}


async def hold_of_one_scrape(symbols: int, trades: int) -> dict:
    """The longest time one scrape keeps the loop: refresh's slices and the exposition, measured by a ticker task
    that notes how late it runs while a scrape is under way."""
    engine = await build(symbols, trades)
    collector = EngineMetrics(engine)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    stalls: list[float] = []
    for _ in range(20):
        done = asyncio.Event()

        async def ticker(flag: asyncio.Event = done) -> None:
            last = time.perf_counter()
            while not flag.is_set():
                await asyncio.sleep(0)
                now = time.perf_counter()
                stalls.append(now - last)
                last = now

        t = asyncio.get_running_loop().create_task(ticker())
        await asyncio.sleep(0)
        body = await exposition(collector, registry, generate_latest)
        done.set()
        await t
    await engine.broker.close()
    return {"longest_loop_hold_ms": 1e3 * max(stalls), "exposition_bytes": len(body),
            "live_trades": len(engine.trades.live_trades())}


async def main_async(args: argparse.Namespace) -> dict:
    best: dict[str, dict] = {}
    for _ in range(args.repeats):
        for label, every in (("no scrape", None), (f"scrape every {args.every:g}s", args.every)):
            r = await one_round(args.symbols, args.trades, args.virtual_s, every)
            if label not in best or r["ticks_per_s"] > best[label]["ticks_per_s"]:
                best[label] = r
    hold = await hold_of_one_scrape(args.symbols, args.trades)
    return {"machine": machine(), "symbols": args.symbols, "trades": args.trades, "rounds": best, "hold": hold}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", type=int, default=20)
    ap.add_argument("--trades", type=int, default=5_000)
    ap.add_argument("--virtual-s", type=float, default=1800.0, help="virtual seconds each round runs")
    ap.add_argument("--every", type=float, default=0.25, help="wall seconds between scrapes")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.quick:
        args.symbols, args.trades, args.virtual_s, args.every, args.repeats = 4, 200, 1800.0, 0.02, 1
    out = asyncio.run(main_async(args))
    print(f"machine: {out['machine']}")
    print(f"{'round':>22} {'ticks/s':>10} {'live':>6} {'scrapes':>8} {'mean ms':>8} {'max ms':>8}")
    for label, r in out["rounds"].items():
        mean = "-" if r["scrape_mean_ms"] is None else f"{r['scrape_mean_ms']:8.2f}"
        mx = "-" if r["scrape_max_ms"] is None else f"{r['scrape_max_ms']:8.2f}"
        print(f"{label:>22} {r['ticks_per_s']:>10,.0f} {r['live_trades']:>6} {r['scrapes']:>8} {mean:>8} {mx:>8}")
    base, scraped = out["rounds"].values()
    ratio = scraped["ticks_per_s"] / base["ticks_per_s"]
    out["ratio"] = ratio
    print(f"  -> engine throughput with scrapes / without: {ratio:.3f}")
    print(f"  -> longest event-loop hold of one scrape at {out['hold']['live_trades']} live trades: "
          f"{out['hold']['longest_loop_hold_ms']:.2f} ms ({out['hold']['exposition_bytes']:,} bytes exposed)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
