"""Parsers for client → server messages, as ib_async 2.1.0's ``client.py`` writes them at version 178.

Why: the gateway must understand exactly what the real client sends; each parser mirrors one
``Client`` method, checks the version field it writes, and consumes every field (leftovers raise),
so a mismatch between our reading and the client's writing fails loudly instead of producing
plausible-looking garbage. :func:`parse_incoming` dispatches on the message id and raises
:class:`UnknownMessage` (naming the id, and the request if we know it) for anything unsupported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .incoming_orders import (
    ComboLegRequest,
    DeltaNeutralContractRequest,
    RequestContract,
    parse_place_order,
    read_contract,
)
from .incoming_orders import PlaceOrder as PlaceOrder  # re-exported: parse_incoming returns it
from .wire import FieldReader, MalformedField, ProtocolError


class UnknownMessage(ProtocolError):
    """A client message id this codec does not parse. ``msg_id`` says which; ``name`` if known."""

    def __init__(self, msg_id: int, fields: Sequence[str] = ()) -> None:
        self.msg_id = msg_id
        self.name = KNOWN_UNSUPPORTED.get(msg_id, "")
        self.fields = list(fields)
        label = f" ({self.name})" if self.name else ""
        super().__init__(f"unsupported client message id {msg_id}{label}: {self.fields[:12]!r}")


# Client requests ib_async can send that this codec deliberately does not parse.
KNOWN_UNSUPPORTED: dict[int, str] = {
    10: "reqMktDepth", 11: "cancelMktDepth", 12: "reqNewsBulletins", 13: "cancelNewsBulletins",
    14: "setServerLogLevel", 18: "requestFA", 19: "replaceFA", 21: "exerciseOptions",
    22: "reqScannerSubscription", 23: "cancelScannerSubscription", 24: "reqScannerParameters",
    50: "reqRealTimeBars", 51: "cancelRealTimeBars", 52: "reqFundamentalData", 53: "cancelFundamentalData",
    54: "calculateImpliedVolatility", 55: "calculateOptionPrice", 56: "cancelCalculateImpliedVolatility",
    57: "cancelCalculateOptionPrice", 65: "verifyRequest", 66: "verifyMessage", 67: "queryDisplayGroups",
    68: "subscribeToGroupEvents", 69: "updateDisplayGroup", 70: "unsubscribeFromGroupEvents",
    72: "verifyAndAuthRequest", 73: "verifyAndAuthMessage", 78: "reqSecDefOptParams",
    79: "reqSoftDollarTiers", 80: "reqFamilyCodes", 81: "reqMatchingSymbols", 82: "reqMktDepthExchanges",
    83: "reqSmartComponents", 84: "reqNewsArticle", 85: "reqNewsProviders", 86: "reqHistoricalNews",
    87: "reqHeadTimeStamp", 88: "reqHistogramData", 89: "cancelHistogramData", 90: "cancelHeadTimeStamp",
    91: "reqMarketRule", 92: "reqPnL", 93: "cancelPnL", 94: "reqPnLSingle", 95: "cancelPnLSingle",
    96: "reqHistoricalTicks", 97: "reqTickByTickData", 98: "cancelTickByTickData", 100: "reqWshMetaData",
    101: "cancelWshMetaData", 102: "reqWshEventData", 103: "cancelWshEventData", 104: "reqUserInfo",
}


@dataclass(frozen=True, slots=True)
class StartApi:
    """``71,2,clientId,optionalCapabilities`` — first message after the handshake."""

    client_id: int
    optional_capabilities: str


@dataclass(frozen=True, slots=True)
class ReqMktData:
    """``1,11,reqId,contract,[BAG legs],dnc,genericTicks,snapshot,regSnapshot,options``."""

    req_id: int
    contract: RequestContract
    combo_legs: list[ComboLegRequest]
    delta_neutral_contract: DeltaNeutralContractRequest | None
    generic_tick_list: str
    snapshot: bool
    regulatory_snapshot: bool
    mkt_data_options: str


@dataclass(frozen=True, slots=True)
class CancelMktData:
    req_id: int


@dataclass(frozen=True, slots=True)
class ReqContractDetails:
    """``9,8,reqId,contract,includeExpired,secIdType,secId,issuerId``."""

    req_id: int
    contract: RequestContract
    include_expired: bool
    sec_id_type: str
    sec_id: str
    issuer_id: str


@dataclass(frozen=True, slots=True)
class ReqHistoricalData:
    """``20,reqId,contract,includeExpired,end,barSize,duration,useRTH,whatToShow,formatDate,…``.

    ``end_date_time`` is ``""`` (now) or like ``"20250102 21:00:00 UTC"`` (ib_async converts
    datetimes to UTC). ``format_date`` 1 = text dates, 2 = epoch seconds.
    """

    req_id: int
    contract: RequestContract
    include_expired: bool
    end_date_time: str
    bar_size: str
    duration: str
    use_rth: bool
    what_to_show: str
    format_date: int
    combo_legs: list[ComboLegRequest]
    keep_up_to_date: bool
    chart_options: str


@dataclass(frozen=True, slots=True)
class CancelHistoricalData:
    req_id: int


@dataclass(frozen=True, slots=True)
class CancelOrder:
    """``4,1,orderId,manualCancelOrderTime``."""

    order_id: int
    manual_cancel_order_time: str


@dataclass(frozen=True, slots=True)
class ReqOpenOrders:
    """``5,1`` — open orders of this client; answer openOrder…, openOrderEnd."""


@dataclass(frozen=True, slots=True)
class ReqAllOpenOrders:
    """``16,1`` — open orders of all clients."""


@dataclass(frozen=True, slots=True)
class ReqAutoOpenOrders:
    """``15,1,autoBind`` — sent by ib_async on connect when clientId is 0."""

    auto_bind: bool


@dataclass(frozen=True, slots=True)
class ReqPositions:
    """``61,1`` — answer position…, positionEnd."""


@dataclass(frozen=True, slots=True)
class CancelPositions:
    """``64,1``."""


@dataclass(frozen=True, slots=True)
class ReqPositionsMulti:
    req_id: int
    account: str
    model_code: str


@dataclass(frozen=True, slots=True)
class CancelPositionsMulti:
    req_id: int


@dataclass(frozen=True, slots=True)
class ReqAccountUpdates:
    """``6,2,subscribe,account`` — answer updateAccountValue/updatePortfolio…, accountDownloadEnd."""

    subscribe: bool
    account: str


@dataclass(frozen=True, slots=True)
class ReqAccountUpdatesMulti:
    """``76,1,reqId,account,modelCode,ledgerAndNLV`` — answer accountUpdateMulti…, …End."""

    req_id: int
    account: str
    model_code: str
    ledger_and_nlv: bool


@dataclass(frozen=True, slots=True)
class CancelAccountUpdatesMulti:
    req_id: int


@dataclass(frozen=True, slots=True)
class ExecutionFilterRequest:
    """ib_async's ExecutionFilter as sent (client_id 0 and empty strings mean "any")."""

    client_id: int
    account: str
    time: str
    symbol: str
    sec_type: str
    exchange: str
    side: str


@dataclass(frozen=True, slots=True)
class ReqExecutions:
    """``7,3,reqId,<filter>`` — answer execDetails(reqId,…)/commissionReport…, execDetailsEnd."""

    req_id: int
    filter: ExecutionFilterRequest


@dataclass(frozen=True, slots=True)
class ReqCompletedOrders:
    """``99,apiOnly`` (no version field) — answer completedOrder…, completedOrdersEnd."""

    api_only: bool


@dataclass(frozen=True, slots=True)
class ReqAccountSummary:
    """``62,1,reqId,group,tags`` — tags comma-separated, e.g. ``"NetLiquidation,BuyingPower"``."""

    req_id: int
    group_name: str
    tags: str


@dataclass(frozen=True, slots=True)
class CancelAccountSummary:
    req_id: int


@dataclass(frozen=True, slots=True)
class ReqCurrentTime:
    """``49,1`` — answer currentTime."""


@dataclass(frozen=True, slots=True)
class ReqIds:
    """``8,1,numIds`` — answer nextValidId."""

    num_ids: int


@dataclass(frozen=True, slots=True)
class ReqMarketDataType:
    """``59,1,type`` — 1 live, 2 frozen, 3 delayed, 4 delayed-frozen."""

    market_data_type: int


@dataclass(frozen=True, slots=True)
class ReqManagedAccts:
    """``17,1`` — answer managedAccounts."""


@dataclass(frozen=True, slots=True)
class ReqGlobalCancel:
    """``58,1`` — cancel all open orders."""


def _reader(fields: Sequence[str], name: str, version: int | None) -> FieldReader:
    """Start reading after the message id, checking the version field when the client sends one."""
    r = FieldReader(fields, name, start=1)
    if version is not None:
        got = r.read_int("version")
        if got != version:
            raise MalformedField(f"{name}: expected version field {version}, got {got}")
    return r


def _short_legs(r: FieldReader, contract: RequestContract) -> list[ComboLegRequest]:
    """BAG legs as reqMktData/reqHistoricalData send them: count, then 4 fields per leg."""
    if contract.sec_type != "BAG":
        return []
    count = r.read_int("comboLegs.count")
    return [
        ComboLegRequest(
            con_id=r.read_int(f"comboLeg[{i}].conId"),
            ratio=r.read_int(f"comboLeg[{i}].ratio"),
            action=r.read_str(f"comboLeg[{i}].action"),
            exchange=r.read_str(f"comboLeg[{i}].exchange"),
        )
        for i in range(count)
    ]


def _parse_req_mkt_data(fields: Sequence[str]) -> ReqMktData:
    r = _reader(fields, "reqMktData", 11)
    req_id = r.read_int("reqId")
    contract = read_contract(r)
    legs = _short_legs(r, contract)
    dnc = None
    if r.read_bool("deltaNeutralContract.present"):
        dnc = DeltaNeutralContractRequest(
            r.read_int("deltaNeutralContract.conId"),
            r.read_opt_float("deltaNeutralContract.delta"),
            r.read_opt_float("deltaNeutralContract.price"),
        )
    result = ReqMktData(
        req_id=req_id,
        contract=contract,
        combo_legs=legs,
        delta_neutral_contract=dnc,
        generic_tick_list=r.read_str("genericTickList"),
        snapshot=r.read_bool("snapshot"),
        regulatory_snapshot=r.read_bool("regulatorySnapshot"),
        mkt_data_options=r.read_str("mktDataOptions"),
    )
    r.expect_end()
    return result


def _parse_req_contract_details(fields: Sequence[str]) -> ReqContractDetails:
    r = _reader(fields, "reqContractDetails", 8)
    result = ReqContractDetails(
        req_id=r.read_int("reqId"),
        contract=read_contract(r),
        include_expired=r.read_bool("includeExpired"),
        sec_id_type=r.read_str("secIdType"),
        sec_id=r.read_str("secId"),
        issuer_id=r.read_str("issuerId"),  # >= 176
    )
    r.expect_end()
    return result


def _parse_req_historical_data(fields: Sequence[str]) -> ReqHistoricalData:
    r = _reader(fields, "reqHistoricalData", None)  # no version field
    req_id = r.read_int("reqId")
    contract = read_contract(r)
    include_expired = r.read_bool("includeExpired")
    end = r.read_str("endDateTime")
    bar_size = r.read_str("barSizeSetting")
    duration = r.read_str("durationStr")
    use_rth = r.read_bool("useRTH")
    what_to_show = r.read_str("whatToShow")
    format_date = r.read_int("formatDate")
    legs = _short_legs(r, contract)
    result = ReqHistoricalData(
        req_id=req_id,
        contract=contract,
        include_expired=include_expired,
        end_date_time=end,
        bar_size=bar_size,
        duration=duration,
        use_rth=use_rth,
        what_to_show=what_to_show,
        format_date=format_date,
        combo_legs=legs,
        keep_up_to_date=r.read_bool("keepUpToDate"),
        chart_options=r.read_str("chartOptions"),
    )
    r.expect_end()
    return result


def _parse_req_executions(fields: Sequence[str]) -> ReqExecutions:
    r = _reader(fields, "reqExecutions", 3)
    req_id = r.read_int("reqId")
    flt = ExecutionFilterRequest(
        client_id=r.read_opt_int("filter.clientId") or 0,
        account=r.read_str("filter.acctCode"),
        time=r.read_str("filter.time"),
        symbol=r.read_str("filter.symbol"),
        sec_type=r.read_str("filter.secType"),
        exchange=r.read_str("filter.exchange"),
        side=r.read_str("filter.side"),
    )
    r.expect_end()
    return ReqExecutions(req_id, flt)


def _simple(
    name: str, version: int | None, build: Callable[[FieldReader], Any]
) -> Callable[[Sequence[str]], Any]:
    """Parser for a short fixed-layout message: check version, build, insist on no leftovers."""

    def parse(fields: Sequence[str]) -> Any:
        r = _reader(fields, name, version)
        result = build(r)
        r.expect_end()
        return result

    return parse


_PARSERS: dict[int, Callable[[Sequence[str]], Any]] = {
    1: _parse_req_mkt_data,
    2: _simple("cancelMktData", 2, lambda r: CancelMktData(r.read_int("reqId"))),
    3: lambda fields: parse_place_order(list(fields)),
    4: _simple(
        "cancelOrder",
        1,
        lambda r: CancelOrder(r.read_int("orderId"), r.read_str("manualCancelOrderTime")),
    ),
    5: _simple("reqOpenOrders", 1, lambda r: ReqOpenOrders()),
    6: _simple(
        "reqAccountUpdates",
        2,
        lambda r: ReqAccountUpdates(r.read_bool("subscribe"), r.read_str("acctCode")),
    ),
    7: _parse_req_executions,
    8: _simple("reqIds", 1, lambda r: ReqIds(r.read_int("numIds"))),
    9: _parse_req_contract_details,
    15: _simple("reqAutoOpenOrders", 1, lambda r: ReqAutoOpenOrders(r.read_bool("bAutoBind"))),
    16: _simple("reqAllOpenOrders", 1, lambda r: ReqAllOpenOrders()),
    17: _simple("reqManagedAccts", 1, lambda r: ReqManagedAccts()),
    20: _parse_req_historical_data,
    25: _simple("cancelHistoricalData", 1, lambda r: CancelHistoricalData(r.read_int("reqId"))),
    49: _simple("reqCurrentTime", 1, lambda r: ReqCurrentTime()),
    58: _simple("reqGlobalCancel", 1, lambda r: ReqGlobalCancel()),
    59: _simple(
        "reqMarketDataType", 1, lambda r: ReqMarketDataType(r.read_int("marketDataType"))
    ),
    61: _simple("reqPositions", 1, lambda r: ReqPositions()),
    62: _simple(
        "reqAccountSummary",
        1,
        lambda r: ReqAccountSummary(r.read_int("reqId"), r.read_str("groupName"), r.read_str("tags")),
    ),
    63: _simple("cancelAccountSummary", 1, lambda r: CancelAccountSummary(r.read_int("reqId"))),
    64: _simple("cancelPositions", 1, lambda r: CancelPositions()),
    71: _simple(
        "startApi",
        2,
        lambda r: StartApi(r.read_int("clientId"), r.read_str("optionalCapabilities")),
    ),
    74: _simple(
        "reqPositionsMulti",
        1,
        lambda r: ReqPositionsMulti(r.read_int("reqId"), r.read_str("account"), r.read_str("modelCode")),
    ),
    75: _simple("cancelPositionsMulti", 1, lambda r: CancelPositionsMulti(r.read_int("reqId"))),
    76: _simple(
        "reqAccountUpdatesMulti",
        1,
        lambda r: ReqAccountUpdatesMulti(
            r.read_int("reqId"),
            r.read_str("account"),
            r.read_str("modelCode"),
            r.read_bool("ledgerAndNLV"),
        ),
    ),
    77: _simple(
        "cancelAccountUpdatesMulti", 1, lambda r: CancelAccountUpdatesMulti(r.read_int("reqId"))
    ),
    99: _simple("reqCompletedOrders", None, lambda r: ReqCompletedOrders(r.read_bool("apiOnly"))),
}

SUPPORTED_MESSAGE_IDS: frozenset[int] = frozenset(_PARSERS)
"""Client message ids :func:`parse_incoming` understands."""


def parse_incoming(fields: Sequence[str]) -> Any:
    """Parse one client message (its field list from :class:`~.wire.FrameDecoder`) into a dataclass.

    Raises :class:`UnknownMessage` for ids without a parser (``exc.msg_id``/``exc.name`` tell which),
    :class:`~.wire.MalformedField` when a known message does not have the expected shape, and
    :class:`~.wire.ProtocolError` for an empty message.
    """
    if not fields:
        raise ProtocolError("empty client message (no message id)")
    try:
        msg_id = int(fields[0])
    except ValueError:
        raise MalformedField(f"client message id is not an integer: {fields[0]!r}") from None
    parser = _PARSERS.get(msg_id)
    if parser is None:
        raise UnknownMessage(msg_id, fields)
    return parser(fields)
