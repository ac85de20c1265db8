"""IB's values as the engine's: numbers (with IB's unset sentinel), executions, account values.

Pure conversions, kept out of ``ib_client`` so the adapter module holds the connection and its callbacks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import Decimal

from ib_async.objects import AccountValue, Fill
from ib_async.util import UNSET_DOUBLE

from tickguard.adapters.broker import FillEvent
from tickguard.core.model import Action
from tickguard.core.money import exact

# What the risk layer reads from IB's account updates.
ACCOUNT_TAGS = ("NetLiquidation", "BuyingPower", "AvailableFunds", "ExcessLiquidity", "InitMarginReq",
                "MaintMarginReq", "GrossPositionValue", "TotalCashValue")


def wire_price(price: Decimal | None) -> float:
    """An exact grid price as ib_async's ``lmtPrice``: the float whose ``str`` - what ib_async writes on the
    wire, and what IB judges for error 110 - is the price's own text (``169.39``, not ``169.39000000000001``)."""
    if price is None:
        raise ValueError("a limit order needs a limit price")
    return float(price)


def ib_number(value: object) -> float:
    """A float from IB, with its unset double and empty strings mapped to NaN."""
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return math.nan if x == UNSET_DOUBLE or not math.isfinite(x) else x


def fill_event(order_id: int, ref: str, fill: Fill, now_ns: int) -> FillEvent:
    """An ib_async execution as the engine's fill (its commission, when IB already sent it)."""
    ex = fill.execution
    ts = int(fill.time.timestamp() * 1e9) if fill.time else now_ns
    action = Action.BUY if ex.side.upper() in ("BOT", "BUY") else Action.SELL
    commission = ib_number(fill.commissionReport.commission) if fill.commissionReport.execId else math.nan
    return FillEvent(order_id, ref, ex.execId, ex.acctNumber, fill.contract.symbol, action, exact(ex.shares),
                     exact(ex.price), ts, None if math.isnan(commission) else exact(commission))


def account_numbers(values: Iterable[AccountValue]) -> dict[str, float]:
    """The ``ACCOUNT_TAGS`` of an account, in dollars (USD or the base currency), unset ones left out."""
    out: dict[str, float] = {}
    for value in values:
        if value.tag in ACCOUNT_TAGS and value.currency in ("USD", "BASE", ""):
            number = ib_number(value.value)
            if not math.isnan(number):
                out[value.tag] = number
    return out


def account_problem(configured: str, managed: list[str]) -> str:
    """Why IB cannot trade the configured account ('' if it can): it must be one IB manages for this login.

    IB refuses an order for an account it does not manage (error 321, the order is never created), so an engine
    pointed at the wrong account would have every order refused; the mistake is named at connect instead."""
    if not configured or configured in managed:  # empty: the login's only account (ib_async picks it)
        return ""
    return (f"IB does not manage account {configured!r} (ib.account); this login manages "
            f"{', '.join(managed) or 'no account'} - set ib.account to one of them")
