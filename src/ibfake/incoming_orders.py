"""Parser for the client's placeOrder message (and the contract block shared by requests).

Why a sequential reader and not fixed indices: ``Client.placeOrder`` in ib_async 2.1.0 writes
optional blocks (combo legs for BAG, delta-neutral, scale, hedge, delta-neutral contract, algo
params, PEG BENCH, conditions, PEG BEST/MID) whose presence depends on earlier values, and whatIf
comes *after* most of them. :func:`parse_place_order` mirrors that writer statement by statement
(server version 178: no faProfile; duration, postToAts, autoCancelParent, advancedErrorOverride and
manualOrderTime present) and insists that every field is consumed, so any drift is loud.

Every field read is also available by its ib_async attribute name in ``PlaceOrder.raw``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .wire import UNSET_DOUBLE, FieldReader, MalformedField


@dataclass(frozen=True, slots=True)
class RequestContract:
    """The 12-field contract block the client sends in requests (as given, possibly partial)."""

    con_id: int
    symbol: str
    sec_type: str
    last_trade_date: str
    strike: float
    right: str
    multiplier: str
    exchange: str
    primary_exchange: str
    currency: str
    local_symbol: str
    trading_class: str


def read_contract(r: FieldReader) -> RequestContract:
    """Read the contract block ib_async writes as one NUL-joined "field" (12 wire fields)."""
    return RequestContract(
        con_id=r.read_int("contract.conId"),
        symbol=r.read_str("contract.symbol"),
        sec_type=r.read_str("contract.secType"),
        last_trade_date=r.read_str("contract.lastTradeDateOrContractMonth"),
        strike=r.read_opt_float("contract.strike") or 0.0,
        right=r.read_str("contract.right"),
        multiplier=r.read_str("contract.multiplier"),
        exchange=r.read_str("contract.exchange"),
        primary_exchange=r.read_str("contract.primaryExchange"),
        currency=r.read_str("contract.currency"),
        local_symbol=r.read_str("contract.localSymbol"),
        trading_class=r.read_str("contract.tradingClass"),
    )


@dataclass(frozen=True, slots=True)
class ComboLegRequest:
    """One leg of a BAG contract (placeOrder sends 8 fields per leg, reqMktData/history 4)."""

    con_id: int
    ratio: int
    action: str
    exchange: str
    open_close: str = ""
    short_sale_slot: str = ""
    designated_location: str = ""
    exempt_code: str = ""


@dataclass(frozen=True, slots=True)
class DeltaNeutralContractRequest:
    """The optional delta-neutral underlying block (conId, delta, price)."""

    con_id: int
    delta: float | None
    price: float | None


@dataclass(frozen=True, slots=True)
class OrderConditionRequest:
    """One order condition: its type and its remaining fields by ib_async attribute name."""

    cond_type: int
    values: dict[str, str]


# Field names after condType for each condition class in ib_async's order.py.
CONDITION_FIELDS: dict[int, tuple[str, ...]] = {
    1: ("conjunction", "isMore", "price", "conId", "exch", "triggerMethod"),  # PriceCondition
    3: ("conjunction", "isMore", "time"),  # TimeCondition
    4: ("conjunction", "isMore", "percent"),  # MarginCondition
    5: ("conjunction", "secType", "exch", "symbol"),  # ExecutionCondition
    6: ("conjunction", "isMore", "volume", "conId", "exch"),  # VolumeCondition
    7: ("conjunction", "isMore", "changePercent", "conId", "exch"),  # PercentChangeCondition
}


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    """A placeOrder request (new order, modification, or what-if when ``what_if``)."""

    order_id: int
    contract: RequestContract
    sec_id_type: str
    sec_id: str
    action: str
    total_qty: float
    order_type: str
    lmt_price: float | None
    aux_price: float | None
    tif: str
    oca_group: str
    account: str
    open_close: str
    origin: int | None
    order_ref: str
    transmit: bool
    parent_id: int
    outside_rth: bool
    hidden: bool
    good_after_time: str
    good_till_date: str
    oca_type: int | None
    all_or_none: bool
    min_qty: int | None
    trail_stop_price: float | None
    trailing_percent: float | None
    what_if: bool
    algo_strategy: str
    algo_params: list[tuple[str, str]]
    conditions: list[OrderConditionRequest]
    conditions_ignore_rth: bool
    conditions_cancel_order: bool
    combo_legs: list[ComboLegRequest]
    order_combo_leg_prices: list[float | None]
    smart_combo_routing_params: list[tuple[str, str]]
    delta_neutral_contract: DeltaNeutralContractRequest | None
    adjusted_order_type: str
    trigger_price: float | None
    cash_qty: float | None
    manual_order_time: str
    raw: dict[str, str] = field(default_factory=dict, repr=False)


def _read_tag_values(r: FieldReader, count: int, prefix: str) -> list[tuple[str, str]]:
    return [(r.read_str(f"{prefix}[{i}].tag"), r.read_str(f"{prefix}[{i}].value")) for i in range(count)]


def _read_count(r: FieldReader, name: str) -> int:
    count = r.read_int(name)
    if not 0 <= count <= 1000:
        raise MalformedField(f"{r.message} field {name!r}: implausible count {count}")
    return count


def parse_place_order(fields: list[str]) -> PlaceOrder:
    """Parse a placeOrder message (``fields[0] == "3"``) exactly as ib_async 2.1.0 writes it at 178."""
    r = FieldReader(fields, "placeOrder", start=1)  # no version field
    order_id = r.read_int("orderId")
    contract = read_contract(r)
    sec_id_type = r.read_str("contract.secIdType")
    sec_id = r.read_str("contract.secId")
    action = r.read_str("action")
    total_qty = r.read_float("totalQuantity")
    order_type = r.read_str("orderType")
    lmt_price = r.read_opt_float("lmtPrice")
    aux_price = r.read_opt_float("auxPrice")
    tif = r.read_str("tif")
    oca_group = r.read_str("ocaGroup")
    account = r.read_str("account")
    open_close = r.read_str("openClose")
    origin = r.read_opt_int("origin")
    order_ref = r.read_str("orderRef")
    transmit = r.read_bool("transmit")
    parent_id = r.read_opt_int("parentId") or 0
    r.read_bool("blockOrder")
    r.read_bool("sweepToFill")
    r.read_opt_int("displaySize")
    r.read_opt_int("triggerMethod")
    outside_rth = r.read_bool("outsideRth")
    hidden = r.read_bool("hidden")

    combo_legs: list[ComboLegRequest] = []
    leg_prices: list[float | None] = []
    routing: list[tuple[str, str]] = []
    if contract.sec_type == "BAG":
        for i in range(_read_count(r, "comboLegs.count")):
            p = f"comboLeg[{i}]."
            combo_legs.append(
                ComboLegRequest(
                    con_id=r.read_int(p + "conId"),
                    ratio=r.read_int(p + "ratio"),
                    action=r.read_str(p + "action"),
                    exchange=r.read_str(p + "exchange"),
                    open_close=r.read_str(p + "openClose"),
                    short_sale_slot=r.read_str(p + "shortSaleSlot"),
                    designated_location=r.read_str(p + "designatedLocation"),
                    exempt_code=r.read_str(p + "exemptCode"),
                )
            )
        n = _read_count(r, "orderComboLegs.count")
        leg_prices = [r.read_opt_float(f"orderComboLeg[{i}].price") for i in range(n)]
        routing = _read_tag_values(r, _read_count(r, "smartComboRoutingParams.count"), "smartComboRouting")

    r.read_str("sharesAllocation")  # deprecated, always empty
    r.read_opt_float("discretionaryAmt")
    good_after_time = r.read_str("goodAfterTime")
    good_till_date = r.read_str("goodTillDate")
    for name in ("faGroup", "faMethod", "faPercentage"):
        r.read_str(name)
    # no faProfile at server version >= 177
    for name in ("modelCode", "shortSaleSlot", "designatedLocation", "exemptCode"):
        r.read_str(name)
    oca_type = r.read_opt_int("ocaType")
    r.read_str("rule80A")
    r.read_str("settlingFirm")
    all_or_none = r.read_bool("allOrNone")
    min_qty = r.read_opt_int("minQty")
    r.read_opt_float("percentOffset")
    r.read_bool("eTradeOnly")
    r.read_bool("firmQuoteOnly")
    r.read_opt_float("nbboPriceCap")
    r.read_opt_int("auctionStrategy")
    for name in ("startingPrice", "stockRefPrice", "delta", "stockRangeLower", "stockRangeUpper"):
        r.read_opt_float(name)
    r.read_bool("overridePercentageConstraints")
    r.read_opt_float("volatility")
    r.read_opt_int("volatilityType")
    delta_neutral_order_type = r.read_str("deltaNeutralOrderType")
    r.read_opt_float("deltaNeutralAuxPrice")
    if delta_neutral_order_type:
        for name in (
            "deltaNeutralConId",
            "deltaNeutralSettlingFirm",
            "deltaNeutralClearingAccount",
            "deltaNeutralClearingIntent",
            "deltaNeutralOpenClose",
            "deltaNeutralShortSale",
            "deltaNeutralShortSaleSlot",
            "deltaNeutralDesignatedLocation",
        ):
            r.read_str(name)

    r.read_bool("continuousUpdate")
    r.read_opt_int("referencePriceType")
    trail_stop_price = r.read_opt_float("trailStopPrice")
    trailing_percent = r.read_opt_float("trailingPercent")
    r.read_opt_int("scaleInitLevelSize")
    r.read_opt_int("scaleSubsLevelSize")
    scale_price_increment = r.read_opt_float("scalePriceIncrement")
    if scale_price_increment is not None and 0 < scale_price_increment < UNSET_DOUBLE:
        for name in (
            "scalePriceAdjustValue",
            "scalePriceAdjustInterval",
            "scaleProfitOffset",
            "scaleAutoReset",
            "scaleInitPosition",
            "scaleInitFillQty",
            "scaleRandomPercent",
        ):
            r.read_str(name)
    for name in ("scaleTable", "activeStartTime", "activeStopTime"):
        r.read_str(name)
    if r.read_str("hedgeType"):
        r.read_str("hedgeParam")
    r.read_bool("optOutSmartRouting")
    r.read_str("clearingAccount")
    r.read_str("clearingIntent")
    r.read_bool("notHeld")
    dnc: DeltaNeutralContractRequest | None = None
    if r.read_bool("deltaNeutralContract.present"):
        dnc = DeltaNeutralContractRequest(
            con_id=r.read_int("deltaNeutralContract.conId"),
            delta=r.read_opt_float("deltaNeutralContract.delta"),
            price=r.read_opt_float("deltaNeutralContract.price"),
        )
    algo_strategy = r.read_str("algoStrategy")
    algo_params: list[tuple[str, str]] = []
    if algo_strategy:
        algo_params = _read_tag_values(r, _read_count(r, "algoParams.count"), "algoParam")
    r.read_str("algoId")
    what_if = r.read_bool("whatIf")
    r.read_str("orderMiscOptions")
    r.read_bool("solicited")
    r.read_bool("randomizeSize")
    r.read_bool("randomizePrice")
    if order_type in {"PEG BENCH", "PEGBENCH"}:
        for name in (
            "referenceContractId",
            "isPeggedChangeAmountDecrease",
            "peggedChangeAmount",
            "referenceChangeAmount",
            "referenceExchangeId",
        ):
            r.read_str(name)

    conditions: list[OrderConditionRequest] = []
    ignore_rth = cancel_order = False
    num_conditions = _read_count(r, "conditions.count")
    if num_conditions:
        for i in range(num_conditions):
            cond_type = r.read_int(f"condition[{i}].condType")
            names = CONDITION_FIELDS.get(cond_type)
            if names is None:
                raise MalformedField(f"placeOrder condition[{i}]: unknown condType {cond_type}")
            values = {n: r.read_str(f"condition[{i}].{n}") for n in names}
            conditions.append(OrderConditionRequest(cond_type, values))
        ignore_rth = r.read_bool("conditionsIgnoreRth")
        cancel_order = r.read_bool("conditionsCancelOrder")

    adjusted_order_type = r.read_str("adjustedOrderType")
    trigger_price = r.read_opt_float("triggerPrice")
    for name in (
        "lmtPriceOffset",
        "adjustedStopPrice",
        "adjustedStopLimitPrice",
        "adjustedTrailingAmount",
    ):
        r.read_opt_float(name)
    r.read_opt_int("adjustableTrailingUnit")
    for name in ("extOperator", "softDollarTier.name", "softDollarTier.val"):
        r.read_str(name)
    cash_qty = r.read_opt_float("cashQty")
    for name in (
        "mifid2DecisionMaker",
        "mifid2DecisionAlgo",
        "mifid2ExecutionTrader",
        "mifid2ExecutionAlgo",
    ):
        r.read_str(name)
    r.read_bool("dontUseAutoPriceForHedge")
    r.read_bool("isOmsContainer")
    r.read_bool("discretionaryUpToLimitPrice")
    r.read_bool("usePriceMgmtAlgo")
    r.read_opt_int("duration")  # >= 158
    r.read_opt_int("postToAts")  # >= 160
    r.read_bool("autoCancelParent")  # >= 162
    r.read_str("advancedErrorOverride")  # >= 166
    manual_order_time = r.read_str("manualOrderTime")  # >= 169
    # >= 170
    if contract.exchange == "IBKRATS":
        r.read_opt_int("minTradeQty")
    if order_type in {"PEG BEST", "PEGBEST"}:
        r.read_opt_int("minCompeteSize")
        compete = r.read_opt_float("competeAgainstBestOffset")
        if compete == float("inf"):
            r.read_opt_float("midOffsetAtWhole")
            r.read_opt_float("midOffsetAtHalf")
    elif order_type in {"PEG MID", "PEGMID"}:
        r.read_opt_float("midOffsetAtWhole")
        r.read_opt_float("midOffsetAtHalf")
    r.expect_end()

    return PlaceOrder(
        order_id=order_id,
        contract=contract,
        sec_id_type=sec_id_type,
        sec_id=sec_id,
        action=action,
        total_qty=total_qty,
        order_type=order_type,
        lmt_price=lmt_price,
        aux_price=aux_price,
        tif=tif,
        oca_group=oca_group,
        account=account,
        open_close=open_close,
        origin=origin,
        order_ref=order_ref,
        transmit=transmit,
        parent_id=parent_id,
        outside_rth=outside_rth,
        hidden=hidden,
        good_after_time=good_after_time,
        good_till_date=good_till_date,
        oca_type=oca_type,
        all_or_none=all_or_none,
        min_qty=min_qty,
        trail_stop_price=trail_stop_price,
        trailing_percent=trailing_percent,
        what_if=what_if,
        algo_strategy=algo_strategy,
        algo_params=algo_params,
        conditions=conditions,
        conditions_ignore_rth=ignore_rth,
        conditions_cancel_order=cancel_order,
        combo_legs=combo_legs,
        order_combo_leg_prices=leg_prices,
        smart_combo_routing_params=routing,
        delta_neutral_contract=dnc,
        adjusted_order_type=adjusted_order_type,
        trigger_price=trigger_price,
        cash_qty=cash_qty,
        manual_order_time=manual_order_time,
        raw=dict(r.raw),
    )
