"""What a trade request can only be checked against with market data, before anything is accepted.

Kept apart from the trade manager: a refusal must name what was wrong in the user's words (the symbol, the
price, the tick, the lot), and these checks are the place a new kind of refusal goes.  A request that
passes nothing here is never half-accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from tickguard.core.exit_rules import BreakEven, StopLoss, TakeProfit, unit_size
from tickguard.core.model import Tick
from tickguard.core.money import decimal_of
from tickguard.core.price_grid import PriceGrid
from tickguard.core.trades import TradeRequest
from tickguard.core.volatility import VolSnapshot


class TradeRejected(ValueError):
    """A trade request the engine refuses; the message says why."""


@dataclass(slots=True, frozen=True)
class MarketFacts:
    """What the engine knows of the request's symbol right now."""

    vol: VolSnapshot | None  # None: no contract or volatility for the symbol (unknown to the engine)
    quote: Tick | None
    lot: Decimal
    grid: PriceGrid


def check_request(request: TradeRequest, facts: MarketFacts) -> None:
    """Raise ``TradeRejected`` naming the first problem: an unknown symbol, a user's price (limit, fixed stop
    or target) off the tick grid (refused, never moved: it is the user's price), fixed exit prices on the
    wrong side of the entry, a quantity that is not a whole number of lots."""
    symbol, grid, vol = request.symbol, facts.grid, facts.vol
    if vol is None:
        raise TradeRejected(f"unknown symbol {symbol!r}: no contract or volatility for it")
    be = request.rule(BreakEven)
    if be is not None and be.unit != "price":  # in price units the rule itself refuses it
        after = decimal_of(be.after) * unit_size(be.unit, vol)
        if decimal_of(be.offset) >= after:
            raise TradeRejected(f"break_even offset {be.offset} must be smaller than its 'after' of {be.after} "
                                f"{be.unit} (= {after:.6g} now), or the move would fire the moment it arms")
    named = [("limit price", request.limit_price)] + [
        (f"{rule.kind} price", rule.price) for rule in request.rules if isinstance(rule, StopLoss | TakeProfit)]
    for what, price in named:
        if price is not None and not grid.on_grid(price):
            raise TradeRejected(f"{what} {price} is not on the tick grid of {symbol}: "
                                f"it must be a whole multiple of the minimum tick {grid.tick}")
    sign = request.side.sign
    if request.limit_price is not None:
        ref = grid.exact_units(request.limit_price)
    elif facts.quote is None:
        raise TradeRejected(f"{symbol}: no quote yet, cannot check the exits against the entry")
    else:
        ref = facts.quote.ask if sign > 0 else facts.quote.bid
    for rule in request.rules:
        if not isinstance(rule, StopLoss | TakeProfit) or rule.price is None:
            continue
        level = sign * grid.exact_units(rule.price)
        if (level >= sign * ref) if isinstance(rule, StopLoss) else (level <= sign * ref):
            raise TradeRejected(f"{rule.kind} price {rule.price} is on the wrong side of the entry "
                                f"({grid.price(ref)}) for a {request.side.value} trade")
    if request.qty % facts.lot != 0:  # exact: 100.0000001 shares is not 100
        raise TradeRejected(f"qty {request.qty} is not a whole number of lots of {facts.lot} for {symbol}")
