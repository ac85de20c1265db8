"""The trade manager and the tick grid: exit limits snapped marketably, off-grid user limits refused.

Why: IB refuses an off-grid limit price (error 110), and an exit refused is a position left unprotected
until the retry; so exit limits are put on the grid before they leave the core, in the direction that keeps
them marketable. A user's own limit price is theirs: off the grid it is refused with the reason, not moved.
"""

from decimal import Decimal

import pytest

from tickguard.core.exit_rules import StopLoss
from tickguard.core.model import Action, OrderType, Side
from tickguard.core.trade_manager import TradeManager, TradeRejected
from tickguard.core.trades import TradeRequest


def make(clock, market, tick=0.01, offset=0.0):
    market.tick_sizes["AAA"] = str(tick)
    return TradeManager(
        clock,
        market.vol.get,
        market.quotes.get,
        grid=market.grid,
        exit_order_type=OrderType.LIMIT,
        exit_limit_offset=offset,
    )


def stopped_exit(tm, market, clock, side, entry, bid, ask):
    """Open a trade at ``entry`` with a stop 1.0 away, then quote (bid, ask) through the stop: the exit intent."""
    stop = StopLoss(distance=1.0, unit="price")
    trade = tm.submit(TradeRequest(symbol="AAA", side=side, qty=100, rules=[stop]))
    [intent] = tm.outbox
    tm.outbox = []
    tm.on_fill(intent, 100, entry, clock(), 1.0)
    tm.evaluate(market.tick("AAA", bid, ask))
    [exit_intent] = tm.outbox
    assert exit_intent.trade_id == trade.id and exit_intent.order_type is OrderType.LIMIT
    return exit_intent


@pytest.mark.parametrize(
    ("side", "tick", "offset", "entry", "bid", "ask", "action", "limit"),
    [
        (Side.LONG, 0.01, 0.003, 100.0, 98.50, 98.52, Action.SELL, 98.49),  # sell: rounds down
        (Side.SHORT, 0.01, 0.003, 100.0, 101.48, 101.50, Action.BUY, 101.51),  # buy: rounds up
        (Side.LONG, 0.25, 0.1, 100.0, 98.75, 99.00, Action.SELL, 98.50),
        (Side.SHORT, 0.25, 0.1, 100.0, 101.25, 101.50, Action.BUY, 101.75),
        (Side.LONG, 0.01, 0.02, 100.0, 98.41, 98.43, Action.SELL, 98.39),  # on the grid: touch - offset exactly
        (Side.SHORT, 0.01, 0.02, 168.0, 169.35, 169.37, Action.BUY, 169.39),  # not 169.40 (float 169.37 + 0.02)
        (Side.LONG, 0.0001, 0.00005, 2.0, 0.9876, 0.9877, Action.SELL, 0.9875),
        (Side.LONG, 0.01, 0.0, 100.0, 98.50, 98.52, Action.SELL, 98.50),
    ],
)
def test_exit_limit_is_snapped_marketably(clock, market, side, tick, offset, entry, bid, ask, action, limit):
    market.tick("AAA", entry, entry)
    tm = make(clock, market, tick, offset)
    intent = stopped_exit(tm, market, clock, side, entry, bid, ask)
    assert intent.action is action and intent.limit_price == Decimal(str(limit))
    assert str(float(intent.limit_price)) == str(limit)  # the text ib_async will send is the grid price's own


def limit_entry(price: float) -> TradeRequest:
    return TradeRequest(symbol="AAA", side=Side.LONG, qty=100, rules=[StopLoss(distance=1.0)],
                        entry_type=OrderType.LIMIT, limit_price=price)


def test_off_grid_entry_limit_is_refused_with_price_tick_and_symbol(clock, market):
    market.tick("AAA", 100.0, 100.25)
    tm = make(clock, market, tick=0.25)
    with pytest.raises(TradeRejected, match=r"limit price 100\.1 .*AAA.*minimum tick 0\.25"):
        tm.submit(limit_entry(100.10))
    assert tm.outbox == [] and tm.trades == {}
    tm.submit(limit_entry(100.0))
    [intent] = tm.outbox
    assert intent.limit_price == Decimal("100")  # the user's price, untouched


def test_float_noise_in_a_user_limit_is_refused_not_moved(clock, market):
    market.tick("AAA", 100.0, 100.02)
    tm = make(clock, market)
    with pytest.raises(TradeRejected, match=r"limit price 100\.003 is not on the tick grid of AAA"):
        tm.submit(limit_entry(100.003))
    with pytest.raises(TradeRejected, match="169.39000000000001"):
        tm.submit(
            TradeRequest(
                symbol="AAA",
                side=Side.SHORT,
                qty=100,
                rules=[StopLoss(distance=1.0)],
                entry_type=OrderType.LIMIT,
                limit_price=169.37 + 0.02,
            )
        )
