"""Shadow orders (runtime/shadow.py) on the simulated market: each open trade's exit asked of the broker's what-if.

The checker's own clock is injected (``Clock``) so its schedule is driven by hand; the engine's virtual time only
moves when a test runs it.  Nothing sleeps: checks are awaited (``settle``) or released by hand.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from decimal import Decimal

import pytest

from tickguard.adapters.broker import BrokerOrder, WhatIf
from tickguard.adapters.sim.exchange import ExchangeParams
from tickguard.adapters.sim.market import MarketParams
from tickguard.adapters.sim.venue import SimVenue
from tickguard.config import load
from tickguard.core.exit_rules import StopLoss, TimeStop
from tickguard.core.model import Action, OrderType, Side
from tickguard.core.trades import Trade, TradeRequest
from tickguard.core.volatility import VolSnapshot
from tickguard.runtime.engine import Engine
from tickguard.runtime.engine_factory import sim_engine
from tickguard.runtime.shadow import NS, ShadowChecker, stop_exit_order

ACCOUNT = "DU1000"
SYM = "SIM001"
INTERVAL = 300 * NS
GAP = 30 * NS
SCAN = 2 * NS


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ns: int) -> int:
        self.now += ns
        return self.now


async def started(engine_cfg: dict | None = None) -> Engine:
    s = load(None, {"sim": {"speed": 0, "symbols": 2, "seed": 5, "start": "2026-11-23T10:00:00-05:00",
                            "exchange": {"partial_fill_prob": 0.0}},
                    "volatility": {"intraday": False}, "watchdog": {"enabled": False}, "engine": engine_cfg or {}})
    engine, venue = sim_engine(s)
    engine.venue = venue  # type: ignore[attr-defined]
    await engine.start(sorted(venue.specs))
    await engine.run_until(engine.broker.now_ns() + 2 * NS)  # first quotes
    return engine


async def opened(engine: Engine, qty: int = 100, side: Side = Side.LONG, rules: list | None = None) -> Trade:
    trade = engine.submit(TradeRequest(symbol=SYM, side=side, qty=qty, account=ACCOUNT,
                                       rules=rules or [StopLoss(distance=20.0)]))  # far away: stays open
    end = engine.broker.now_ns() + 10 * NS
    while trade.state.value != "open" and engine.broker.now_ns() < end:
        await engine.run_until(engine.broker.now_ns() + NS // 10)
    assert trade.state.value == "open"
    return trade


def checker(engine: Engine, clock: Clock, what_if=None, max_in_flight: int = 4, **kw) -> ShadowChecker:
    build = stop_exit_order(engine.trades, engine.ticks.quote, lambda s: engine.contracts[s].lot_size)
    return ShadowChecker(what_if or engine.broker.what_if, engine.trades, clock, INTERVAL, max_in_flight, build,
                         scan_ns=SCAN, min_gap_ns=GAP, **kw)


async def look(shadow: ShadowChecker, clock: Clock, after_ns: int = 0) -> None:
    """One look of the checker ``after_ns`` from the last, and every check it started, to its verdict."""
    shadow.on_time(clock.advance(after_ns))
    await shadow.settle()


def size_limit(engine: Engine, qty: float) -> None:
    """The simulated exchange's precautionary size limit (0: none), for orders and what-ifs alike."""
    ex = engine.venue.exchange  # type: ignore[attr-defined]
    ex.p = dataclasses.replace(ex.p, max_order_qty=qty)


async def test_an_open_trades_exit_is_checked_as_it_would_be_sent_and_accepted():
    engine = await started()
    trade = await opened(engine)
    clock = Clock(engine.broker.now_ns())
    shadow = checker(engine, clock)
    assert shadow.summary(clock.now) == ({"accepted": 0, "refused": 0, "error": 0, "none": 0}, 0)
    await look(shadow, clock)
    snap = shadow.state[trade.id]
    assert (snap.verdict, snap.checked_ns) == ("accepted", clock.now)
    order = snap.order
    assert (order.action, order.qty, order.order_type, order.limit_price, order.account, order.symbol) == (
        Action.SELL, 100, OrderType.MARKET, None, ACCOUNT, SYM)
    assert shadow.checks == {"accepted": 1}
    assert shadow.summary(clock.now) == ({"accepted": 1, "refused": 0, "error": 0, "none": 0}, 0)


async def test_a_limit_exit_is_checked_at_the_limit_the_policy_would_give_it():
    engine = await started({"exit_order_type": "LMT", "exit_limit_offset": 0.05})
    trade = await opened(engine, side=Side.SHORT)
    clock = Clock(engine.broker.now_ns())
    shadow = checker(engine, clock)
    await look(shadow, clock)
    order = shadow.state[trade.id].order
    ask = engine.trades.grid(SYM).price(engine.ticks.quote(SYM).ask)
    assert (order.action, order.order_type, order.limit_price) == (Action.BUY, OrderType.LIMIT, ask + Decimal("0.05"))
    assert shadow.state[trade.id].verdict == "accepted"


async def test_a_refused_exit_is_an_error_line_once_and_an_info_line_when_it_clears(caplog):
    engine = await started()
    trade = await opened(engine)
    size_limit(engine, 50)  # set in TWS after the trade opened: its 100-share exit would now be refused
    clock = Clock(engine.broker.now_ns())
    shadow = checker(engine, clock)
    caplog.set_level(logging.INFO, logger="tickguard.runtime.shadow")
    await look(shadow, clock)
    snap = shadow.state[trade.id]
    assert snap.verdict == "refused" and "exceeds the precautionary size limit of 50" in snap.reason
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert trade.id in line and SYM in line and "SELL 100 SIM001 MKT" in line and "precautionary" in line

    await look(shadow, clock, INTERVAL)  # refused again, for the same reason: no second ERROR
    assert shadow.checks == {"refused": 2}
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    assert shadow.summary(clock.now)[0]["refused"] == 1

    size_limit(engine, 0)
    await look(shadow, clock, INTERVAL)
    assert shadow.state[trade.id].verdict == "accepted"
    assert any(r.levelno == logging.INFO and trade.id in r.getMessage() and "accepted" in r.getMessage()
               for r in caplog.records)
    assert shadow.checks == {"refused": 2, "accepted": 1}


async def test_a_failed_or_silent_what_if_is_an_error_verdict_never_an_exception(caplog):
    engine = await started()
    trade = await opened(engine)
    clock = Clock(engine.broker.now_ns())

    async def down(order: BrokerOrder) -> WhatIf:
        raise ConnectionError("Not connected")

    shadow = checker(engine, clock, down)
    caplog.set_level(logging.WARNING, logger="tickguard.runtime.shadow")
    await look(shadow, clock)
    snap = shadow.state[trade.id]
    assert snap.verdict == "error" and "Not connected" in snap.reason
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1

    never = asyncio.Event()

    async def silent(order: BrokerOrder) -> WhatIf:
        await never.wait()
        raise AssertionError("unreachable")

    shadow = checker(engine, clock, silent, timeout_s=0.01)
    await look(shadow, clock)
    assert shadow.state[trade.id].verdict == "error" and "no answer within 0.01s" in shadow.state[trade.id].reason
    await look(shadow, clock, GAP)  # no verdict: asked again after the gap, not only after the interval
    assert shadow.checks == {"error": 2}
    await engine.run_until(engine.broker.now_ns() + NS)  # the engine's loop goes on


async def test_a_changed_exit_is_checked_again_after_the_gap_an_unchanged_one_after_the_interval():
    engine = await started()
    trade = await opened(engine)
    clock = Clock(engine.broker.now_ns())
    shadow = checker(engine, clock)
    await look(shadow, clock)
    await look(shadow, clock, GAP)
    assert shadow.checks == {"accepted": 1}  # nothing changed: not before the interval

    stop_before = engine.trades.stop_price(trade)
    vol = engine.vol[SYM]
    engine.trades.on_volatility(VolSnapshot(SYM, vol.atr / 2, vol.adr, engine.broker.now_ns()))  # the stop tightens
    assert engine.trades.stop_price(trade) > stop_before
    await look(shadow, clock, SCAN)  # the change is seen ...
    assert shadow.checks == {"accepted": 2} and shadow.state[trade.id].checked_ns == clock.now

    engine.trades.on_volatility(VolSnapshot(SYM, vol.atr / 4, vol.adr, engine.broker.now_ns()))
    await look(shadow, clock, SCAN)  # ... but a stop moving again is not asked about again before the gap
    assert shadow.checks == {"accepted": 2}
    await look(shadow, clock, GAP)
    assert shadow.checks == {"accepted": 3}
    await look(shadow, clock, INTERVAL - SCAN)
    assert shadow.checks == {"accepted": 3}
    await look(shadow, clock, SCAN)
    assert shadow.checks == {"accepted": 4}


async def test_trades_closing_or_closed_are_not_checked_and_are_forgotten():
    engine = await started()
    stays = await opened(engine)
    goes = await opened(engine, rules=[StopLoss(distance=20.0), TimeStop(after_seconds=5)])
    clock = Clock(engine.broker.now_ns())
    shadow = checker(engine, clock)
    await look(shadow, clock)
    assert set(shadow.state) == {stays.id, goes.id}
    await engine.run_until(engine.broker.now_ns() + 10 * NS)  # the time stop closes one
    assert goes.state.value == "closed"
    await look(shadow, clock, SCAN)
    assert set(shadow.state) == {stays.id}
    assert shadow.summary(clock.now)[0] == {"accepted": 1, "refused": 0, "error": 0, "none": 0}


async def test_checks_in_flight_are_bounded_and_summary_ages_on_the_injected_clock():
    engine = await started()
    first = await opened(engine)
    clock = Clock(engine.broker.now_ns())
    gate = asyncio.Event()
    asked: list[str] = []

    async def gated(order: BrokerOrder) -> WhatIf:
        asked.append(order.ref)
        await gate.wait()
        return await engine.broker.what_if(order)

    shadow = checker(engine, clock, gated, max_in_flight=2)
    gate.set()
    await look(shadow, clock)
    assert shadow.state[first.id].checked_ns == clock.now
    clock.advance(100 * NS)
    assert shadow.summary(clock.now) == ({"accepted": 1, "refused": 0, "error": 0, "none": 0}, 100 * NS)

    gate.clear()
    more = [await opened(engine) for _ in range(3)]
    shadow.on_time(clock.advance(SCAN))
    for _ in range(100):  # the checks start and wait at the gate: a few turns of the loop, no time
        if len(asked) == 3:
            break
        await asyncio.sleep(0)
    assert shadow.in_flight == 2 and len(asked) == 3  # two of the three new trades: the bound
    clock.advance(7 * NS)
    counts, oldest = shadow.summary(clock.now)
    assert counts == {"accepted": 1, "refused": 0, "error": 0, "none": 3}
    assert oldest == 100 * NS + SCAN + 7 * NS  # the first trade's verdict; the new ones have waited 7 s
    gate.set()
    await shadow.settle()
    assert shadow.in_flight == 0 and {t.id for t in more} <= set(shadow.state) and len(asked) == 4
    assert shadow.summary(clock.now) == ({"accepted": 4, "refused": 0, "error": 0, "none": 0}, 100 * NS + SCAN + 7 * NS)


async def test_wired_into_the_engine_loop_the_checks_run_in_the_background():
    engine = await started()
    trade = await opened(engine)
    size_limit(engine, 10)
    shadow = checker(engine, engine.broker.now_ns)  # type: ignore[arg-type]
    step_on_time = engine.on_time

    def on_time(now_ns: int) -> None:  # the wiring: Engine.on_time calls the checker's
        step_on_time(now_ns)
        shadow.on_time(now_ns)

    engine.on_time = on_time  # type: ignore[method-assign]
    await engine.run_until(engine.broker.now_ns() + 5 * NS)
    await shadow.settle()
    assert shadow.state[trade.id].verdict == "refused"
    shadow.cancel()


def test_the_sim_exchanges_size_limit_refuses_the_order_as_its_what_if_says():
    v = SimVenue(11, 1_763_908_200 * NS, 2, MarketParams(bad_tick_prob=0.0, locked_prob=0.0),
                 ExchangeParams(partial_fill_prob=0.0, latency_jitter_ms=0.0, max_order_qty=50))
    v.advance_to(v.now_ns + NS)
    sym = sorted(v.specs)[0]
    big = BrokerOrder("big", "DU1", sym, Action.BUY, Decimal(51), OrderType.MARKET)
    answer = v.what_if(big)
    assert not answer.accepted and answer.warning == "order size 51 exceeds the precautionary size limit of 50"
    assert v.what_if(dataclasses.replace(big, qty=Decimal(50))).accepted
    oid = v.place(big)
    v.advance_to(v.now_ns + NS)
    rejected = v.exchange.orders[oid]
    assert rejected.status == "rejected"


@pytest.mark.parametrize("bad", [{"max_in_flight": 0}, {"interval_ns": 0}])
def test_nonsense_bounds_are_refused(bad):
    args = {"what_if": None, "trades": None, "clock": None, "interval_ns": INTERVAL, "max_in_flight": 1,
            "exit_order": None, **bad}
    with pytest.raises(ValueError):
        ShadowChecker(**args)


async def test_a_look_at_many_trades_is_spread_over_steps_and_forgets_only_when_done():
    """Thousands of live trades: each call looks at ``LOOK_SLICE`` of them (the deadline stays now until the look
    is done), so no engine step stalls on the whole book; a trade gone is forgotten once the look has seen all."""
    from tickguard.runtime.shadow import LOOK_SLICE, stop_exit_key

    engine = await started()
    trades = [await opened(engine, qty=1) for _ in range(3)]
    clock = Clock(engine.broker.now_ns())

    class Many:  # the three real trades, seen as many (the look's bookkeeping is per trade id)
        def __init__(self) -> None:
            self.trades = [dataclasses.replace(trades[i % 3], id=f"X{i:05d}") for i in range(2 * LOOK_SLICE + 10)]

        def live_trades(self) -> list[Trade]:
            return list(self.trades)

        def stop_price(self, trade: Trade):
            return engine.trades.stop_price(trades[0])

    source = Many()
    build = stop_exit_order(engine.trades, engine.ticks.quote, lambda s: engine.contracts[s].lot_size)
    shadow = ShadowChecker(engine.broker.what_if, source, clock, INTERVAL, 4, build, scan_ns=SCAN, min_gap_ns=GAP,
                           exit_key=stop_exit_key(engine.trades))
    shadow.on_time(clock.now)
    assert len(shadow._tracked) == LOOK_SLICE and shadow.next_deadline() == clock.now  # the rest waits a step
    shadow.on_time(clock.now)
    shadow.on_time(clock.now)
    assert len(shadow._tracked) == len(source.trades) and shadow.next_deadline() == clock.now + SCAN  # done
    gone = source.trades.pop()
    for _ in range(3):
        shadow.on_time(clock.advance(SCAN))
        assert (gone.id in shadow._tracked) == bool(shadow._look)  # forgotten only when the look is complete
    assert gone.id not in shadow._tracked
    # gone from anywhere in the order (the first, the middle, the last looked at): exactly those are forgotten, look
    # after look (the bookkeeping keeps the ones a look did not see in front - no walk over the thousands it saw)
    for _ in range(2):
        for i in (len(source.trades) - 1, len(source.trades) // 2, 0):
            gone = source.trades.pop(i)
            shadow.on_time(clock.advance(SCAN))
            while shadow._look:
                shadow.on_time(clock.now)
            assert sorted(shadow._tracked) == sorted(t.id for t in source.trades), gone.id
    shadow.cancel()


async def test_checks_start_at_most_one_per_start_gap_and_the_next_start_is_a_deadline():
    """However fast the broker answers, checks start at the configured pace ([shadow] max_per_s): a first look at
    thousands of trades must not run back to back on the engine's thread.  The checker's deadline is the next
    start while checks wait, so the engine loop wakes for it."""
    engine = await started()
    trades = [await opened(engine) for _ in range(3)]
    clock = Clock(engine.broker.now_ns())
    shadow = checker(engine, clock, start_gap_ns=NS)
    await look(shadow, clock)
    assert len(shadow.state) == 1 and shadow.next_deadline() == clock.now + NS  # the next start, before the scan
    await look(shadow, clock, NS // 2)
    assert len(shadow.state) == 1  # half a gap later: still one
    await look(shadow, clock, NS // 2)
    assert len(shadow.state) == 2
    await look(shadow, clock, NS)
    assert set(shadow.state) == {t.id for t in trades} and shadow.next_deadline() == clock.now + SCAN  # a new look


def test_the_start_pace_comes_from_the_config():
    s = load(None, {"shadow": {"max_per_s": 4}})
    engine, _ = sim_engine(s)
    assert engine.shadow is not None and engine.shadow.start_gap_ns == NS // 4
    with pytest.raises(ValueError, match="max_per_s"):
        load(None, {"shadow": {"max_per_s": 0}})
