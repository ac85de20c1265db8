"""``tickguard`` with time-stamp probes, for the wire-to-wire benchmark's breakdown (``--probe``).

Runs the unmodified ``tickguard`` CLI in this process after wrapping a few functions from the outside (nothing
under src/tickguard is edited): each wrapped call appends ``(name, start_ns, end_ns, detail)`` with
``time.perf_counter_ns()`` (CLOCK_MONOTONIC: the gateway's clock too), and the garbage collector's pauses are
recorded through ``gc.callbacks``.  At exit the record goes to ``$WTW_PROBE_OUT`` (JSON lines).

    WTW_PROBE_OUT=probe.jsonl python bench/wire_probe.py run --config bench.toml --no-live

``$WTW_PROFILE`` ("module:Class.attr,..."): each call of those runs under cProfile; the stats go to
``$WTW_PROBE_OUT.pstats``.
"""

from __future__ import annotations

import atexit
import functools
import gc
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

RECORD: list[tuple[str, int, int, Any]] = []
PROFILE: list[Any] = [None]  # the cProfile.Profile of $WTW_PROFILE, if any
clock = time.perf_counter_ns


def wrap(owner: Any, attr: str, name: str, detail: Callable[..., Any] | None = None) -> None:
    original = getattr(owner, attr)

    @functools.wraps(original)
    def probe(*args: Any, **kwargs: Any) -> Any:
        t0 = clock()
        try:
            return original(*args, **kwargs)
        finally:
            RECORD.append((name, t0, clock(), detail(*args, **kwargs) if detail else None))

    setattr(owner, attr, probe)


def install() -> None:
    from ib_async import connection

    from tickguard.adapters.ib import ib_client
    from tickguard.runtime import engine, order_executor
    from tickguard.store import journal

    wrap(connection.Connection, "data_received", "read", lambda self, data: len(data))
    wrap(ib_client.IBBroker, "_on_tickers", "on_tickers", lambda self, tickers: len(tickers))
    wrap(engine.Engine, "step", "step", lambda self, events: len(events))
    wrap(engine.Engine, "dispatch", "dispatch", lambda self, events: len(events))
    wrap(journal.Journal, "_commit", "commit")
    wrap(journal.Journal, "_write", "sql")
    wrap(order_executor.OrderExecutor, "submit", "submit", lambda self, intent, *_: intent.key)
    wrap(ib_client.IBBroker, "place_order", "place", lambda self, order: order.ref)
    # finer parts of an exit, summarised per name for the streaming phases (``calls`` in the breakdown)
    from ib_async import client as ib_async_client

    from tickguard.core import tick_handler, trade_manager
    from tickguard.runtime import journal_recorder

    wrap(ib_async_client.Client, "placeOrder", "ib_async.placeOrder")
    wrap(ib_async_client.Client, "sendMsg", "ib_async.sendMsg")
    wrap(trade_manager.TradeManager, "evaluate", "evaluate")
    wrap(tick_handler.TickHandler, "process", "ticks.process")
    wrap(journal_recorder.JournalRecorder, "on_trade_event", "recorder.trade_event")
    wrap(journal_recorder.JournalRecorder, "on_order_event", "recorder.order_event")
    wrap(journal_recorder.JournalRecorder, "write_snapshots", "recorder.snapshots")
    wrap(journal_recorder.JournalRecorder, "flush_moved", "recorder.flush_moved")
    wrap(engine.Engine, "on_time", "engine.on_time")
    wrap(engine.Engine, "_flush", "engine.flush")
    wrap(ib_client.IBBroker, "next_events", "next_events_call")
    wrap(order_executor.OrderExecutor, "_on_commit", "executor.on_commit")
    from tickguard.runtime import reconciliation, shadow, vol_refresh, watchdog

    wrap(trade_manager.TradeManager, "on_time", "trades.on_time")
    wrap(order_executor.OrderExecutor, "on_time", "executor.on_time")
    wrap(vol_refresh.VolatilityRefresher, "on_time", "refresher.on_time")
    wrap(watchdog.Watchdog, "on_time", "watchdog.on_time")
    wrap(reconciliation.Reconciler, "on_time", "reconciler.on_time")
    wrap(reconciliation.Reconciler, "apply", "reconciler.apply")
    wrap(shadow.ShadowChecker, "on_time", "shadow.on_time")
    from tickguard.store import wal_checkpoint

    wrap(wal_checkpoint.WalCheckpointer, "checkpoint", "wal_checkpoint (its own thread)")
    from tickguard.store import sqlite_writes

    wrap(journal.Journal, "_prepare", "commit.prepare")
    wrap(journal.Journal, "_end_transaction", "commit.end_transaction")
    wrap(journal.Journal, "_notify", "commit.notify")
    wrap(sqlite_writes.SqliteWrites, "ready", "commit.ready")
    profile_calls(os.environ.get("WTW_PROFILE", ""))
    gc_start: list[int] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_start[:] = [clock()]
        elif gc_start:
            RECORD.append(("gc", gc_start[0], clock(), info.get("generation")))

    gc.callbacks.append(on_gc)


def profile_calls(specs: str) -> None:
    """Run every call of each ``module:Class.attr`` (comma separated) under one cProfile (see ``dump``)."""
    if not specs:
        return
    import cProfile
    import importlib

    profile = PROFILE[0] = cProfile.Profile()
    for spec in specs.split(","):
        mod, _, path = spec.partition(":")
        cls, _, attr = path.partition(".")
        owner = getattr(importlib.import_module(mod), cls)
        inner = getattr(owner, attr)

        def profiled_call(*args: Any, __inner: Callable[..., Any] = inner, **kwargs: Any) -> Any:
            profile.enable()
            try:
                return __inner(*args, **kwargs)
            finally:
                profile.disable()

        setattr(owner, attr, profiled_call)


def dump() -> None:
    out = os.environ.get("WTW_PROBE_OUT")
    if not out:
        return
    if PROFILE[0] is not None:
        PROFILE[0].dump_stats(out + ".pstats")
    with open(out, "w") as fh:
        for rec in RECORD:
            fh.write(json.dumps(rec) + "\n")


def main() -> None:
    install()
    atexit.register(dump)
    from tickguard.interfaces.cli import app

    sys.argv[0] = "tickguard"
    app()


if __name__ == "__main__":
    main()
