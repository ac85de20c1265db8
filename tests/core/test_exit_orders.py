"""The policy for exits the broker refuses (core/exit_orders.py), through the trade manager.

Why: a refused exit leaves the position unprotected.  The same order again may be refused again, so each failure
makes the next order more certain to execute - a limit priced again at the touch, then market - the retries never
stop while the trade is automated, their pauses double (capped), and each failure raises an alert at once.
"""

from decimal import Decimal

import pytest

from tickguard.core.exit_orders import ExitPolicy
from tickguard.core.exit_rules import StopLoss
from tickguard.core.model import OrderType, Side
from tickguard.core.order_state import OrderStatus
from tickguard.core.price_grid import CENT
from tickguard.core.trade_manager import TradeManager
from tickguard.core.trades import TradeRequest

BACKOFF = 500_000_000


def stopped(clock, market, exit_type: OrderType):
    market.tick("AAA", 100.0, 100.02)
    tm = TradeManager(clock, market.vol.get, market.quotes.get, exit_order_type=exit_type,
                      exit_limit_offset=0.05, retry_backoff_ns=BACKOFF)
    trade = tm.submit(TradeRequest(symbol="AAA", side=Side.LONG, qty=100, rules=[StopLoss(distance=1.0,
                                                                                           unit="price")]))
    [entry] = tm.outbox
    tm.outbox = []
    tm.on_fill(entry, 100, 100.0, clock(), 0)
    tm.evaluate(market.tick("AAA", 98.90, 98.92))
    [exit_] = tm.outbox
    tm.outbox = []
    return tm, trade, exit_


def refuse_and_retry(tm, clock, market, intent, bid: float):
    tm.on_intent_closed(intent, OrderStatus.REJECTED, intent.qty, "201: price outside band")
    [alert] = tm.alerts
    tm.alerts.clear()
    market.tick("AAA", bid, round(bid + 0.02, 2))
    clock.advance(alert.retry_in_ns / 1e9)
    tm.on_time(clock())
    [retry] = tm.outbox
    tm.outbox = []
    return alert, retry


def test_a_refused_limit_exit_is_retried_at_the_touch_then_at_market_and_alerts_each_time(clock, market):
    tm, trade, first = stopped(clock, market, OrderType.LIMIT)
    assert (first.order_type, first.limit_price) == (OrderType.LIMIT, Decimal("98.85"))  # the touch less 0.05
    alert, second = refuse_and_retry(tm, clock, market, first, 98.70)
    assert alert.retry_in_ns == BACKOFF and alert.next_type is OrderType.LIMIT and "EXIT REFUSED" in alert.describe()
    assert "201: price outside band" in alert.describe() and alert.remaining == 100
    assert (second.order_type, second.limit_price, second.key.endswith(":stop:2")) == (
        OrderType.LIMIT, Decimal("98.70"), True)  # priced again at the touch then, no offset
    alert, third = refuse_and_retry(tm, clock, market, second, 98.50)
    assert alert.retry_in_ns == 2 * BACKOFF and alert.next_type is OrderType.MARKET
    assert (third.order_type, third.limit_price, third.qty) == (OrderType.MARKET, None, 100)
    alert, fourth = refuse_and_retry(tm, clock, market, third, 98.40)
    assert alert.retry_in_ns == 4 * BACKOFF and fourth.order_type is OrderType.MARKET
    assert [h["retry_in_ns"] for h in trade.history if h["event"] == "exit_failed"] == [BACKOFF, 2 * BACKOFF,
                                                                                          4 * BACKOFF]


def test_a_refused_market_exit_stays_at_market(clock, market):
    tm, _, first = stopped(clock, market, OrderType.MARKET)
    alert, second = refuse_and_retry(tm, clock, market, first, 98.80)
    assert first.order_type is second.order_type is OrderType.MARKET and alert.next_type is OrderType.MARKET


def test_the_retry_is_not_sent_before_its_pause(clock, market):
    tm, _, first = stopped(clock, market, OrderType.MARKET)
    tm.on_intent_closed(first, OrderStatus.REJECTED, first.qty, "no")
    clock.advance(BACKOFF / 1e9 - 0.001)
    tm.on_time(clock())
    assert tm.outbox == []
    clock.advance(0.001)
    tm.on_time(clock())
    assert len(tm.outbox) == 1


@pytest.mark.parametrize(("failures", "factor"), [(1, 1), (2, 2), (3, 4), (7, 64), (20, 64)])
def test_pauses_double_and_are_capped(failures, factor):
    assert ExitPolicy(OrderType.MARKET, Decimal(0), 10).pause_ns(failures) == 10 * factor


def test_a_limit_without_a_quote_goes_at_market():
    assert ExitPolicy(OrderType.LIMIT, Decimal("0.05"), 1).limit(0, None, CENT, 1) is None
