"""Does the write-ahead journal stall the tick path?  Three measurements, one process, one baseline.

1. The same seeded ``tickguard sim`` session (speed 0, demo trades opened over the run) without a journal -
   the baseline - and with SQLite (synchronous NORMAL, FULL) and PostgreSQL: wall time, ticks/s, the ratio
   to the baseline, and the latency of every engine step, since a slow step is a stalled tick path.
2. The commit latency of the write-ahead path in those sessions: each ``Journal`` commit is timed (p50 /
   p99 / max), with commits/s and rows per commit - how much ``batch()`` groups.
3. A Journal driven directly at a fixed offered rate of order state changes (order row + event row, as
   the recorder writes them), batched per engine step vs one commit per write: the latency from a change's
   arrival to its durable commit, and the batched / unbatched cost per change.

The timings come from wrapping the journal's and engine's methods on the instance (the classes are not
touched), so the baseline carries the same wrapper cost as the journaled runs.  Run:
``python bench/journal_latency.py [--json FILE] [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from tickguard import config
from tickguard.interfaces.demo import demo_trades
from tickguard.runtime.engine_factory import sim_engine
from tickguard.store.journal import Journal

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"
BACKENDS = ("sqlite-normal", "sqlite-full", "postgresql")
STAGES = ("submitting", "sent", "submitted", "fill", "closed")  # an order's journaled life in the sim
QTY, PRICE, FEE, ZERO = Decimal(300), Decimal("99.48"), Decimal("1.5"), Decimal(0)  # the journal's exact amounts
FULL = {"symbols": 20, "trades": 200, "duration_s": 600.0, "rounds": 2, "rates": (200, 1000), "micro_s": 2.0}
QUICK = {"symbols": 5, "trades": 20, "duration_s": 60.0, "rounds": 1, "rates": (200, 1000), "micro_s": 0.3}
STEP_S = 0.002  # engine wake-up cadence of the microbench: the sim delivers ~270 ticks/s, a step every few ms


def machine(workdir: Path) -> dict[str, Any]:
    """What the figures depend on: they mean little without the cores, CPU and Python that produced them."""
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), model)
    return {"cores": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "platform": platform.platform(), "journal_dir": str(workdir),
            "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def dist(samples_ns: list[int]) -> dict[str, float]:
    """p50 / p99 / max in microseconds (zeros when there is nothing to summarise, so the JSON keeps its shape)."""
    if not samples_ns:
        return {"n": 0, "p50_us": 0.0, "p99_us": 0.0, "max_us": 0.0, "mean_us": 0.0}
    a = np.asarray(samples_ns, dtype=np.float64) / 1e3
    p50, p99 = np.percentile(a, [50, 99])
    return {"n": len(a), "p50_us": float(p50), "p99_us": float(p99), "max_us": float(a.max()),
            "mean_us": float(a.mean())}


# ---------------------------------------------------------------------------------------------- backends

def pg_reachable() -> str | None:
    """None if PostgreSQL answers, else why not (the PostgreSQL rows are then skipped, with that note)."""
    try:
        psycopg.connect(PG_ADMIN, autocommit=True).close()
        return None
    except psycopg.Error as exc:
        return f"PostgreSQL unreachable at 127.0.0.1:5432 ({str(exc).strip().splitlines()[0]})"


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    """A fresh database, dropped afterwards: a reused one would restore the previous run's open trades."""
    name = f"tickguard_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def open_journal(backend: str, workdir: Path) -> Iterator[Journal | None]:
    """A new, empty journal on ``backend`` ("none" = no journal, the baseline), removed afterwards."""
    if backend == "none":
        yield None
    elif backend == "postgresql":
        with pg_database() as url:
            journal = Journal.open(url)
            try:
                yield journal
            finally:
                journal.close()
    else:
        path = workdir / f"{backend}-{uuid.uuid4().hex[:8]}.db"
        journal = Journal.open(path, synchronous=backend.split("-")[1].upper())
        try:
            yield journal
        finally:
            journal.close()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)


class Probe:
    """Times each real commit and counts the rows journaled, by wrapping this journal instance's methods."""

    def __init__(self, journal: Journal) -> None:
        self.commit_ns: list[int] = []
        self.rows = 0
        self.events = 0
        self.journal = journal
        commit, write, event = journal._commit, journal._write, journal.event

        def timed_commit() -> None:
            # only a commit the journal made is timed (nothing written: it commits nothing - on SQLite the next
            # transaction is begun already, sqlite_writes.ready)
            made = journal.commits
            t0 = time.perf_counter_ns()
            commit()
            if journal.commits > made:
                self.commit_ns.append(time.perf_counter_ns() - t0)

        def counted_write(stmt: Any, params: Any = None, defer: bool = False) -> int:
            self.rows += 1
            return write(stmt, params, defer)

        def counted_event(*args: Any, **kwargs: Any) -> None:
            self.events += 1
            event(*args, **kwargs)

        journal._commit = timed_commit  # type: ignore[method-assign]
        journal._write = counted_write  # type: ignore[method-assign]
        journal.event = counted_event  # type: ignore[method-assign]

    def detach(self) -> None:
        """Drop the wrappers (the class's methods show through again), so probes never stack."""
        for name in ("_commit", "_write", "event"):
            vars(self.journal).pop(name, None)


# ------------------------------------------------------------------------------------ 1 + 2: sim sessions

async def sim_session(settings: config.Settings, journal: Journal | None) -> dict[str, Any]:
    """One session as ``simulation.run_session`` runs it, but timing only the event loop (``run_until``):
    opening, migrating and start-up writes are not the tick path."""
    sim = settings.sim
    ticks = [0]

    def count_tick(_tick: object) -> None:
        ticks[0] += 1

    engine, venue = sim_engine(settings, count_tick, journal)
    symbols = sorted(venue.specs)
    await engine.start(symbols)
    start_ns = engine.broker.now_ns()
    end_ns, warm_ns = start_ns + int(sim.duration_s * 1e9), start_ns + int(sim.warmup_s * 1e9)
    requests = demo_trades(sim.trades, symbols, sim.seed)
    spread = max(0, (end_ns - warm_ns) // 3)  # as run_session: trades open over the first third
    for i, request in enumerate(requests):
        engine.schedule(warm_ns + spread * i // max(1, len(requests)), request)
    probe = Probe(journal) if journal is not None else None
    step_ns: list[int] = []
    step = engine.step

    def timed_step(events: list) -> None:
        t0 = time.perf_counter_ns()
        step(events)
        step_ns.append(time.perf_counter_ns() - t0)

    gc_ns: list[int] = []  # a long step may be the collector, not the journal: time its passes too
    gc_t0 = [0]

    def gc_timer(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            gc_t0[0] = time.perf_counter_ns()
        else:
            gc_ns.append(time.perf_counter_ns() - gc_t0[0])

    engine.step = timed_step  # type: ignore[method-assign]
    ticks[0] = 0
    gc.callbacks.append(gc_timer)
    t0 = time.perf_counter()
    try:
        await engine.run_until(end_ns)
    finally:
        wall = time.perf_counter() - t0
        gc.callbacks.remove(gc_timer)
    await engine.broker.close()
    if probe is not None:
        probe.detach()
    return {"wall_s": wall, "ticks": ticks[0], "steps": len(step_ns), "step_ns": step_ns, "gc_ns": gc_ns,
            "orders": len(engine.executor.orders), "rejected": len(engine.stats.rejected_requests),
            "commit_ns": probe.commit_ns if probe else [], "rows": probe.rows if probe else 0,
            "events": probe.events if probe else 0}


def sim_bench(p: dict[str, Any], backends: list[str], workdir: Path) -> dict[str, Any]:
    """Rounds interleave the backends so drift on a shared machine hits all alike; the fastest wall time
    of each backend is kept (the least disturbed run) and the latency samples of all rounds are pooled."""
    settings = config.load(None, {"sim": {"seed": 7, "symbols": p["symbols"], "trades": p["trades"],
                                          "speed": 0, "duration_s": p["duration_s"]}})
    runs: dict[str, list[dict[str, Any]]] = {b: [] for b in ["baseline", *backends]}
    for _ in range(p["rounds"]):
        for name in runs:
            with open_journal("none" if name == "baseline" else name, workdir) as journal:
                runs[name].append(asyncio.run(sim_session(settings, journal)))
    base_wall = min(r["wall_s"] for r in runs["baseline"])
    out: dict[str, Any] = {}
    for name, rs in runs.items():
        best = min(rs, key=lambda r: r["wall_s"])
        commits = sum(len(r["commit_ns"]) for r in rs)
        wall_all = sum(r["wall_s"] for r in rs)
        out[name] = {
            "wall_s": best["wall_s"], "wall_all_s": [r["wall_s"] for r in rs], "ticks": best["ticks"],
            "ticks_per_s": best["ticks"] / best["wall_s"], "realtime_x": p["duration_s"] / best["wall_s"],
            "steps": best["steps"], "orders": best["orders"],
            "rejected_trades": best["rejected"], "wall_ratio": best["wall_s"] / base_wall,
            "throughput_ratio": base_wall / best["wall_s"],
            "overhead_us_per_tick": (best["wall_s"] - base_wall) / max(1, best["ticks"]) * 1e6,
            "step_latency": dist([n for r in rs for n in r["step_ns"]]),
            "gc_pause": dist([n for r in rs for n in r["gc_ns"]]),
            "commit_latency": dist([n for r in rs for n in r["commit_ns"]]),
            "commits": commits // len(rs), "commits_per_s": commits / wall_all,
            "rows_per_commit": sum(r["rows"] for r in rs) / max(1, commits),
            "events_per_commit": sum(r["events"] for r in rs) / max(1, commits),
        }
    return out


# --------------------------------------------------------------------------- 3: offered-rate microbench

class OrderFlow:
    """Order state changes as the recorder journals them: the first inserts the order row, the others
    update it (a fill also inserts a fill row), and each adds an event row.  ``ORDERS_IN_FLIGHT`` orders
    interleave so consecutive changes touch different rows, as they do when several trades are open."""

    ORDERS_IN_FLIGHT = 8
    TRADES = 32

    def __init__(self, journal: Journal) -> None:
        self.j = journal
        self.tag = uuid.uuid4().hex[:8]
        now = time.time_ns()
        request = {"symbol": "SIM001", "side": "long", "qty": 300.0, "entry_type": "MKT", "user": "alice",
                   "rules": [{"kind": "stop_loss", "distance": 1.0, "unit": "atr"},
                             {"kind": "take_profit", "fraction": 0.5, "distance": 2.0, "unit": "atr"}]}
        with journal.batch():  # set-up, not measured: orders reference their trade
            for t in range(self.TRADES):
                journal.insert_trade({"trade_id": self.trade(t), "user_id": "alice", "account": "DU1000",
                                      "symbol": "SIM001", "side": "long", "qty": QTY, "state": "open",
                                      "request": request, "snapshot": {"stop": 99.5, "legs": []},
                                      "created_ns": now, "updated_ns": now})

    def trade(self, t: int) -> str:
        return f"B{self.tag}-{t}"

    def write(self, j: int) -> None:
        k = self.ORDERS_IN_FLIGHT
        order = (j // (len(STAGES) * k)) * k + j % k
        stage = STAGES[(j // k) % len(STAGES)]
        key, trade, now = f"tg:{self.tag}:{order}", self.trade(order % self.TRADES), time.time_ns()
        data: dict[str, Any] = {"attempt": 1, "qty": 300.0}
        if stage == "submitting":
            self.j.insert_order({
                "order_key": key, "trade_id": trade, "leg": "stop", "user_id": "alice", "account": "DU1000",
                "symbol": "SIM001", "action": "SELL", "qty": QTY, "status": "submitting", "attempts": 1,
                "broker_order_id": None, "filled": ZERO, "avg_price": ZERO, "commission": ZERO, "reason": "",
                "intent": {"key": key, "trade_id": trade, "leg": "stop", "symbol": "SIM001", "action": "SELL",
                           "qty": 300.0, "order_type": "MKT", "priority": 2, "created_ns": now,
                           "trigger": {"rule": "stop_loss", "level": 99.5, "price": 99.49, "tick_seq": j}},
                "created_ns": now, "updated_ns": now})
        else:
            filled = QTY if stage in ("fill", "closed") else ZERO
            self.j.update_order(key, status=stage, attempts=1, broker_order_id=order + 1, filled=filled,
                                avg_price=PRICE if filled else ZERO, commission=FEE if filled else ZERO,
                                reason="", updated_ns=now)
            if stage == "fill":
                data = {"exec_id": f"x{self.tag}.{order}", "qty": 300.0, "price": 99.48, "commission": 1.5,
                        "fill_ts_ns": now}
                self.j.insert_fill({"exec_id": data["exec_id"], "order_key": key, "trade_id": trade,
                                    "qty": QTY, "price": PRICE, "commission": FEE, "ts_ns": now})
        self.j.event(f"order_{stage}", now, data, trade, key, "alice", "DU1000")


def offered_load(journal: Journal, rate: int, seconds: float, batched: bool) -> dict[str, Any]:
    """Changes arrive at ``rate``/s on the wall clock; every ``STEP_S`` the loop wakes and journals what has
    arrived - in one ``batch()`` (the engine's way) or one commit per row.  A change's latency runs from its
    arrival to its durable commit.  If the journal cannot keep up, the backlog left after a grace period is
    reported instead of waiting for it."""
    flow, probe = OrderFlow(journal), Probe(journal)
    n = int(rate * seconds)
    latency_ns: list[int] = []
    busy_ns, done = 0, 0
    t0 = time.perf_counter_ns() + 1_000_000
    gap, step = 1e9 / rate, int(STEP_S * 1e9)
    deadline = t0 + int(seconds * 1e9) + max(1_000_000_000, int(seconds * 1e9))
    while done < n:
        now = time.perf_counter_ns()
        due = min(n, int((now - t0) // gap) + 1) if now >= t0 else 0
        if due > done:
            w0 = time.perf_counter_ns()
            if batched:
                with journal.batch():
                    for j in range(done, due):
                        flow.write(j)
                end = time.perf_counter_ns()
                latency_ns.extend(end - (t0 + int(j * gap)) for j in range(done, due))
            else:
                for j in range(done, due):
                    flow.write(j)
                    latency_ns.append(time.perf_counter_ns() - (t0 + int(j * gap)))
                end = time.perf_counter_ns()
            busy_ns += end - w0
            done = due
        if now > deadline:
            break
        wake = t0 + ((time.perf_counter_ns() - t0) // step + 1) * step
        time.sleep(max(0, wake - time.perf_counter_ns()) / 1e9)
    elapsed = time.perf_counter_ns() - t0
    probe.detach()
    return {"offered": n, "written": done, "busy_ns": busy_ns, "elapsed_ns": elapsed, "rows": probe.rows,
            "latency_ns": latency_ns, "commit_ns": probe.commit_ns}


def pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of one mode over its runs (the modes alternate, so drift on a shared disk hits both)."""
    tot = {k: sum(r[k] for r in runs) for k in ("offered", "written", "busy_ns", "elapsed_ns", "rows")}
    commits = sum(len(r["commit_ns"]) for r in runs)
    return {"offered": tot["offered"], "written": tot["written"], "backlog": tot["offered"] - tot["written"],
            "commits": commits, "changes_per_commit": tot["written"] / max(1, commits),
            "rows_per_commit": tot["rows"] / max(1, commits),
            "cost_us_per_change": tot["busy_ns"] / max(1, tot["written"]) / 1e3,
            "busy_share": tot["busy_ns"] / max(1, tot["elapsed_ns"]),
            "latency": dist([n for r in runs for n in r["latency_ns"]]),
            "commit_latency": dist([n for r in runs for n in r["commit_ns"]])}


def micro_bench(p: dict[str, Any], backends: list[str], workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for backend in backends:
        out[backend] = {}
        with open_journal(backend, workdir) as journal:
            assert journal is not None
            warm = OrderFlow(journal)  # compile SQLAlchemy's statement cache before anything is timed
            for j in range(50):
                with journal.batch() if j % 2 else contextlib.nullcontext():
                    warm.write(j)
            for rate in p["rates"]:
                runs: dict[str, list[dict[str, Any]]] = {"batched": [], "unbatched": []}
                for batched in (True, False, False, True):  # ABBA: a linear drift cancels out
                    runs["batched" if batched else "unbatched"].append(
                        offered_load(journal, rate, p["micro_s"] / 2, batched))
                res: dict[str, Any] = {mode: pooled(rs) for mode, rs in runs.items()}
                res["cost_ratio_batched_vs_unbatched"] = (res["batched"]["cost_us_per_change"]
                                                          / max(1e-9, res["unbatched"]["cost_us_per_change"]))
                out[backend][str(rate)] = res
    return out


# ------------------------------------------------------------------------------------------------ report

def report(result: dict[str, Any], say: Callable[[str], None] = print) -> None:
    m = result["machine"]
    say(f"machine: {m['cores']} cores, {m['cpu']}, Python {m['python']}, {m['platform']}, "
        f"load {m['loadavg']}; journals in {m['journal_dir']}")
    p = result["params"]
    say(f"\n1+2. sim session: {p['symbols']} symbols, {p['trades']} demo trades, {p['duration_s']:.0f} s virtual, "
        f"speed 0, best of {p['rounds']} (ratios against the no-journal baseline of this run)")
    say(f"{'backend':<14}{'wall s':>7}{'ticks/s':>9}{'x rt':>6}{'thru x':>7}{'+us/tick':>9}"
        f"{'step p99':>10}{'step max':>10}{'gc max':>8}{'commits':>9}"
        f"{'c/s':>7}{'rows/c':>7}{'c p50':>8}{'c p99':>8}{'c max':>9}")
    for name, r in result["sim"].items():
        if "skipped" in r:
            say(f"{name:<14}skipped: {r['skipped']}")
            continue
        s, c = r["step_latency"], r["commit_latency"]
        say(f"{name:<14}{r['wall_s']:>7.2f}{r['ticks_per_s']:>9.0f}{r['realtime_x']:>6.0f}{r['throughput_ratio']:>7.3f}"
            f"{r['overhead_us_per_tick']:>9.2f}{s['p99_us']:>10.0f}{s['max_us']:>10.0f}"
            f"{r['gc_pause']['max_us']:>8.0f}{r['commits']:>9}"
            f"{r['commits_per_s']:>7.0f}{r['rows_per_commit']:>7.1f}{c['p50_us']:>8.0f}{c['p99_us']:>8.0f}"
            f"{c['max_us']:>9.0f}")
    say("  (latencies in us; x rt = virtual / wall seconds; thru x = baseline wall / wall; rows/c = rows per commit;"
        "\n   gc max = longest garbage-collector pass during the session: a step max near it is the collector)")
    say(f"\n3. offered order-change rate, {p['micro_s']} s per mode (ABBA halves), engine step every "
        f"{STEP_S * 1e3:.0f} ms (latency = arrival -> durable commit, us)")
    say(f"{'backend':<14}{'rate/s':>7}{'mode':>10}{'written':>8}{'backlog':>8}{'chg/c':>6}{'us/chg':>8}"
        f"{'lat p50':>9}{'lat p99':>9}{'lat max':>9}{'c p99':>8}")
    for backend, rates in result["micro"].items():
        if "skipped" in rates:
            say(f"{backend:<14}skipped: {rates['skipped']}")
            continue
        for rate, res in rates.items():
            for mode in ("batched", "unbatched"):
                r, lat = res[mode], res[mode]["latency"]
                say(f"{backend:<14}{rate:>7}{mode:>10}{r['written']:>8}{r['backlog']:>8}{r['changes_per_commit']:>6.1f}"
                    f"{r['cost_us_per_change']:>8.0f}{lat['p50_us']:>9.0f}{lat['p99_us']:>9.0f}{lat['max_us']:>9.0f}"
                    f"{r['commit_latency']['p99_us']:>8.0f}")
            say(f"{'':<14}{rate:>7}{'batched/unbatched cost per change':>45}: "
                f"{res['cost_ratio_batched_vs_unbatched']:.2f}")
    say("\nsummary:")
    for line in result["summary"].values():
        say("  " + line)


def summarise(result: dict[str, Any]) -> dict[str, str]:
    out = {}
    for backend in BACKENDS:
        s, m = result["sim"].get(backend, {}), result["micro"].get(backend, {})
        if "skipped" in s or not s:
            out[backend] = f"{backend}: skipped ({s.get('skipped', 'not run')})"
            continue
        rate = max(int(r) for r in m)
        top, sl, cl = m[str(rate)], s["step_latency"], s["commit_latency"]
        base_p99 = result["sim"]["baseline"]["step_latency"]["p99_us"]
        out[backend] = (
            f"{backend}: sim {s['throughput_ratio']:.2f}x baseline throughput ({s['overhead_us_per_tick']:+.1f} "
            f"us/tick, {s['realtime_x']:.0f}x real time), step p99 {sl['p99_us']:.0f} us (baseline {base_p99:.0f}); "
            f"commit p50/p99/max {cl['p50_us']:.0f}/{cl['p99_us']:.0f}/{cl['max_us']:.0f} us, "
            f"{s['rows_per_commit']:.1f} rows/commit; at {rate} changes/s batched costs "
            f"{top['cost_ratio_batched_vs_unbatched']:.2f}x unbatched, p99 latency "
            f"{top['batched']['latency']['p99_us']:.0f} us")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path, help="write every figure to this file")
    ap.add_argument("--quick", action="store_true", help="a few seconds' run (for the test); figures are rough")
    ap.add_argument("--dir", type=Path, help="where the SQLite journals go (default: a temporary directory)")
    args = ap.parse_args(argv)
    logging.getLogger("tickguard").setLevel(logging.ERROR)  # refused demo trades are counted, not logged
    p = dict(QUICK if args.quick else FULL)
    workdir = Path(tempfile.mkdtemp(prefix="tg-bench-", dir=args.dir))
    started = time.perf_counter()
    try:
        pg_note = pg_reachable()
        backends = [b for b in BACKENDS if not (b == "postgresql" and pg_note)]
        result: dict[str, Any] = {"machine": machine(workdir), "params": {**p, "rates": list(p["rates"]),
                                                                           "step_s": STEP_S}}
        result["sim"] = sim_bench(p, backends, workdir)
        result["micro"] = micro_bench(p, backends, workdir)
        if pg_note:
            print(f"note: {pg_note}; the PostgreSQL rows are skipped", file=sys.stderr)
            result["sim"]["postgresql"] = result["micro"]["postgresql"] = {"skipped": pg_note}
        result["summary"] = summarise(result)
        result["bench_wall_s"] = time.perf_counter() - started
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(result)
    print(f"\nbench wall time {result['bench_wall_s']:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
