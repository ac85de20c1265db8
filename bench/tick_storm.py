"""Tick-storm benchmark: micro-batch mode against the per-tick baseline, in the same run.

Loads S symbols and T open exit levels (STOP at a trigger price, or TRAIL at an offset from a mark that
starts at the symbol's first quote) into the real engine core (TradeManager + TickHandler), feeds a storm
of ticks pre-built in memory - as fast as possible, and at fixed offered rates - and prints throughput,
tick -> exit-intent latency (p50 / p99 / max), backlog at the end of the feed, peak memory, and missed and
duplicate triggers against a brute-force reference (numpy over every tick, in int64 grid units).

Prices are exact from end to end: the bench plays the adapter, turning each quote into the symbol's grid
units once (``PriceGrid.units``); a level file's triggers and offsets are read as decimals from their text,
never as floats; a symbol's tick is the finest decimal step its prices are written with (or ``--tick``).
The reference applies the engine's documented rounding rule (a trailing offset is whole ticks, rounded
down, at least one) with integer arithmetic of its own.

    python bench/tick_storm.py                          # 500 symbols, 5,000 and 50,000 levels, 1M ticks
    python bench/tick_storm.py --ticks FILE.csv.gz --levels LEVELS.csv --fired OUT.csv
    python bench/tick_storm.py --quick --json out.json  # a small run (used by the tests)
"""

from __future__ import annotations

import argparse
import csv
import gc
import gzip
import json
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tickguard.core.exit_rules import StopLoss, TrailingStop
from tickguard.core.model import Action, OrderIntent, OrderType, PriorityClass, Side, Tick, TriggerInfo
from tickguard.core.price_grid import PriceGrid
from tickguard.core.tick_handler import TickHandler
from tickguard.core.trade_manager import TradeManager
from tickguard.core.trades import TradeRequest
from tickguard.core.volatility import VolSnapshot
from tickguard.runtime.telemetry import Telemetry

T0 = 1_700_000_000_000_000_000


@dataclass(slots=True)
class Level:
    idx: int
    symbol: str
    side: str  # the exit order's side: SELL (a long's exit, watches the bid) or BUY (watches the ask)
    kind: str  # STOP or TRAIL
    trigger: Decimal | None  # a STOP's price, exact
    offset: Decimal | None  # a TRAIL's distance behind the mark, exact
    qty: float


# ------------------------------------------------------------------------------------------ inputs


CENT = PriceGrid("0.01")


def generate(symbols: int, levels: int, ticks: int, seed: int) -> tuple[list[Tick], list[Level]]:
    """A storm: random walks with bursts, hot symbols, and levels 0.3-3 ATR away (30% trailing), every price
    on a 0.01 grid (trailing offsets need not be: the engine floors them to whole ticks)."""
    rng = np.random.default_rng(seed)
    names = [f"S{i:04d}" for i in range(symbols)]
    price0 = np.round(rng.uniform(20, 400, symbols), 2)
    atr = price0 * rng.uniform(0.01, 0.03, symbols)
    weights = rng.pareto(1.5, symbols) + 1
    sym = rng.choice(symbols, ticks, p=weights / weights.sum()).astype(np.int64)
    per = np.bincount(sym, minlength=symbols)
    step = atr / np.sqrt(np.maximum(per, 1)) * 1.5  # each symbol wanders ~1.5 ATR over the storm
    noise = rng.normal(0, 1, ticks) * step[sym]
    order = np.argsort(sym, kind="stable")
    mids = np.empty(ticks)
    start = 0
    for s in range(symbols):
        n = per[s]
        seg = order[start:start + n]
        mids[seg] = price0[s] + np.cumsum(noise[seg])
        start += n
    mids = np.maximum(mids, 1.0)
    half = np.maximum(0.01, np.round(mids * 0.0001, 2))
    bid = np.rint((mids - half) * 100).astype(np.int64) * 2  # the adapter's conversion: whole cents, in units
    ask = np.rint((mids + half) * 100).astype(np.int64) * 2
    out = [Tick(names[s], b, a, 0, 100.0, T0 + i * 1000, 0, i + 1)
           for i, (s, b, a) in enumerate(zip(sym.tolist(), bid.tolist(), ask.tolist(), strict=True))]
    first = {}
    for t in out:
        first.setdefault(t.symbol, t)
    lv = []
    for i in range(levels):
        s = int(rng.integers(symbols))
        name = names[s]
        if name not in first:
            continue
        side = "SELL" if rng.random() < 0.5 else "BUY"
        dist = float(rng.uniform(0.3, 3.0) * atr[s])
        if rng.random() < 0.3:
            lv.append(Level(i, name, side, "TRAIL", None, Decimal(f"{dist:.4f}"), 100.0))
        else:
            ref = CENT.price(first[name].bid if side == "SELL" else first[name].ask)
            cents = Decimal(f"{dist:.2f}")
            lv.append(Level(i, name, side, "STOP", ref - cents if side == "SELL" else ref + cents, None, 100.0))
    return out, lv


def read_ticks(path: Path, tick: Decimal | None) -> tuple[list[Tick], dict[str, PriceGrid]]:
    """The file's quotes as the adapter hands them to the core, and each symbol's grid: ``tick``, or the
    finest decimal step the symbol's prices are written with (``1.23455`` -> 0.00001)."""
    opener = gzip.open if path.suffix == ".gz" else open
    places: dict[str, int] = {}
    if tick is None:  # a first pass over the text: each symbol's finest decimal step
        with opener(path, "rt", newline="") as fh:
            for row in csv.DictReader(fh):
                for name in ("bid", "ask", "last"):
                    text = row.get(name) or ""
                    if "." in text:
                        places[row["symbol"]] = max(places.get(row["symbol"], 0), len(text.split(".")[1].rstrip("0")))
    grids = {s: PriceGrid(Decimal(1).scaleb(-max(d, 1))) for s, d in places.items()}
    out = []
    with opener(path, "rt", newline="") as fh:
        for i, row in enumerate(csv.DictReader(fh), start=1):
            grid = grids.setdefault(row["symbol"], PriceGrid(tick or Decimal("0.01")))
            last = grid.units(float(row["last"])) if row.get("last") else 0
            out.append(Tick(row["symbol"], grid.units(float(row["bid"])), grid.units(float(row["ask"])), last, 0.0,
                            int(row["ts_ns"]), 0, i))
    return out, grids


def read_levels(path: Path) -> list[Level]:
    """Levels with their prices and offsets exact, from the file's text."""
    with path.open(newline="") as fh:
        return [Level(int(r["order_idx"]), r["symbol"], r["side"].upper(), r["kind"].upper(),
                      Decimal(r["trigger"]) if r.get("trigger") else None,
                      Decimal(r["trail_offset"]) if r.get("trail_offset") else None, float(r.get("qty") or 1))
                for r in csv.DictReader(fh)]


# --------------------------------------------------------------------------------------- reference


def reference(ticks: list[Tick], levels: list[Level], grids: dict[str, PriceGrid]) -> dict[int, int]:
    """order_idx -> seq of the first tick that fires it, brute force over every (valid) tick with numpy, in
    int64 half-tick units: a trigger is its exact decimal over the half tick (a level off the grid is refused
    by the engine, and skipped here), an offset is floor(offset / tick) whole ticks, at least one."""
    by_sym: dict[str, list[Tick]] = {}
    last_ts: dict[str, int] = {}
    for t in ticks:
        if not (0 < t.bid <= t.ask) or t.ts_ns < last_ts.get(t.symbol, 0):
            continue  # the engine drops these too: crossed, non-positive, non-finite, time going backwards
        last_ts[t.symbol] = t.ts_ns
        by_sym.setdefault(t.symbol, []).append(t)
    arrays = {s: (np.array([t.bid for t in ts], dtype=np.int64), np.array([t.ask for t in ts], dtype=np.int64),
                  np.array([t.seq for t in ts])) for s, ts in by_sym.items()}
    fired: dict[int, int] = {}
    for lv in levels:
        if lv.symbol not in arrays:
            continue
        bid, ask, seq = arrays[lv.symbol]
        tick = grids[lv.symbol].tick
        if lv.kind == "STOP":
            assert lv.trigger is not None
            units = lv.trigger * 2 / tick
            if units != units.to_integral_value():
                continue  # off the grid: the engine refuses the trade
            hit = bid <= int(units) if lv.side == "SELL" else ask >= int(units)
        else:
            assert lv.offset is not None
            off = 2 * max(1, int(lv.offset // tick))
            hit = (bid <= np.maximum.accumulate(bid) - off if lv.side == "SELL"
                   else ask >= np.minimum.accumulate(ask) + off)
        if hit.any():
            fired[lv.idx] = int(seq[int(np.argmax(hit))])
    return fired


# ------------------------------------------------------------------------------------------ engine


class Harness:
    """The engine core with the benchmark's levels loaded as open trades, ready for a storm."""

    def __init__(self, ticks: list[Tick], levels: list[Level], grids: dict[str, PriceGrid], mode: str,
                 window_ns: int, metrics: bool = False) -> None:
        # metrics: record what the engine records for Prometheus (runtime/telemetry.py) on every hand-over and exit,
        # exactly as Engine.dispatch and Engine._flush do
        self.telemetry = Telemetry() if metrics else None
        first: dict[str, Tick] = {}
        for t in ticks:
            if 0 < t.bid <= t.ask and t.symbol not in first:
                first[t.symbol] = t
        self.vol = {s: VolSnapshot(s, 1.0, 1.0, T0) for s in first}
        self.tm = TradeManager(lambda: 0, self.vol.get, lambda s: None, grid=grids.__getitem__)
        self.handler = TickHandler(self.tm, mode=mode, window_ns=window_ns, after_symbol=self._take)
        self.tm.read_quotes_from(self.handler.quote)
        self.handler.seed_quotes(first)
        self.by_trade: dict[str, int] = {}
        self.skipped = 0
        for lv in levels:
            q = first.get(lv.symbol)
            if q is None:
                self.skipped += 1
                continue
            side = Side.LONG if lv.side == "SELL" else Side.SHORT
            mark = q.bid if lv.side == "SELL" else q.ask
            rule = (StopLoss(price=str(lv.trigger)) if lv.kind == "STOP" else
                    TrailingStop(distance=str(lv.offset), unit="price"))
            try:
                trade = self.tm.submit(TradeRequest(symbol=lv.symbol, side=side, qty=max(1.0, round(lv.qty)),
                                                    rules=[rule]))
            except ValueError:
                self.skipped += 1  # e.g. a stop already on the wrong side of the first quote
                continue
            entry = self.tm.outbox.pop()
            self.tm.on_fill(OrderIntent(entry.key, trade.id, "entry", "u", "a", lv.symbol, entry.action, entry.qty,
                                        entry.order_type, None, PriorityClass.ENTRY, 0), entry.qty,
                             grids[lv.symbol].price(mark), T0, 0)
            self.by_trade[trade.id] = lv.idx
        self.tm.outbox.clear()
        self.fired: list[tuple[int, int, int]] = []  # (order_idx, tick seq, emit time ns)
        self.t0 = 0

    def _take(self) -> None:
        tm = self.tm
        if tm.outbox:
            now = time.perf_counter_ns() - self.t0
            tel = self.telemetry
            for intent in tm.outbox:
                if tel is not None:
                    tel.decided(intent, self.handler.quote)
                self.fired.append((self.by_trade[intent.trade_id], intent.trigger.tick_seq, now))
            tm.outbox.clear()

    def process(self, ticks: list[Tick]) -> None:
        """One hand-over, as the engine's step makes it (with the telemetry's step and batch timing when on)."""
        tel = self.telemetry
        if tel is None:
            self.handler.process(ticks)
            return
        tel.step_began()
        began = time.perf_counter_ns()
        self.handler.process(ticks)
        tel.evaluated(len(ticks), time.perf_counter_ns() - began)


def run_max(h: Harness, ticks: list[Tick], chunk: int) -> dict:
    """As fast as possible: the feed is handed over in socket-read-sized chunks."""
    arrivals = np.zeros(len(ticks) + 2, dtype=np.int64)
    gc.collect()
    gc.disable()
    h.t0 = time.perf_counter_ns()
    for i in range(0, len(ticks), chunk):
        now = time.perf_counter_ns() - h.t0
        arrivals[ticks[i].seq:ticks[min(i + chunk, len(ticks)) - 1].seq + 1] = now
        h.process(ticks[i:i + chunk])
    wall = (time.perf_counter_ns() - h.t0) / 1e9
    gc.enable()
    return {"wall_s": wall, "ticks_per_s": len(ticks) / wall, "backlog": 0, **latency(h, arrivals)}


def run_rate(h: Harness, ticks: list[Tick], rate: float) -> dict:
    """A fixed offered rate: tick i arrives at i / rate; each pass takes everything that has arrived."""
    n = len(ticks)
    arrivals = np.zeros(n + 2, dtype=np.int64)
    for t in ticks:
        arrivals[t.seq] = int((t.seq - 1) * 1e9 / rate)
    end_arrival = (n - 1) * 1e9 / rate
    backlog = None
    max_backlog = 0
    i = 0
    gc.collect()
    gc.disable()
    h.t0 = time.perf_counter_ns()
    while i < n:
        now = time.perf_counter_ns() - h.t0
        j = min(n, int(now * rate / 1e9) + 1)
        if backlog is None and now >= end_arrival:
            backlog = n - i
        if j <= i:
            continue  # idle until the next tick arrives
        max_backlog = max(max_backlog, j - i)
        h.process(ticks[i:j])
        i = j
    wall = (time.perf_counter_ns() - h.t0) / 1e9
    gc.enable()
    return {"wall_s": wall, "ticks_per_s": n / wall, "offered_per_s": rate, "backlog": backlog or 0,
            "max_backlog": max_backlog, **latency(h, arrivals)}


def latency(h: Harness, arrivals: np.ndarray) -> dict:
    lat = np.array([emit - arrivals[seq] for _, seq, emit in h.fired], dtype=np.float64) / 1e6
    if len(lat) == 0:
        return {"lat_p50_ms": None, "lat_p99_ms": None, "lat_max_ms": None}
    return {"lat_p50_ms": float(np.percentile(lat, 50)), "lat_p99_ms": float(np.percentile(lat, 99)),
            "lat_max_ms": float(lat.max())}


def check(h: Harness, want: dict[int, int]) -> dict:
    got: dict[int, int] = {}
    dups = 0
    for idx, seq, _ in h.fired:
        if idx in got:
            dups += 1
        got.setdefault(idx, seq)
    missed = sum(1 for idx, seq in want.items() if got.get(idx) != seq)
    extra = sum(1 for idx in got if idx not in want)
    return {"fired": len(got), "expected": len(want), "missed": missed, "extra": extra, "duplicates": dups}


def rss_mb() -> tuple[float, float]:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open("/proc/self/statm") as fh:
        current = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return current, peak


# --------------------------------------------------------------------------------------------- main


def scenario(ticks: list[Tick], levels: list[Level], grids: dict[str, PriceGrid], rates: list[float],
             window_ms: float, chunk: int, label: str) -> list[dict]:
    want = reference(ticks, levels, grids)
    rows = []
    for feed in ["max", *rates]:
        for mode in ("per_tick", "batch"):
            h = Harness(ticks, levels, grids, mode, int(window_ms * 1e6))
            before, _ = rss_mb()
            res = run_max(h, ticks, chunk) if feed == "max" else run_rate(h, ticks, float(feed))
            after, peak = rss_mb()
            row = {"scenario": label, "levels": len(levels) - h.skipped, "mode": mode,
                   "feed": "max" if feed == "max" else f"{int(feed):,}/s", **res, **check(h, want),
                   "rss_mb": after, "rss_growth_mb": after - before, "peak_rss_mb": peak,
                   "batches": h.handler.stats.batches, "evaluated": h.handler.stats.evaluated}
            rows.append(row)
            print_row(row)
            if feed == "max" and mode == "batch":
                base = next(r for r in rows if r["feed"] == "max" and r["mode"] == "per_tick")
                print(f"  -> batch / per-tick throughput: {row['ticks_per_s'] / base['ticks_per_s']:.1f}x")
            del h
            gc.collect()
    rows += metrics_cost(ticks, levels, grids, window_ms, chunk, label, want)
    return rows


def metrics_cost(ticks: list[Tick], levels: list[Level], grids: dict[str, PriceGrid], window_ms: float, chunk: int,
                 label: str, want: dict[int, int], repeats: int = 3) -> list[dict]:
    """Batch mode as fast as possible with the metrics' recording off and on, alternated ``repeats`` times in this
    run (the best of each: the machine's noise only ever slows a run down); the ratio is the metrics' cost."""
    best: dict[str, dict] = {}
    for _ in range(repeats):
        for on in (False, True):
            h = Harness(ticks, levels, grids, "batch", int(window_ms * 1e6), metrics=on)
            res = {**run_max(h, ticks, chunk), **check(h, want)}
            if h.telemetry is not None:
                res["telemetry_batches"] = h.telemetry.batch.count
            key = "batch+metrics" if on else "batch"
            if key not in best or res["ticks_per_s"] > best[key]["ticks_per_s"]:
                best[key] = {"scenario": label, "levels": len(levels) - h.skipped, "mode": key,
                             "feed": "max", "rss_mb": 0.0, "rss_growth_mb": 0.0, "peak_rss_mb": rss_mb()[1], **res}
            del h
            gc.collect()
    rows = [best["batch"], best["batch+metrics"]]
    for row in rows:
        print_row(row)
    ratio = best["batch+metrics"]["ticks_per_s"] / best["batch"]["ticks_per_s"]
    print(f"  -> metrics on / off throughput: {ratio:.3f} ({(1 - ratio) * 100:+.1f} % cost; best of {repeats} "
          "alternated runs each)")
    rows[1]["metrics_on_off_ratio"] = ratio
    direct = recording_cost_s(best["batch+metrics"]["fired"], best["batch+metrics"]["telemetry_batches"])
    share = direct / best["batch"]["wall_s"]
    print(f"  -> the recording itself, timed alone for the same exits and hand-overs: {direct * 1e3:.2f} ms, "
          f"{share * 100:.2f} % of a run (identical runs differ by more than the A/B ratio on a busy machine)")
    rows[1]["recording_share"] = share
    return rows


def recording_cost_s(exits: int, batches: int) -> float:
    """The telemetry's own cost for ``exits`` exits and ``batches`` hand-overs, timed in a loop of its own (an
    attribution that does not depend on two storm runs' noise)."""
    tel = Telemetry()
    tick = Tick("S0000", 990, 992, 0, 0.0, 0, 0, 7)
    intent = OrderIntent("tg:x:T1:stop:1", "T1", "stop", "u", "a", "S0000", Action.SELL, Decimal(1),
                         OrderType.MARKET, None, PriorityClass.EXIT, 0,
                         TriggerInfo("stop_loss", Decimal("9.9"), Decimal("9.9"), 7, 0))
    began = time.perf_counter_ns()
    for _ in range(exits):
        tel.decided(intent, lambda s: tick)
    for _ in range(batches):
        tel.step_began()
        t0 = time.perf_counter_ns()
        tel.evaluated(1024, time.perf_counter_ns() - t0)
    return (time.perf_counter_ns() - began) / 1e9


def print_row(r: dict) -> None:
    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x:8.2f}"
    print(f"{r['scenario']:>14} {r['levels']:>7,} {r['mode']:>8} {r['feed']:>9} {r['ticks_per_s']:>12,.0f} "
          f"{ms(r['lat_p50_ms'])} {ms(r['lat_p99_ms'])} {ms(r['lat_max_ms'])} {r['backlog']:>9,} "
          f"{r['peak_rss_mb']:>8.0f} {r['fired']:>6} {r['missed']:>6} {r['duplicates']:>4}", flush=True)


def machine() -> str:
    model = "unknown CPU"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}, numpy {np.__version__}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--levels-count", type=int, nargs="+", default=[5_000, 50_000])
    ap.add_argument("--n-ticks", type=int, default=1_000_000)
    ap.add_argument("--rates", type=float, nargs="*", default=[50_000, 100_000, 200_000, 400_000])
    ap.add_argument("--window-ms", type=float, default=100.0)
    ap.add_argument("--chunk", type=int, default=1024, help="ticks per hand-over in the as-fast-as-possible feed")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ticks", type=Path, help="replay ticks: CSV(.gz) with ts_ns,symbol,bid,ask")
    ap.add_argument("--tick", type=Decimal, help="every symbol's minimum tick (default: from the prices' decimals)")
    ap.add_argument("--levels", type=Path, help="levels: CSV order_idx,symbol,side,kind,trigger,trail_offset,qty")
    ap.add_argument("--fired", type=Path, help="write order_idx,ts_ns of the tick each level fired on")
    ap.add_argument("--json", type=Path, help="write every figure as JSON")
    ap.add_argument("--quick", action="store_true", help="a small run: 50 symbols, 500 levels, 50k ticks")
    args = ap.parse_args()
    if args.quick:
        args.symbols, args.levels_count, args.n_ticks = 50, [500], 50_000
        args.rates = [100_000]
    print(f"machine: {machine()}")
    print(f"{'scenario':>14} {'levels':>7} {'mode':>8} {'feed':>9} {'ticks/s':>12} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8} {'backlog':>9} {'peak MB':>8} {'fired':>6} {'missed':>6} {'dup':>4}")
    rows: list[dict] = []
    if args.ticks:
        t_load = time.perf_counter()
        ticks, grids = read_ticks(args.ticks, args.tick)
        levels = read_levels(args.levels) if args.levels else generate_levels_for(ticks, grids, args.seed)
        print(f"loaded {len(ticks):,} ticks and {len(levels):,} levels in {time.perf_counter() - t_load:.1f}s; "
              f"ticks: {', '.join(f'{s} {g.tick}' for s, g in sorted(grids.items()))}")
        rows += scenario(ticks, levels, grids, args.rates, args.window_ms, args.chunk, args.ticks.name[:14])
        if args.fired:
            h = Harness(ticks, levels, grids, "batch", int(args.window_ms * 1e6))
            run_max(h, ticks, args.chunk)
            ts_of = {t.seq: t.ts_ns for t in ticks}
            with args.fired.open("w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["order_idx", "ts_ns"])
                for idx, seq, _ in sorted(h.fired):
                    w.writerow([idx, ts_of[seq]])
    else:
        for count in args.levels_count:
            ticks, levels = generate(args.symbols, count, args.n_ticks, args.seed)
            grids = {f"S{i:04d}": CENT for i in range(args.symbols)}
            rows += scenario(ticks, levels, grids, args.rates, args.window_ms, args.chunk, f"{args.symbols} sym")
            del ticks
            gc.collect()
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1))


def generate_levels_for(ticks: list[Tick], grids: dict[str, PriceGrid], seed: int,
                        per_symbol: int = 200) -> list[Level]:
    """Levels around a replayed file's symbols when no --levels file is given (0.1%-2% from the first quote),
    triggers on the symbol's grid."""
    rng = np.random.default_rng(seed)
    first: dict[str, Tick] = {}
    for t in ticks:
        if 0 < t.bid <= t.ask:
            first.setdefault(t.symbol, t)
    out = []
    for name, q in sorted(first.items()):
        grid = grids[name]
        for _ in range(per_symbol):
            side = "SELL" if rng.random() < 0.5 else "BUY"
            dist = int(float(rng.uniform(0.001, 0.02)) * q.bid) // 2 * 2  # whole ticks, in units
            if rng.random() < 0.3:
                out.append(Level(len(out), name, side, "TRAIL", None, grid.price(dist), 100.0))
            else:
                trig = grid.price(q.bid - dist if side == "SELL" else q.ask + dist)
                out.append(Level(len(out), name, side, "STOP", trig, None, 100.0))
    return out


if __name__ == "__main__":
    main()
