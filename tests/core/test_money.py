"""Quantities and money are exact decimals: sums never drift, an over-fill is seen by equality."""

from decimal import Decimal

import pytest
from pydantic import ValidationError

from tickguard.core.exit_rules import StopLoss, TakeProfit
from tickguard.core.model import OrderIntent, PriorityClass, Side
from tickguard.core.money import exact
from tickguard.core.trade_manager import TradeManager, TradeRejected
from tickguard.core.trades import TradeRequest

D = Decimal


def _fill(tm, trade, leg, qty, price, commission="0.35"):
    intent = OrderIntent(f"k:{trade.id}:{leg}", trade.id, leg, "u", "a", trade.symbol, trade.side.entry_action, qty,
                         trade.request.entry_type, None, PriorityClass.ENTRY, 0)
    tm.on_fill(intent, D(qty), D(price), 0, D(commission))


@pytest.fixture
def tm(clock, market):
    market.tick("AAA", 100.0, 100.02)
    return TradeManager(clock, market.vol.get, market.quotes.get)


def test_realized_pnl_is_exact_over_uneven_fills(tm):
    trade = tm.submit(TradeRequest(symbol="AAA", side=Side.LONG, qty=300, rules=[StopLoss(distance=1.0)]))
    tm.outbox.clear()
    for price in ("0.1", "0.2", "0.4"):  # a float running average of these is already off in the last digit
        _fill(tm, trade, "entry", "100", price)
    assert trade.entry_cost == D("70.0") and trade.entry_filled == 300
    _fill(tm, trade, "stop", "100", "0.3")
    _fill(tm, trade, "stop", "200", "0.3")
    assert trade.exited == 300 and trade.open_qty == 0
    assert trade.realized == D("20.0")  # 90.0 proceeds - 70.0 cost, to the last digit
    assert trade.commissions == D("1.75")  # 5 x 0.35, where a float sum gives 1.7499999999999998
    assert trade.unrealized(D("0.5")) == 0


def test_partial_exit_shares_the_cost_pro_rata(tm):
    trade = tm.submit(TradeRequest(symbol="AAA", side=Side.SHORT, qty=3, rules=[StopLoss(distance=1.0)]))
    tm.outbox.clear()
    _fill(tm, trade, "entry", "1", "10.00")
    _fill(tm, trade, "entry", "2", "10.03")
    _fill(tm, trade, "stop", "1", "10.01")
    # short: sold 3 for 30.06 (average 10.02); one bought back at 10.01 -> +0.01
    assert trade.realized == D("0.01")
    assert trade.unrealized(D("10.00")) == D("0.04")


def test_take_profit_fractions_must_sum_to_exactly_one():
    rules = [StopLoss(distance=1), TakeProfit(fraction=0.1, distance=1), TakeProfit(fraction=0.2, distance=2),
             TakeProfit(fraction=0.7, distance=3)]  # 0.1 + 0.2 + 0.7 is 1 in decimals, not in doubles
    assert len(TradeRequest(symbol="AAA", side=Side.LONG, qty=10, rules=rules).rules) == 4
    with pytest.raises(ValidationError, match="sum to 0.99"):
        TradeRequest(symbol="AAA", side=Side.LONG, qty=10, rules=[
            StopLoss(distance=1), *(TakeProfit(fraction=0.33, distance=d) for d in (1, 2, 3))])


def test_whole_lots_are_decided_exactly(clock, market):
    market.tick("AAA", 100.0, 100.02)
    tm = TradeManager(clock, market.vol.get, market.quotes.get, lot_size=lambda _s: D("0.1"))
    assert tm.submit(TradeRequest(symbol="AAA", side=Side.LONG, qty=0.3, rules=[StopLoss(distance=1)]))
    with pytest.raises(TradeRejected, match="not a whole number of lots"):
        tm.submit(TradeRequest(symbol="AAA", side=Side.LONG, qty="0.30000001", rules=[StopLoss(distance=1)]))


def test_exact_reads_a_float_as_the_number_it_stands_for():
    assert exact(0.1) == D("0.1") and exact(100) == 100
    assert exact(169.38999999999999) == D("169.39")  # the same double as 169.39
    with pytest.raises(ValueError, match="not a finite amount"):
        exact(float("nan"))
