"""An over-fill is refused and halts the trade: the excess is never applied, and nothing automated - exit, retry,
re-arm, timer, restart - sends anything for the trade afterwards.  Equality decides, never a tolerance."""

from decimal import Decimal

import pytest

from tickguard.core.exit_rules import StopLoss, TakeProfit, TimeStop, TrailingStop
from tickguard.core.halts import Execution
from tickguard.core.model import Side, TradeState
from tickguard.core.order_state import OrderStatus
from tickguard.core.tick_handler import TickHandler
from tickguard.core.trade_manager import TradeManager
from tickguard.core.trades import TradeRequest

D = Decimal


@pytest.fixture
def tm(clock, market):
    market.tick("AAA", 100.0, 100.02)
    return TradeManager(clock, market.vol.get, market.quotes.get)


def open_trade(tm, clock, rules=None, qty=100, side=Side.LONG):
    trade = tm.submit(TradeRequest(symbol="AAA", side=side, qty=qty, rules=rules or [StopLoss(distance=1.0)]))
    [entry] = tm.outbox
    tm.outbox.clear()
    assert tm.on_fill(entry, D(qty), D(100), clock(), D(1)) is None
    return trade, entry


def sent_after(tm, market, *bids):
    handler = TickHandler(tm)
    for bid in bids:
        handler.process([market.tick("AAA", bid)])
    out, tm.outbox = tm.outbox, []
    return out


def assert_inert(tm, trade, market, clock):
    """Nothing sent for the trade whatever the price, the clock or a failed order does."""
    def unarmed() -> bool:
        return all(leg.level_id not in tm.book for leg in trade.legs()) and tm.stop_price(trade) is None

    def stop_parts():
        return tm.stops.trail_x(trade), trade.be_x, trade.stop_base_x, trade.best_x

    assert trade.state is TradeState.HALTED and unarmed()
    parts = stop_parts()
    assert sent_after(tm, market, 95.0, 120.0, 130.0, 80.0, 99.0) == []  # stop and target levels crossed again
    assert unarmed() and stop_parts() == parts  # no new high moved its stop
    clock.advance(24 * 3600)
    tm.on_time(clock())  # time stops, retries, entry timeouts: all due
    assert tm.outbox == [] and tm.cancels == [] and unarmed()  # no retry re-armed a target
    tm.resume_closing(trade)
    assert tm.outbox == [] and trade.state is TradeState.HALTED


def test_an_exit_over_fill_is_refused_and_halts_the_trade(tm, clock, market):
    trade, _ = open_trade(tm, clock, [StopLoss(distance=1.0), TakeProfit(distance=3.0),
                                      TimeStop(after_seconds=60)])
    [stop] = sent_after(tm, market, 97.9)
    assert stop.qty == 100
    over = tm.on_fill(stop, D(100), D("97.9"), clock(), D(1), Execution("x1", D(100), D(0), D(101)))
    assert over is not None and (over.applied, over.excess, over.exec_id) == (100, 1, "x1")
    assert trade.exited == 100 and trade.open_qty == 0  # never 101: a long trade does not end short
    assert trade.state is TradeState.HALTED and "x1" in trade.reason and "excess 1" in trade.reason
    tm.on_intent_closed(stop, OrderStatus.FILLED, D(-1), "")
    assert trade.state is TradeState.HALTED  # not closed: only a person ends a halt
    assert_inert(tm, trade, market, clock)


def test_two_exits_that_together_pass_the_filled_entry_halt_it(tm, clock, market):
    """Each order within its own quantity, the trade past its entry: the second execution is cut to what is open."""
    trade, _ = open_trade(tm, clock, [StopLoss(distance=1.0), TakeProfit(fraction=0.5, distance=1.0),
                                      TakeProfit(fraction=0.5, distance=3.0)])
    [tp1] = sent_after(tm, market, 102.0)
    [stop] = sent_after(tm, market, 97.9)
    assert (tp1.qty, stop.qty) == (50, 50)
    assert tm.on_fill(tp1, D(50), D(102), clock(), D(1)) is None
    assert tm.on_fill(stop, D(50), D("97.9"), clock(), D(1)) is None
    assert trade.state is TradeState.CLOSED
    late = tm.on_fill(tp1, D(20), D(102), clock(), D(1))  # an execution nobody expected
    assert late is not None and (late.applied, late.excess) == (0, 20) and "filled entry of 100" in late.past
    assert trade.exited == 100 and trade.state is TradeState.HALTED
    assert trade.commissions == 4  # the commission is real money: counted even when nothing is applied
    assert_inert(tm, trade, market, clock)


def test_an_over_exit_by_a_millionth_of_a_share_is_caught(tm, clock, market):
    trade, _ = open_trade(tm, clock)
    [stop] = sent_after(tm, market, 97.9)
    over = tm.on_fill(stop, D("100.000001"), D("97.9"), clock(), D(0))
    assert over is not None and over.excess == D("0.000001") and over.applied == 100
    assert trade.exited == 100 and trade.state is TradeState.HALTED


def test_an_entry_over_fill_applies_the_request_and_halts(tm, clock, market):
    trade = tm.submit(TradeRequest(symbol="AAA", side=Side.SHORT, qty=100,
                                   rules=[StopLoss(distance=1.0), TrailingStop(distance=0.5)]))
    [entry] = tm.outbox
    tm.outbox.clear()
    assert tm.on_fill(entry, D(60), D(100), clock(), D(1)) is None
    assert tm.stop_price(trade) is not None  # armed while it is automated
    over = tm.on_fill(entry, D("40.000001"), D(100), clock(), D(1),
                      Execution("e2", D(100), D(60), D("40.000001")))
    assert over is not None and (over.applied, over.excess) == (40, D("0.000001"))
    assert "the order's 100" in over.past and over.filled_before == 60
    assert trade.entry_filled == 100 and trade.entry_cost == 10_000  # the excess is not in the position
    assert not trade.entry_working
    assert_inert(tm, trade, market, clock)


def test_a_halted_trade_keeps_taking_fills_that_fit_and_stays_halted(tm, clock, market):
    trade, _ = open_trade(tm, clock, [StopLoss(distance=1.0), TakeProfit(fraction=0.5, distance=1.0),
                                      TakeProfit(fraction=0.5, distance=3.0)])
    [tp1] = sent_after(tm, market, 102.0)
    over = tm.on_fill(tp1, D(50), D(102), clock(), D(1), Execution("a", D(50), D(0), D(51)))
    assert over is not None and trade.exited == 50 and trade.state is TradeState.HALTED
    [tp2] = [leg for leg in trade.legs() if leg.name == "tp2"]
    assert tp2.level_id not in tm.book
    tm.on_intent_closed(tp1, OrderStatus.CANCELLED, D(10), "cancelled")  # a failed exit: no retry timer
    assert tm.next_deadline() is None and tm.outbox == []
    assert_inert(tm, trade, market, clock)


def test_a_grouped_trailing_stop_of_a_halted_trade_never_fires(tm, clock, market):
    trade, entry = open_trade(tm, clock, [TrailingStop(distance=1.0)])
    assert sent_after(tm, market, 103.0) == [] and trade.grouped  # in its symbol's trail group
    tm.on_fill(entry, D(1), D(100), clock(), D(0), Execution("late", D(100), D(100), D(1)))
    assert trade.state is TradeState.HALTED and not trade.grouped and trade.entry_filled == 100
    assert_inert(tm, trade, market, clock)


@pytest.mark.parametrize("how", ["late entry fill", "exit over-fill"])
def test_a_halted_trade_is_restored_halted_and_inert(tm, clock, market, how):
    trade, entry = open_trade(tm, clock, [StopLoss(distance=1.0), TakeProfit(distance=3.0),
                                          TimeStop(after_seconds=60)])
    if how == "late entry fill":  # not closing when halted: nothing may re-arm its stop or its time stop
        tm.on_fill(entry, D(0), D(100), clock(), D(0), Execution("late", D(100), D(100), D(1)))
    else:
        [stop] = sent_after(tm, market, 97.9)
        tm.on_fill(stop, D(60), D("97.9"), clock(), D(0), Execution("x", D(100), D(0), D(60)))
        tm.on_fill(stop, D(40), D("97.9"), clock(), D(0), Execution("y", D(100), D(60), D(41)))
    assert trade.state is TradeState.HALTED
    snap = tm.snapshot(trade)
    assert snap["state"] == "halted"
    again = TradeManager(clock, market.vol.get, market.quotes.get)
    restored = again.restore(trade.id, trade.request, snap, trade.created_ns)
    assert restored.state is TradeState.HALTED and restored.reason == trade.reason
    assert (restored.entry_filled, restored.exited) == (trade.entry_filled, trade.exited)
    assert again.next_deadline() is None  # no time stop re-armed
    assert_inert(again, restored, market, clock)
    assert restored in again.live_trades()  # not over: its position is open business for a person


def test_timers_set_before_the_halt_do_nothing(tm, clock, market):
    """A target's exit failed (its retry timer is set) and the time stop is pending when the trade is halted:
    when they come due, nothing is re-armed or sent."""
    trade, entry = open_trade(tm, clock, [StopLoss(distance=1.0), TakeProfit(distance=1.0),
                                          TimeStop(after_seconds=60)])
    [tp1] = sent_after(tm, market, 102.0)
    tm.on_intent_closed(tp1, OrderStatus.REJECTED, D(100), "no liquidity")  # retry:tp1 set
    assert tm.next_deadline() is not None
    tm.on_fill(entry, D(0), D(100), clock(), D(0), Execution("late", D(100), D(100), D(5)))
    assert_inert(tm, trade, market, clock)


def test_a_closing_halted_trade_with_nothing_in_flight_is_not_resumed(tm, clock, market):
    """Stopped, then halted by a late entry execution, then its stop order cancelled: closing, nothing in flight,
    a position open - exactly what a restart resumes for an automated trade, and must not for a halted one."""
    trade, entry = open_trade(tm, clock)
    [stop] = sent_after(tm, market, 97.9)
    tm.on_fill(entry, D(0), D(100), clock(), D(0), Execution("late", D(100), D(100), D(1)))
    tm.on_intent_closed(stop, OrderStatus.CANCELLED, D(100), "cancelled")
    assert trade.closing and trade.inflight == 0 and trade.open_qty == 100
    assert_inert(tm, trade, market, clock)
