"""The exit rehearsal (runtime/exit_rehearsal.py): an exit's code runs on the nearest stop and acts on nothing.

The rehearsal is there for speed, and it runs next to money: every rule it must keep is checked here on a real
engine (the simulator's venue, a SQLite journal with its exit log) - nothing written, appended, queued or sent, no
trade or order changed - and the rehearsed exit is the one the crossing then sends.  Over ib_async and the fake
gateway (no order id taken, nothing on the wire): tests/adapters/ib/test_exit_rehearsal_on_gateway.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tickguard.config import ConfigError, load
from tickguard.core.exit_rules import StopLoss
from tickguard.core.model import Side, Tick
from tickguard.core.trades import Trade, TradeRequest
from tickguard.runtime import exit_rehearsal as exit_rehearsal_module
from tickguard.runtime.engine import Engine
from tickguard.runtime.engine_factory import open_journal, sim_engine
from tickguard.runtime.exit_rehearsal import ExitRehearsal

NS = 1_000_000_000


def settings(tmp_path: Path, **engine: float):
    return load(None, {"sim": {"speed": 0, "symbols": 2, "seed": 5}, "volatility": {"intraday": False},
                       "watchdog": {"enabled": False}, "shadow": {"enabled": False},
                       "journal": {"path": str(tmp_path / "j.db")}, "engine": engine})


async def open_trades(tmp_path: Path) -> tuple[Engine, list[Trade]]:
    """A sim engine on a journal with its exit log, two open longs per symbol, their stops 0.50 and 0.80 under the
    bid."""
    s = settings(tmp_path)
    engine, venue = sim_engine(s, journal=open_journal(s, kind="simulated"))
    symbols = sorted(venue.specs)
    await engine.start(symbols)
    assert engine.journal is not None and engine.journal._exits is not None  # the exit log is on
    await engine.run_until(engine.broker.now_ns() + 2 * NS)
    trades = []
    for symbol in symbols:
        bid = engine.grid(symbol).price(engine.ticks.quote(symbol).bid)
        for under in ("0.50", "0.80"):
            trades.append(engine.submit(TradeRequest(symbol=symbol, side=Side.LONG, qty=Decimal(100),
                                                     rules=[StopLoss(price=float(bid - Decimal(under)))])))
    await engine.run_until(engine.broker.now_ns() + 2 * NS)
    assert {t.state.value for t in trades} == {"open"}
    return engine, trades


def everything(engine: Engine, trades: list[Trade]) -> dict:
    """What a rehearsal must leave as it was: the journal (its write position, its deferred and logged writes, the
    exit log on disk), the executor's orders, the venue's, the trades and the book."""
    journal = engine.journal
    assert journal is not None and journal._fast is not None and journal._exits is not None
    return {
        "journal": (journal.position, list(journal._fast.deferred), list(journal._fast.ops or []),
                    journal._exits.seq, list(journal._exits.open), journal._exits.log.path.stat().st_size,
                    journal._exits.log.records),
        "orders": {k: (r.status, r.attempts, r.order_id) for k, r in engine.executor.orders.items()},
        "venue": len(engine.broker.venue.exchange.orders),  # type: ignore[attr-defined]
        "trades": [(engine.trades.snapshot(t), len(t.history)) for t in trades],
        "book": (len(engine.trades.book), len(engine.trades.outbox), bool(engine.budget.throttle), engine.budget.spent),
    }


async def test_a_rehearsal_writes_sends_and_changes_nothing_and_rehearses_the_exit_the_crossing_sends(tmp_path):
    engine, trades = await open_trades(tmp_path)
    rehearsal = engine.rehearsal
    assert rehearsal is not None
    before = everything(engine, trades)
    rehearsed = [rehearsal.run() for _ in range(6)]  # the symbols take turns
    assert everything(engine, trades) == before
    assert rehearsal.rehearsals == 6 and rehearsal.failures == 0
    nearest = {t.symbol: t for t in trades[::2]}  # each symbol's stop 0.50 under the bid
    assert {i.key for i in rehearsed if i is not None} == {f"tg:{engine.instance_id}:{t.id}:stop:1"
                                                           for t in nearest.values()}
    # the crossing of one of them sends exactly the rehearsed order
    trade = trades[0]
    intent = next(i for i in rehearsed if i is not None and i.trade_id == trade.id)
    grid, stop = engine.grid(trade.symbol), engine.trades.stop_price(trade)
    bid = grid.units(float(stop - Decimal("0.01")))
    now = engine.broker.now_ns()
    engine.step([Tick(trade.symbol, bid, bid + 2, 0, 100.0, now, now, 10_000_000)])
    sent = engine.executor.orders[intent.key].intent
    assert (sent.qty, sent.action, sent.order_type, sent.account, sent.symbol, sent.trigger.level) == (
        intent.qty, intent.action, intent.order_type, intent.account, intent.symbol, intent.trigger.level)
    assert sent.trigger.level == stop and engine.executor.orders[intent.key].order_id is not None  # on the wire


async def test_a_failing_rehearsal_is_logged_once_counted_and_the_engine_goes_on(tmp_path, caplog):
    engine, trades = await open_trades(tmp_path)

    def refused(order) -> None:
        raise ValueError(f"no contract for {order.symbol}")

    rehearsal = ExitRehearsal(engine.trades, engine.executor.session, engine.recorder, refused, 0.001)
    symbols = {t.symbol for t in trades}
    before = everything(engine, trades)
    with caplog.at_level(logging.WARNING, logger="tickguard.runtime.exit_rehearsal"):
        for _ in range(2 * len(symbols) + 1):
            assert rehearsal.run() is None
    assert everything(engine, trades) == before  # a failure changes nothing either
    assert rehearsal.failures == 2 * len(symbols) + 1 and rehearsal.rehearsals == 0
    assert rehearsal.outcomes()["failed"] == rehearsal.failures  # tickguard_exit_rehearsals_total{outcome="failed"}
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == len(symbols)  # once per symbol and kind of failure, not once per rehearsal
    assert all("exit rehearsal" in line and "no contract for" in line and "may fail the same way" in line
               for line in lines)
    assert {line.split("exit rehearsal of ")[1].split("'s")[0] for line in lines} == symbols
    # the engine goes on: a crossing still sends its exit
    trade = trades[0]
    grid, stop = engine.grid(trade.symbol), engine.trades.stop_price(trade)
    bid = grid.units(float(stop - Decimal("0.01")))
    now = engine.broker.now_ns()
    engine.step([Tick(trade.symbol, bid, bid + 2, 0, 100.0, now, now, 10_000_000)])
    assert engine.executor.orders[f"tg:{engine.instance_id}:{trade.id}:stop:1"].order_id is not None


def test_exit_rehearsal_ms_zero_turns_it_off_and_a_bad_value_is_named(tmp_path):
    s = settings(tmp_path, exit_rehearsal_ms=0)
    engine, _ = sim_engine(s)
    assert engine.rehearsal is None
    assert sim_engine(settings(tmp_path))[0].rehearsal is not None  # on by default
    with pytest.raises(ConfigError, match="exit_rehearsal_ms"):
        settings(tmp_path, exit_rehearsal_ms=-1)


async def until(done, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while not done():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.001)


class EngineThread:
    """The engine thread's CPU time as the rehearsal reads it: on the CPU ``share`` of the real time."""

    def __init__(self) -> None:
        self.share, self.cpu, self.wall = 0.3, 0, time.perf_counter_ns()

    def __call__(self) -> int:
        now = time.perf_counter_ns()
        self.cpu += int(self.share * (now - self.wall))
        self.wall = now
        return self.cpu


async def test_the_loop_rehearses_every_interval_after_waiting_events_and_rests_in_a_storm_or_a_closed_market(
        tmp_path):
    """``running``: a timer of the event loop.  Events waiting for the engine at a turn: the rehearsal runs after
    the step they woke (here: they are gone by then), or is dropped if they are still there.  The engine's thread on
    the CPU nearly all the time since the last turn (a storm) or no quote for ``QUIET_S``: no rehearsal."""
    engine, _ = await open_trades(tmp_path)
    state = {"busy": False, "age": 0.0}
    thread = EngineThread()

    def busy() -> bool:  # events waiting at the turn; the step that follows takes them
        was, state["busy"] = state["busy"], False
        return was

    rehearsal = ExitRehearsal(engine.trades, engine.executor.session, engine.recorder, None, 0.001, busy=busy,
                              quote_age_s=lambda: state["age"], cpu_ns=thread)
    with rehearsal.running():
        await until(lambda: rehearsal.rehearsals >= 3, "rehearsals at each turn")
        state["busy"] = True
        ran = rehearsal.rehearsals
        await until(lambda: not state["busy"] and rehearsal.rehearsals > ran, "a rehearsal after the step")
        assert rehearsal.dropped == rehearsal.saturated == rehearsal.quiet == 0
        thread.share = 1.0  # a storm: the engine's thread always on the CPU
        await until(lambda: rehearsal.saturated >= 3, "turns skipped in a storm")
        ran = rehearsal.rehearsals
        await asyncio.sleep(0.005)
        assert rehearsal.rehearsals <= ran + 1  # the turn that measured the storm's start may still rehearse
        ran = rehearsal.rehearsals
        thread.share, state["age"] = 0.3, 5.0  # the storm is over; no quote for five seconds
        await until(lambda: rehearsal.quiet >= 3, "turns skipped without quotes")
        assert rehearsal.rehearsals <= ran + 1
    done = rehearsal.rehearsals + rehearsal.saturated + rehearsal.quiet
    await asyncio.sleep(0.005)
    assert rehearsal.rehearsals + rehearsal.saturated + rehearsal.quiet == done  # the timer stopped with the block


class Spun:
    """A busy-polling loop's polling time: ``share`` of the real time since it was made."""

    def __init__(self, share: float) -> None:
        self.share, self.start = share, time.perf_counter_ns()

    def __call__(self) -> int:
        return int(self.share * (time.perf_counter_ns() - self.start))


async def test_a_thread_on_the_cpu_because_its_loop_busy_polls_is_no_storm(tmp_path):
    """``tickguard run``'s loop polls its sockets while quotes come (runtime/busy_poll.py): its thread is on the CPU
    all the time, mostly doing nothing.  That polling is not work - rehearsals go on; the same CPU time spent
    working is a storm - they stop."""
    engine, _ = await open_trades(tmp_path)
    thread = EngineThread()
    thread.share = 1.0
    idle = Spun(0.7)
    rehearsal = ExitRehearsal(engine.trades, engine.executor.session, engine.recorder, None, 0.001,
                              cpu_ns=thread, spun_ns=idle)
    with rehearsal.running():
        await until(lambda: rehearsal.rehearsals >= 5, "rehearsals while the loop busy-polls")
        assert rehearsal.saturated == 0
        idle.share = 0.0  # the same CPU time, all of it work
        await until(lambda: rehearsal.saturated >= 3, "turns skipped in a storm")


async def test_by_default_the_polling_time_is_the_running_loops_own(tmp_path, monkeypatch):
    """Not given one, the rehearsal takes its loop's polling time (``busy_poll.spin_clock`` of the running loop),
    as ``tickguard run``'s busy-polling loop reports it."""
    engine, _ = await open_trades(tmp_path)
    thread = EngineThread()
    thread.share = 1.0
    asked = []

    def spin_clock(loop):
        asked.append(loop)
        return Spun(0.7)

    monkeypatch.setattr(exit_rehearsal_module, "spin_clock", spin_clock)
    rehearsal = ExitRehearsal(engine.trades, engine.executor.session, engine.recorder, None, 0.001, cpu_ns=thread)
    with rehearsal.running():
        await until(lambda: rehearsal.rehearsals >= 5, "rehearsals while the loop busy-polls")
    assert asked == [asyncio.get_running_loop()] and rehearsal.saturated == 0


async def test_a_rehearsal_queued_behind_a_step_does_not_run_once_the_block_is_over(tmp_path):
    """The step that the waiting events woke may end ``run_until``: the rehearsal queued behind it is cancelled with
    the block, it does not run during the caller's shutdown (found by an independent review)."""
    engine, _ = await open_trades(tmp_path)
    woke = asyncio.get_running_loop().create_future()

    def busy() -> bool:  # the caller's task resumes before the queued rehearsal would
        if not woke.done():
            woke.set_result(None)
        return True

    rehearsal = ExitRehearsal(engine.trades, engine.executor.session, engine.recorder, None, 0.001, busy=busy,
                              cpu_ns=EngineThread())
    with rehearsal.running():
        await woke
    await asyncio.sleep(0.01)
    assert rehearsal.rehearsals == rehearsal.dropped == 0
