"""Contracts, positions and account values of the simulated exchange, as TWS messages.

Why a module of its own: three different requests (reqAccountUpdates, reqAccountUpdatesMulti,
reqAccountSummary) and the push after every fill all describe the same account state; computing it
in one place keeps them consistent with each other and with the venue's bookkeeping.
"""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from tickguard.adapters.sim.market import SymbolSpec
from tickguard.adapters.sim.venue import SimVenue

from . import outgoing as out
from .incoming_orders import RequestContract
from .wire import Field

NY = ZoneInfo("America/New_York")
CURRENCY = "USD"
PRIMARY_EXCHANGE = "NASDAQ"
OFF_TICK = "The price does not conform to the minimum price variation for this contract."
"""IB's text for error 110, sent for an order whose price is not a whole number of the contract's minTick."""


def contract_spec(spec: SymbolSpec) -> out.ContractSpec:
    """The full contract the gateway reports for a venue symbol (a US stock routed SMART)."""
    return out.ContractSpec(
        con_id=spec.con_id,
        symbol=spec.symbol,
        exchange=spec.exchange,
        primary_exchange=PRIMARY_EXCHANGE,
        currency=spec.currency,
        local_symbol=spec.symbol,
        trading_class=spec.symbol,
        min_tick=spec.min_tick,
    )


def contract_details(spec: SymbolSpec, now_ns: int) -> out.ContractDetailsSpec:
    return out.ContractDetailsSpec(
        contract_spec(spec),
        market_name=spec.symbol,
        long_name=f"SIMULATED {spec.symbol}",
        order_types="LMT,MKT",
        valid_exchanges="SMART",
        time_zone_id="US/Eastern",
        trading_hours=session_hours(now_ns, "0400", "2000"),
        liquid_hours=session_hours(now_ns, "0930", "1600"),
    )


def session_hours(now_ns: int, open_: str, close: str, days: int = 7) -> str:
    """A US stock's hours as IB's contract details give them (the format of API servers 970 and later): a week of
    New York days from today, ``20261130:0930-20261130:1600`` on a weekday, ``20261205:CLOSED`` on a weekend
    (``tradingHours`` with the extended session 04:00-20:00, ``liquidHours`` the regular one).  Exchange holidays
    are not simulated."""
    today = dt.datetime.fromtimestamp(now_ns / 1e9, tz=NY).date()
    out_ = []
    for i in range(days):
        day = (today + dt.timedelta(days=i)).strftime("%Y%m%d")
        weekday = (today + dt.timedelta(days=i)).weekday() < 5
        out_.append(f"{day}:{open_}-{day}:{close}" if weekday else f"{day}:CLOSED")
    return ";".join(out_)


def resolve(venue: SimVenue, contract: RequestContract) -> SymbolSpec | None:
    """Find the venue symbol a request means: by conId when given, else by symbol.

    A request that names another security type or currency is unknown, as at IB (error 200).
    """
    if contract.con_id:
        for spec in venue.specs.values():
            if spec.con_id == contract.con_id:
                return spec
        return None
    spec = venue.specs.get(contract.symbol) or venue.specs.get(contract.local_symbol)
    if spec is None:
        return None
    if contract.sec_type not in ("", "STK") or contract.currency not in ("", spec.currency):
        return None
    return spec


def price_on_tick(text: str, min_tick: float) -> bool:
    """Is the price, as the client wrote it on the wire, a whole multiple of ``min_tick``?

    Why exact: IB checks the price it received, not a float near it, and refuses ``169.39000000000001``
    on a 0.01 tick although a float tolerance would call it 169.39. The client writes the price as
    Python's ``str(float)`` (the shortest text that round-trips), so the text is parsed as a Decimal and
    divided by ``Decimal(str(min_tick))`` with no tolerance. Deliberately independent of the engine's own
    rounding (``tickguard.core.price_grid``): a fake that shared the engine's code could not catch its bugs.
    An empty field (unset price) is on the grid; a non-finite or unparsable one is not.
    """
    if text == "":
        return True
    try:
        price = Decimal(text)
        tick = Decimal(str(min_tick))
        return price.is_finite() and tick > 0 and price % tick == 0
    except InvalidOperation:
        return False


def _money(value: float) -> str:
    return f"{value:.2f}"


def account_values(venue: SimVenue, account: str) -> list[tuple[str, str, str]]:
    """``(key, value, currency)`` for the account: the tags an engine checks before trading.

    Margins follow the simulated exchange's rule (initial = gross x margin_rate, maintenance 80 % of
    it), so BuyingPower/ExcessLiquidity move with positions and prices the way they do at IB.
    """
    ex = venue.exchange
    acct = ex.account(account)
    equity = ex.equity(account)
    gross = ex.gross(account)
    init = gross * ex.p.margin_rate
    maint = init * 0.8
    unrealized = 0.0
    for symbol, qty in acct.positions.items():
        if symbol in ex.quotes and not math.isclose(qty, 0.0, abs_tol=1e-9):
            unrealized += qty * (ex.mark(symbol) - acct.avg_cost.get(symbol, 0.0))
    values = {
        "NetLiquidation": equity,
        "EquityWithLoanValue": equity,
        "TotalCashValue": acct.cash,
        "CashBalance": acct.cash,
        "GrossPositionValue": gross,
        "BuyingPower": ex.buying_power(account),
        "AvailableFunds": equity - init,
        "ExcessLiquidity": equity - maint,
        "InitMarginReq": init,
        "MaintMarginReq": maint,
        "FullInitMarginReq": init,
        "FullMaintMarginReq": maint,
        "RealizedPnL": acct.realized,
        "UnrealizedPnL": unrealized,
    }
    rows = [(key, _money(value), CURRENCY) for key, value in values.items()]
    rows.append(("AccountType", "INDIVIDUAL", ""))
    return rows


def account_update_messages(venue: SimVenue, account: str) -> list[list[Field]]:
    return [out.update_account_value(k, v, c, account) for k, v, c in account_values(venue, account)]


def portfolio_message(venue: SimVenue, account: str, symbol: str) -> list[Field]:
    ex = venue.exchange
    acct = ex.account(account)
    qty = acct.positions.get(symbol, 0.0)
    avg = acct.avg_cost.get(symbol, 0.0) if qty else 0.0
    mark = ex.mark(symbol) if symbol in ex.quotes else avg
    spec = contract_spec(venue.specs[symbol])
    return out.update_portfolio(spec, qty, mark, qty * mark, avg, qty * (mark - avg), 0.0, account)


def portfolio_messages(venue: SimVenue, account: str) -> list[list[Field]]:
    return [portfolio_message(venue, account, s) for s in venue.positions(account)]


def position_message(venue: SimVenue, account: str, symbol: str) -> list[Field]:
    acct = venue.exchange.account(account)
    qty = acct.positions.get(symbol, 0.0)
    avg = acct.avg_cost.get(symbol, 0.0) if qty else 0.0
    return out.position(account, contract_spec(venue.specs[symbol]), qty, avg)


def position_messages(venue: SimVenue, accounts: list[str]) -> list[list[Field]]:
    return [position_message(venue, a, s) for a in accounts for s in venue.positions(a)]


def summary_messages(venue: SimVenue, req_id: int, accounts: list[str], tags: str) -> list[list[Field]]:
    """Answer reqAccountSummary; ``tags`` is IB's comma list (unknown tags are simply absent)."""
    wanted = {t.strip() for t in tags.split(",") if t.strip()}
    fields: list[list[Field]] = []
    for account in accounts:
        for key, value, currency in account_values(venue, account):
            if "All" in wanted or key in wanted:
                fields.append(out.account_summary(req_id, account, key, value, currency))
    return fields
