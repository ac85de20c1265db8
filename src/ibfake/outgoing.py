"""Server → client messages (market data, contracts, history, accounts) at server version 178.

Why: each function mirrors, field by field, how ib_async 2.1.0's ``decoder.py`` unpacks the message,
because ib_async swallows decoding errors — one missing or extra field turns into a silent hang.
Every function returns a plain field list; frame it with :func:`ibfake.wire.encode_message`.
Orders, executions and commissions live in :mod:`ibfake.outgoing_orders`.

Inputs are plain Python values and the small dataclasses defined here, never ib_async objects, so the
gateway does not depend on the client library it is testing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import IntEnum
from typing import TypeAlias

from .wire import Field

Number: TypeAlias = float | int | Decimal


class OutMsg(IntEnum):
    """Message ids of server → client messages (the first field)."""

    TICK_PRICE = 1
    TICK_SIZE = 2
    ORDER_STATUS = 3
    ERR_MSG = 4
    OPEN_ORDER = 5
    ACCT_VALUE = 6
    PORTFOLIO_VALUE = 7
    ACCT_UPDATE_TIME = 8
    NEXT_VALID_ID = 9
    CONTRACT_DATA = 10
    EXECUTION_DATA = 11
    MANAGED_ACCTS = 15
    HISTORICAL_DATA = 17
    TICK_GENERIC = 45
    TICK_STRING = 46
    CURRENT_TIME = 49
    CONTRACT_DATA_END = 52
    OPEN_ORDER_END = 53
    ACCT_DOWNLOAD_END = 54
    EXECUTION_DATA_END = 55
    TICK_SNAPSHOT_END = 57
    MARKET_DATA_TYPE = 58
    COMMISSION_REPORT = 59
    POSITION_DATA = 61
    POSITION_END = 62
    ACCOUNT_SUMMARY = 63
    ACCOUNT_SUMMARY_END = 64
    ACCOUNT_UPDATE_MULTI = 73
    ACCOUNT_UPDATE_MULTI_END = 74
    HISTORICAL_DATA_UPDATE = 90
    COMPLETED_ORDER = 101
    COMPLETED_ORDERS_END = 102


@dataclass(frozen=True, slots=True)
class ContractSpec:
    """A fully defined contract as the gateway knows it.

    ``last_trade_date``/``strike``/``right`` stay empty/zero for stocks; ``multiplier`` is text
    because that is how IB carries it.
    """

    con_id: int
    symbol: str
    sec_type: str = "STK"
    exchange: str = "SMART"
    primary_exchange: str = ""
    currency: str = "USD"
    local_symbol: str = ""
    trading_class: str = ""
    min_tick: float = 0.01
    multiplier: str = ""
    last_trade_date: str = ""
    strike: float = 0.0
    right: str = ""

    def wire11(self, exchange: str | None = None) -> list[Field]:
        """The 11-field contract block used by openOrder, execDetails and position.

        (conId, symbol, secType, lastTradeDate, strike, right, multiplier, exchange, currency,
        localSymbol, tradingClass) — no primaryExchange in this block.
        """
        return [
            self.con_id,
            self.symbol,
            self.sec_type,
            self.last_trade_date,
            self.strike,
            self.right,
            self.multiplier,
            self.exchange if exchange is None else exchange,
            self.currency,
            self.local_symbol or self.symbol,
            self.trading_class or self.symbol,
        ]


@dataclass(frozen=True, slots=True)
class ContractDetailsSpec:
    """Extra contract-details fields; defaults suit a US stock.

    ``long_name`` must be ASCII: ib_async runs it through ``unicode-escape`` decoding, which
    garbles UTF-8 text. ``trading_hours``/``liquid_hours`` use IB's
    ``20250102:0930-20250102:1600;20250103:CLOSED`` format.
    """

    contract: ContractSpec
    market_name: str = ""
    long_name: str = ""
    order_types: str = "LMT,MKT,STP,STPLMT,TRAIL,MOC,LOC"
    valid_exchanges: str = "SMART,NYSE,NASDAQ,ARCA"
    price_magnifier: int = 1
    under_con_id: int = 0
    contract_month: str = ""
    industry: str = ""
    category: str = ""
    subcategory: str = ""
    time_zone_id: str = "US/Eastern"
    trading_hours: str = ""
    liquid_hours: str = ""
    ev_rule: str = ""
    ev_multiplier: str = ""
    sec_ids: Sequence[tuple[str, str]] = field(default_factory=tuple)
    agg_group: int = 1
    under_symbol: str = ""
    under_sec_type: str = ""
    market_rule_ids: str = "26"
    real_expiration_date: str = ""
    stock_type: str = "COMMON"
    min_size: Number = 1
    size_increment: Number = 1
    suggested_size_increment: Number = 100
    last_trade_time: str = ""


@dataclass(frozen=True, slots=True)
class Bar:
    """One historical bar. ``date`` is a ``date`` (daily bars) or an aware ``datetime`` (intraday)."""

    date: dt.date | dt.datetime | str
    open: float
    high: float
    low: float
    close: float
    volume: Number = 0
    wap: float = 0.0
    bar_count: int = 0


# --------------------------------------------------------------------------------------------------
# Session / misc


def error(req_id: int, code: int, message: str, advanced_order_reject_json: str = "") -> list[Field]:
    """``4,2,reqId,code,msg,advancedOrderRejectJson`` — the last field is mandatory at ≥166.

    ``req_id`` is -1 for connection-level messages (1100/1102/2104...). An orderId as reqId makes
    ib_async cancel that trade unless the code is one of its warning codes.
    """
    return [OutMsg.ERR_MSG, 2, req_id, code, message, advanced_order_reject_json]


def managed_accounts(accounts: Sequence[str]) -> list[Field]:
    """``15,1,"DU1,DU2"`` — exactly 3 fields (ib_async unpacks it during the handshake)."""
    return [OutMsg.MANAGED_ACCTS, 1, ",".join(accounts)]


def next_valid_id(order_id: int) -> list[Field]:
    """``9,1,orderId`` — exactly 3 fields; with managedAccounts it completes ib_async's start-up."""
    return [OutMsg.NEXT_VALID_ID, 1, order_id]


def current_time(epoch_seconds: int) -> list[Field]:
    """``49,1,epoch`` — answer to reqCurrentTime (integer seconds)."""
    return [OutMsg.CURRENT_TIME, 1, int(epoch_seconds)]


# --------------------------------------------------------------------------------------------------
# Market data


def tick_price(
    req_id: int, tick_type: int, price: float, size: Number = 0, attr_mask: int = 0
) -> list[Field]:
    """``1,6,reqId,tickType,price,size,attrMask`` — exactly 7 fields.

    ib_async drops the tick only if the price field is empty, and stores a bid/ask (1/2) with size 0
    as "no quote" (``IBDefaults.emptyPrice``, -1 by default in 2.1.0, size 0). Use tick types
    ib_async maps (1 bid, 2 ask, 4 last, 6 high, 7 low, 9 close, 14 open, 66-68/72-76 delayed):
    any other type trips an assertion inside the wrapper (logged, tick lost).
    attr_mask bits: 1 canAutoExecute, 2 pastLimit, 4 preOpen.
    """
    return [OutMsg.TICK_PRICE, 6, req_id, tick_type, price, size, attr_mask]


def tick_size(req_id: int, tick_type: int, size: Number) -> list[Field]:
    """``2,6,reqId,tickType,size`` — 0 bidSize, 3 askSize, 5 lastSize, 8 volume (69-71/74 delayed)."""
    return [OutMsg.TICK_SIZE, 6, req_id, tick_type, size]


def tick_string(req_id: int, tick_type: int, value: str) -> list[Field]:
    """``46,6,reqId,tickType,value`` — e.g. 45 lastTimestamp (epoch seconds), 48 RTVolume."""
    return [OutMsg.TICK_STRING, 6, req_id, tick_type, value]


def tick_generic(req_id: int, tick_type: int, value: float) -> list[Field]:
    """``45,6,reqId,tickType,value`` — e.g. 49 halted, 46 shortable."""
    return [OutMsg.TICK_GENERIC, 6, req_id, tick_type, value]


def tick_snapshot_end(req_id: int) -> list[Field]:
    """``57,1,reqId`` — ends a snapshot reqMktData (ib_async's ``reqTickersAsync`` waits for it)."""
    return [OutMsg.TICK_SNAPSHOT_END, 1, req_id]


def market_data_type(req_id: int, data_type: int) -> list[Field]:
    """``58,1,reqId,type`` — 1 live, 2 frozen, 3 delayed, 4 delayed-frozen."""
    return [OutMsg.MARKET_DATA_TYPE, 1, req_id, data_type]


# --------------------------------------------------------------------------------------------------
# Contracts


def contract_details(req_id: int, details: ContractDetailsSpec) -> list[Field]:
    """``10,reqId,…`` — no version field at ≥164; mirrors ``Decoder.contractDetails``.

    The contract's last trade date, last trade time and time zone travel together in one field
    (``"20250321 15:00 US/Central"`` style, space-separated).
    """
    c = details.contract
    last_times = " ".join(p for p in (c.last_trade_date, details.last_trade_time) if p)
    if last_times and details.last_trade_time and details.time_zone_id:
        last_times += " " + details.time_zone_id
    fields: list[Field] = [
        OutMsg.CONTRACT_DATA,
        req_id,
        c.symbol,
        c.sec_type,
        last_times,
        c.strike,
        c.right,
        c.exchange,
        c.currency,
        c.local_symbol or c.symbol,
        details.market_name or c.trading_class or c.symbol,
        c.trading_class or c.symbol,
        c.con_id,
        c.min_tick,
        c.multiplier,
        details.order_types,
        details.valid_exchanges,
        details.price_magnifier,
        details.under_con_id,
        details.long_name,
        c.primary_exchange,
        details.contract_month,
        details.industry,
        details.category,
        details.subcategory,
        details.time_zone_id,
        details.trading_hours,
        details.liquid_hours,
        details.ev_rule,
        details.ev_multiplier,
        len(details.sec_ids),
    ]
    for tag, value in details.sec_ids:
        fields += [tag, value]
    fields += [
        details.agg_group,
        details.under_symbol,
        details.under_sec_type,
        details.market_rule_ids,
        details.real_expiration_date,
        details.stock_type,
        details.min_size,
        details.size_increment,
        details.suggested_size_increment,
    ]
    return fields


def contract_details_end(req_id: int) -> list[Field]:
    """``52,1,reqId`` — ends a reqContractDetails answer.

    For an unknown contract real IB sends no details and no end, only error 200 ("No security
    definition has been found for the request") with the reqId.
    """
    return [OutMsg.CONTRACT_DATA_END, 1, req_id]


# --------------------------------------------------------------------------------------------------
# Historical data


def format_bar_date(value: dt.date | dt.datetime | str) -> str:
    """Format a bar date like IB does for ``formatDate=1``.

    Daily bars: ``YYYYMMDD``. Intraday bars: ``YYYYMMDD HH:MM:SS Zone`` where Zone must be an IANA
    key (ib_async builds a ``ZoneInfo`` from it), so aware datetimes need a ZoneInfo tzinfo; UTC
    and naive datetimes are sent as UTC. Strings pass through (e.g. epoch seconds for formatDate=2).
    """
    if isinstance(value, str):
        return value
    if isinstance(value, dt.datetime):
        tz = value.tzinfo
        key = getattr(tz, "key", None)
        if key is None:
            value = value.astimezone(dt.UTC) if tz is not None else value
            key = "UTC"
        return value.strftime("%Y%m%d %H:%M:%S") + " " + key
    return value.strftime("%Y%m%d")


def historical_data(req_id: int, start: str, end: str, bars: Sequence[Bar]) -> list[Field]:
    """``17,reqId,start,end,n,(date,open,high,low,close,volume,WAP,barCount)×n``.

    No version field and no separate end message at 178: this one message completes the request.
    Every bar field must be numeric (ib_async calls ``float``/``int`` without defaults).
    ``start``/``end`` are informational strings like ``"20250101 09:30:00 US/Eastern"``.
    """
    fields: list[Field] = [OutMsg.HISTORICAL_DATA, req_id, start, end, len(bars)]
    for bar in bars:
        fields += [
            format_bar_date(bar.date),
            bar.open,
            bar.high,
            bar.low,
            bar.close,
            bar.volume,
            bar.wap,
            int(bar.bar_count),
        ]
    return fields


def historical_data_update(req_id: int, bar: Bar) -> list[Field]:
    """``90,reqId,barCount,date,open,close,high,low,WAP,volume`` — keepUpToDate updates.

    Note the different field order from historicalData (barCount first, close before high/low).
    """
    return [
        OutMsg.HISTORICAL_DATA_UPDATE,
        req_id,
        int(bar.bar_count),
        format_bar_date(bar.date),
        bar.open,
        bar.close,
        bar.high,
        bar.low,
        bar.wap,
        bar.volume,
    ]


# --------------------------------------------------------------------------------------------------
# Positions and accounts


def position(account: str, contract: ContractSpec, pos: Number, avg_cost: float) -> list[Field]:
    """``61,3,account,<11 contract fields>,pos,avgCost`` — exactly 16 fields."""
    return [OutMsg.POSITION_DATA, 3, account, *contract.wire11(), pos, avg_cost]


def position_end() -> list[Field]:
    """``62,1`` — ends reqPositions; ib_async's connect sync waits for it."""
    return [OutMsg.POSITION_END, 1]


def update_account_value(key: str, value: str, currency: str, account: str) -> list[Field]:
    """``6,2,key,value,currency,account`` (value is text, e.g. ``"100000.00"``)."""
    return [OutMsg.ACCT_VALUE, 2, key, value, currency, account]


def update_portfolio(
    contract: ContractSpec,
    pos: Number,
    market_price: float,
    market_value: float,
    average_cost: float,
    unrealized_pnl: float,
    realized_pnl: float,
    account: str,
) -> list[Field]:
    """``7,8,<contract with primaryExchange, no exchange>,pos,price,value,avgCost,uPnL,rPnL,acct``.

    Exactly 20 fields; every number must be present (ib_async calls ``float`` without defaults).
    """
    c = contract
    return [
        OutMsg.PORTFOLIO_VALUE,
        8,
        c.con_id,
        c.symbol,
        c.sec_type,
        c.last_trade_date,
        c.strike,
        c.right,
        c.multiplier,
        c.primary_exchange,
        c.currency,
        c.local_symbol or c.symbol,
        c.trading_class or c.symbol,
        pos,
        market_price,
        market_value,
        average_cost,
        unrealized_pnl,
        realized_pnl,
        account,
    ]


def update_account_time(timestamp: str) -> list[Field]:
    """``8,1,"HH:MM"`` — last account update time."""
    return [OutMsg.ACCT_UPDATE_TIME, 1, timestamp]


def account_download_end(account: str) -> list[Field]:
    """``54,1,account`` — ends the reqAccountUpdates snapshot; ib_async's connect sync waits for it."""
    return [OutMsg.ACCT_DOWNLOAD_END, 1, account]


def account_update_multi(
    req_id: int, account: str, model_code: str, key: str, value: str, currency: str
) -> list[Field]:
    """``73,1,reqId,account,modelCode,key,value,currency``."""
    return [OutMsg.ACCOUNT_UPDATE_MULTI, 1, req_id, account, model_code, key, value, currency]


def account_update_multi_end(req_id: int) -> list[Field]:
    """``74,1,reqId`` — ends reqAccountUpdatesMulti; ib_async's connect sync waits for it."""
    return [OutMsg.ACCOUNT_UPDATE_MULTI_END, 1, req_id]


def account_summary(req_id: int, account: str, tag: str, value: str, currency: str) -> list[Field]:
    """``63,1,reqId,account,tag,value,currency``."""
    return [OutMsg.ACCOUNT_SUMMARY, 1, req_id, account, tag, value, currency]


def account_summary_end(req_id: int) -> list[Field]:
    """``64,1,reqId``."""
    return [OutMsg.ACCOUNT_SUMMARY_END, 1, req_id]
