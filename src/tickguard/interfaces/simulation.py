"""One ``tickguard sim`` session: build the engine on the simulated market, open the trades, run, report."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

from tickguard import __version__
from tickguard.adapters.sim.venue import SimVenue
from tickguard.config import Settings
from tickguard.core.trade_checks import TradeRejected
from tickguard.interfaces import report
from tickguard.interfaces.demo import demo_trades
from tickguard.interfaces.metrics_http import serving_metrics
from tickguard.interfaces.stopping import run_until_stopped
from tickguard.runtime.engine import Engine
from tickguard.runtime.engine_factory import open_journal, sim_engine


async def run_session(
    settings: Settings,
    include_ticks: bool = False,
    watcher: Callable[[Engine], Awaitable[None]] | None = None,
) -> tuple[Engine, dict[str, Any]]:
    recorder = report.TickRecorder(keep=include_ticks)
    journal = open_journal(settings, kind="simulated")
    try:
        engine, venue = sim_engine(settings, recorder, journal)
        return await _run(engine, venue, settings, recorder, include_ticks, watcher)
    finally:
        if journal is not None:  # closed already unless the engine failed to start (its lock with it)
            journal.close()


async def _run(engine: Engine, venue: SimVenue, settings: Settings, recorder: report.TickRecorder,
               include_ticks: bool, watcher: Callable[[Engine], Awaitable[None]] | None,
               ) -> tuple[Engine, dict[str, Any]]:
    sim = settings.sim
    symbols = sorted(venue.specs)
    wanted = sorted({t.symbol for t in settings.trades}) if settings.trades else symbols
    async with serving_metrics(engine, settings.metrics):  # GET /metrics while it runs (metrics_http.py)
        failed = await engine.start(wanted)
        start_ns = engine.broker.now_ns()
        end_ns = start_ns + int(sim.duration_s * 1e9)
        warm_ns = start_ns + int(sim.warmup_s * 1e9)
        requests = list(settings.trades) or demo_trades(sim.trades, symbols, sim.seed)
        # Demo trades open one every entry_interval_s so entries and exits interleave on screen.  The cadence does not
        # depend on the duration: a seed is one run, and a longer run extends a shorter one (same ticks, same trades,
        # same fills up to the shorter one's end).
        interval_ns = int(sim.entry_interval_s * 1e9)
        for i, request in enumerate(requests):
            engine.schedule(warm_ns + (interval_ns * i if not settings.trades else 0), request)
        watch_task = asyncio.create_task(watcher(engine)) if watcher else None
        stopped_ns: int | None = None
        try:
            if await run_until_stopped(engine.run_until(end_ns)):
                stopped_ns = engine.broker.now_ns()
        finally:
            if watch_task is not None:
                watch_task.cancel()
                await asyncio.gather(watch_task, return_exceptions=True)
            if engine.shadow is not None:
                engine.shadow.cancel()  # its what-ifs in flight die with the connection
            await engine.broker.close()
            if engine.journal is not None:
                engine.journal.close()
    meta = {
        "version": __version__, "seed": sim.seed, "symbols": symbols, "failed_symbols": sorted(failed),
        "start": dt.datetime.fromtimestamp(start_ns / 1e9, tz=dt.UTC).isoformat(),
        "start_ns": start_ns, "end_ns": end_ns, "duration_s": sim.duration_s,
        "stopped_early_ns": stopped_ns,  # Ctrl-C / SIGTERM: the report covers the part that ran, up to here
        "settings": settings.model_dump(mode="json"),
        "venue": {"ticks_emitted": venue.ticks_emitted, "pacing_violations": venue.exchange.pacing_violations,
                  "positions": {a: venue.positions(a) for a in venue.exchange.accounts}},
    }
    return engine, report.build(engine, meta, recorder)


__all__ = ["TradeRejected", "run_session"]
