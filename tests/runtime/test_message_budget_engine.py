"""The message budget inside the engine, on the simulated market (the same budget, in virtual time, as at IB):
entries beyond the lane's bound or wait are refused with the reason and journaled; a cancel of an order still
waiting for the budget takes it back unsent; nothing is sent beyond the rate."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from tickguard.config import load
from tickguard.core.exit_rules import StopLoss, TimeStop
from tickguard.core.model import Side
from tickguard.core.throttle import Lane
from tickguard.core.trade_checks import TradeRejected
from tickguard.core.trades import TradeRequest
from tickguard.interfaces.live_view import budget_line
from tickguard.runtime.engine_factory import sim_engine
from tickguard.store.journal import Journal

NS = 1_000_000_000


def req(symbol: str = "SIM001", account: str | None = None) -> TradeRequest:
    return TradeRequest(symbol=symbol, side=Side.LONG, qty=Decimal(100), account=account,
                        rules=[StopLoss(distance=1.0)])


async def started(throttle: dict, journal: Journal | None = None):
    s = load(None, {"sim": {"speed": 0, "symbols": 2, "seed": 5}, "volatility": {"intraday": False},
                    "throttle": throttle})
    engine, venue = sim_engine(s, journal=journal)
    await engine.start(sorted(venue.specs))
    await engine.run_until(engine.broker.now_ns() + 2 * NS)  # first quotes
    return engine


async def test_entries_beyond_the_lane_bound_are_refused_with_the_reason_and_journaled(tmp_path):
    journal = Journal.open(tmp_path / "j.db")
    engine = await started({"rate": 2, "burst": 1, "entry_queue_max": 3}, journal)
    trades = [engine.submit(req()) for _ in range(8)]
    await engine.run_until(engine.broker.now_ns() + 10 * NS)
    states = [t.state.value for t in trades]
    refused = [t for t in trades if t.state.value == "rejected"]
    # one went at once (the burst), three waited (the bound) and went at two a second; four were refused
    assert states.count("open") == 4 and len(refused) == 4, states
    assert all("ENTRY queue full" in t.reason and "at its bound of 3" in t.reason for t in refused)
    line = budget_line(engine)  # the live view says so
    assert "sent" in line and "refused 4 entries" in line and "longest wait" in line, line
    orders = journal.orders_of([t.id for t in refused])
    assert all(o["status"] == "rejected" and "ENTRY queue full" in o["reason"] for o in orders)
    journal.close()


async def test_an_entry_waiting_too_long_is_refused_and_a_cancelled_one_is_taken_back_unsent():
    engine = await started({"rate": 1, "burst": 1, "entry_wait_max_s": 1.5})
    first, waiting, cancelled = (engine.submit(req()) for _ in range(3))
    [key] = [k for k in engine.executor.orders if f":{cancelled.id}:entry" in k]
    engine.executor.cancel(key)  # still waiting for the budget (as at an entry timeout): withdrawn, never sent
    await engine.run_until(engine.broker.now_ns() + 5 * NS)
    assert first.state.value == "open"
    assert waiting.state.value == "open"  # the second waited about a second, within its 1.5 s
    assert cancelled.state.value == "cancelled"
    sent_refs = {o.order.ref for o in engine.broker.venue.exchange.orders.values()}  # type: ignore[attr-defined]
    assert not any(cancelled.id in ref for ref in sent_refs)
    assert engine.budget.throttle.stats().sent[Lane.ENTRY] == 2  # the cancelled one spent no budget
    assert engine.budget.throttle.stats().refused[Lane.ENTRY] == 0  # nor waited there to expire
    late = [engine.submit(req()) for _ in range(4)]  # 1 a second: the last ones wait past 1.5 s
    await engine.run_until(engine.broker.now_ns() + 8 * NS)
    expired = [t for t in late if t.state.value == "rejected"]
    assert expired and all("waited" in t.reason and "longer than the lane's bound of 1.5 s" in t.reason
                           for t in expired)


async def test_an_account_refused_again_and_again_gets_no_new_entries_but_its_exits_still_go():
    """Flood control: 3 orders of one account refused for the same reason pause its entries (the reason and the
    cool-down said); an open trade of that account still exits."""
    s = load(None, {"sim": {"speed": 0, "symbols": 2, "seed": 5}, "volatility": {"intraday": False},
                    "throttle": {"breaker_rejections": 3, "breaker_cool_down_s": 600}})
    engine, venue = sim_engine(s)
    await engine.start(sorted(venue.specs))
    await engine.run_until(engine.broker.now_ns() + 2 * NS)
    held = engine.submit(TradeRequest(symbol="SIM001", side=Side.LONG, qty=Decimal(100), account="DU1000",
                                      rules=[StopLoss(distance=5.0), TimeStop(after_seconds=8)]))
    await engine.run_until(engine.broker.now_ns() + NS)
    assert held.state.value == "open"
    venue.exchange.p = replace(venue.exchange.p, reject_prob=1.0)  # every order now refused
    refused = [engine.submit(req(account="DU1000")) for _ in range(3)]
    await engine.run_until(engine.broker.now_ns() + 2 * NS)
    assert all(t.state.value == "rejected" for t in refused)
    with pytest.raises(TradeRejected, match="new entries of account DU1000 are paused: 3 orders refused"):
        engine.submit(req(account="DU1000"))
    assert engine.submit(req(account="DU2000")).state.value == "pending_entry"  # another account goes on
    assert "entries paused: DU1000" in budget_line(engine) and "orders per execution today: DU1000" in \
        budget_line(engine)
    venue.exchange.p = replace(venue.exchange.p, reject_prob=0.0)
    await engine.run_until(engine.broker.now_ns() + 30 * NS)
    assert engine.guard.breaker.paused("DU1000", engine.broker.now_ns()) is not None  # still paused
    assert held.state.value == "closed" and held.close_reason == "time_stop"  # its exit went all the same


async def test_entries_cancelled_unfilled_raise_the_ratio_and_pause_the_accounts_entries():
    """Limit entries far from the market time out and are cancelled: orders and cancels without executions.  Past
    the bound, the account's next entry is refused with the figures; another account goes on."""
    s = load(None, {"sim": {"speed": 0, "symbols": 2, "seed": 5}, "volatility": {"intraday": False},
                    "throttle": {"efficiency_max": 2, "efficiency_min_orders": 4}})
    engine, venue = sim_engine(s)
    await engine.start(sorted(venue.specs))
    await engine.run_until(engine.broker.now_ns() + 2 * NS)
    far = [engine.submit(TradeRequest(symbol="SIM001", side=Side.LONG, qty=Decimal(10), account="DU1000",
                                      entry_type="LMT", limit_price=1.0, entry_timeout_s=1,
                                      rules=[StopLoss(distance=0.5, unit="price")])) for _ in range(2)]
    await engine.run_until(engine.broker.now_ns() + 5 * NS)
    assert [t.state.value for t in far] == ["cancelled", "cancelled"]
    with pytest.raises(TradeRejected, match="account DU1000: 2 orders ended unfilled and 2 cancels against 0 "
                                            "executions today .4.0 per execution, above 2"):
        engine.submit(req(account="DU1000"))
    assert engine.submit(req(account="DU2000")).state.value == "pending_entry"
