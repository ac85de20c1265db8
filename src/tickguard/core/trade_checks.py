"""What a trade request can only be checked against with market data, before anything is accepted.

Kept apart from the trade manager: a refusal must name what was wrong in the user's words (the symbol, the
price, the tick, the lot), and these checks are the place a new kind of refusal goes.  A request that
passes nothing here is never half-accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from tickguard.core.exit_rules import StopLoss, TakeProfit
from tickguard.core.model import Tick
from tickguard.core.price_grid import on_grid
from tickguard.core.trades import TradeRequest


class TradeRejected(ValueError):
    """A trade request the engine refuses; the message says why."""


@dataclass(slots=True, frozen=True)
class MarketFacts:
    """What the engine knows of the request's symbol right now."""

    known: bool  # a contract and a volatility are there
    quote: Tick | None
    lot: Decimal
    min_tick: float


def check_request(request: TradeRequest, facts: MarketFacts) -> None:
    """Raise ``TradeRejected`` naming the first problem: an unknown symbol, a limit price off the tick grid
    (refused, never moved: it is the user's price), fixed exit prices on the wrong side of the entry, a
    quantity that is not a whole number of lots."""
    symbol = request.symbol
    if not facts.known:
        raise TradeRejected(f"unknown symbol {symbol!r}: no contract or volatility for it")
    if request.limit_price is not None and not on_grid(request.limit_price, facts.min_tick):
        raise TradeRejected(f"limit price {request.limit_price} is not on the tick grid of {symbol}: "
                            f"it must be a whole multiple of the minimum tick {facts.min_tick}")
    sign = request.side.sign
    ref = request.limit_price
    if ref is None:
        if facts.quote is None:
            raise TradeRejected(f"{symbol}: no quote yet, cannot check the exits against the entry")
        ref = facts.quote.ask if sign > 0 else facts.quote.bid
    for rule in request.rules:
        wrong = ((isinstance(rule, StopLoss) and rule.price is not None and sign * rule.price >= sign * ref)
                 or (isinstance(rule, TakeProfit) and rule.price is not None and sign * rule.price <= sign * ref))
        if wrong:
            raise TradeRejected(f"{rule.kind} price {rule.price} is on the wrong side of the entry ({ref}) "
                                f"for a {request.side.value} trade")
    if request.qty % facts.lot != 0:  # exact: 100.0000001 shares is not 100
        raise TradeRejected(f"qty {request.qty} is not a whole number of lots of {facts.lot} for {symbol}")
