"""Server → client order messages (openOrder, orderStatus, executions, commissions, completedOrder) at version 178.

Why a separate module: openOrder alone is ~130 positional fields with conditional blocks; keeping it
next to its siblings (orderStatus, execDetails, commissionReport) makes the cross-message invariants
visible: every message about one order must carry the same clientId and permId, or ib_async will not
attach statuses and fills to the Trade it created ("No order found").

Field order mirrors ib_async 2.1.0 ``Decoder.openOrder`` line by line (version 178: no
faProfile, duration/postToAts/autoCancelParent and the five ≥170 fields present).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .outgoing import ContractSpec, Number, OutMsg, format_bar_date
from .wire import UNSET_DOUBLE, Field


@dataclass(frozen=True, slots=True)
class OrderSpec:
    """An order as the gateway reports it back. ``None`` prices mean "not set" (sent empty).

    ``client_id`` must be the clientId of the connection that placed it, ``perm_id`` a stable
    non-zero id reused in orderStatus and execDetails.
    """

    order_id: int
    client_id: int
    perm_id: int
    action: str
    total_qty: Number
    order_type: str
    lmt_price: float | None = None
    aux_price: float | None = None
    tif: str = "DAY"
    account: str = ""
    order_ref: str = ""
    what_if: bool = False
    parent_id: int = 0
    oca_group: str = ""
    oca_type: int = 0
    outside_rth: bool = False
    hidden: bool = False
    open_close: str = ""
    origin: int = 0
    good_after_time: str = ""
    good_till_date: str = ""
    trail_stop_price: float | None = None
    trailing_percent: float | None = None
    display_size: int = 0
    all_or_none: bool = False
    min_qty: int | None = None
    model_code: str = ""
    trigger_method: int = 0
    transmit: bool = True  # not part of openOrder; kept so callers can store what the client sent


@dataclass(frozen=True, slots=True)
class OrderStateSpec:
    """OrderState part of openOrder. ``None`` numbers are sent as IB's unset double.

    For a what-if answer ib_async resolves ``whatIfOrderAsync`` only when ``init_margin_change``
    is a real number (not ``None``/unset); an openOrder with whatIf=1 and unset initMarginChange is
    ignored (real IB sometimes sends such a preliminary one). ``warning_text`` is shown to the user.
    """

    status: str = "Submitted"
    init_margin_before: float | None = None
    maint_margin_before: float | None = None
    equity_with_loan_before: float | None = None
    init_margin_change: float | None = None
    maint_margin_change: float | None = None
    equity_with_loan_change: float | None = None
    init_margin_after: float | None = None
    maint_margin_after: float | None = None
    equity_with_loan_after: float | None = None
    commission: float | None = None
    min_commission: float | None = None
    max_commission: float | None = None
    commission_currency: str = ""
    warning_text: str = ""


@dataclass(frozen=True, slots=True)
class ExecutionSpec:
    """One fill. ``side`` is ``BOT``/``SLD``; ``time`` an aware datetime (or IB-format text)."""

    exec_id: str
    order_id: int
    client_id: int
    perm_id: int
    time: dt.datetime | str
    account: str
    exchange: str
    side: str
    shares: Number
    price: float
    cum_qty: Number
    avg_price: float
    order_ref: str = ""
    liquidation: int = 0
    ev_rule: str = ""
    ev_multiplier: float | None = None
    model_code: str = ""
    last_liquidity: int = 1
    pending_price_revision: bool = False


def _unset(value: float | None) -> float:
    """IB spells "unknown" in OrderState with the max double, not an empty field."""
    return UNSET_DOUBLE if value is None else value


def _order_head(o: OrderSpec) -> list[Field]:
    """The run both openOrder and completedOrder start an order with, after the contract (ib_async's
    decoder reads the same eleven fields in the same order in both)."""
    return [o.action, o.total_qty, o.order_type, o.lmt_price, o.aux_price, o.tif, o.oca_group, o.account,
            o.open_close, o.origin, o.order_ref]


def open_order(order: OrderSpec, contract: ContractSpec, state: OrderStateSpec) -> list[Field]:
    """``5,orderId,…`` — a plain open order or, with ``order.what_if``, a what-if answer.

    No version field. deltaNeutralOrderType is always empty (anything else makes the client read 8
    more fields), no combo legs, no scale/hedge/algo/conditions blocks. PEG BENCH orders get their
    five extra fields (all zero/empty) so the count stays right.
    """
    o = order
    fields: list[Field] = [
        OutMsg.OPEN_ORDER,
        o.order_id,
        *contract.wire11(),
        *_order_head(o),
        o.client_id,
        o.perm_id,
        o.outside_rth,
        o.hidden,
        0.0,  # discretionaryAmt
        o.good_after_time,
        "",  # sharesAllocation (deprecated, skipped by the client)
        "",  # faGroup
        "",  # faMethod
        "",  # faPercentage
        # (no faProfile at >= 177)
        o.model_code,
        o.good_till_date,
        "",  # rule80A
        None,  # percentOffset
        "",  # settlingFirm
        0,  # shortSaleSlot
        "",  # designatedLocation
        -1,  # exemptCode
        0,  # auctionStrategy
        None,  # startingPrice
        None,  # stockRefPrice
        None,  # delta
        None,  # stockRangeLower
        None,  # stockRangeUpper
        o.display_size,
        False,  # blockOrder
        False,  # sweepToFill
        o.all_or_none,
        o.min_qty,
        o.oca_type,
        False,  # eTradeOnly
        False,  # firmQuoteOnly
        None,  # nbboPriceCap
        o.parent_id,
        o.trigger_method,
        None,  # volatility
        None,  # volatilityType
        "",  # deltaNeutralOrderType: MUST be empty (else 8 more fields are read)
        None,  # deltaNeutralAuxPrice
        False,  # continuousUpdate
        None,  # referencePriceType
        o.trail_stop_price,
        o.trailing_percent,
        None,  # basisPoints
        None,  # basisPointsType
        "",  # comboLegsDescrip
        0,  # number of combo legs
        0,  # number of order combo legs
        0,  # number of smartComboRoutingParams
        None,  # scaleInitLevelSize
        None,  # scaleSubsLevelSize
        None,  # scalePriceIncrement (empty => no scale block)
        "",  # hedgeType (empty => no hedgeParam)
        False,  # optOutSmartRouting
        "",  # clearingAccount
        "",  # clearingIntent
        False,  # notHeld
        False,  # deltaNeutralContract present
        "",  # algoStrategy (empty => no algo params)
        False,  # solicited
        o.what_if,
        state.status,
        _unset(state.init_margin_before),
        _unset(state.maint_margin_before),
        _unset(state.equity_with_loan_before),
        _unset(state.init_margin_change),
        _unset(state.maint_margin_change),
        _unset(state.equity_with_loan_change),
        _unset(state.init_margin_after),
        _unset(state.maint_margin_after),
        _unset(state.equity_with_loan_after),
        _unset(state.commission),
        _unset(state.min_commission),
        _unset(state.max_commission),
        state.commission_currency,
        state.warning_text,
        False,  # randomizeSize
        False,  # randomizePrice
    ]
    if o.order_type in {"PEG BENCH", "PEGBENCH"}:
        # referenceContractId, isPeggedChangeAmountDecrease, peggedChangeAmount,
        # referenceChangeAmount, referenceExchangeId
        fields += [0, False, 0.0, 0.0, ""]
    fields += [
        0,  # number of conditions (0 => no conditionsIgnoreRth/CancelOrder)
        "",  # adjustedOrderType
        None,  # triggerPrice
        o.trail_stop_price,
        None,  # lmtPriceOffset
        None,  # adjustedStopPrice
        None,  # adjustedStopLimitPrice
        None,  # adjustedTrailingAmount
        0,  # adjustableTrailingUnit
        "",  # softDollarTier.name
        "",  # softDollarTier.val
        "",  # softDollarTier.displayName
        None,  # cashQty
        False,  # dontUseAutoPriceForHedge
        False,  # isOmsContainer
        False,  # discretionaryUpToLimitPrice
        False,  # usePriceMgmtAlgo
        None,  # duration (>= 159)
        None,  # postToAts (>= 160)
        False,  # autoCancelParent (>= 162)
        None,  # minTradeQty (>= 170)
        None,  # minCompeteSize
        None,  # competeAgainstBestOffset
        None,  # midOffsetAtWhole
        None,  # midOffsetAtHalf
    ]
    return fields


def open_order_end() -> list[Field]:
    """``53,1`` — ends reqOpenOrders/reqAllOpenOrders; ib_async's connect sync waits for it."""
    return [OutMsg.OPEN_ORDER_END, 1]


def order_status(
    order_id: int,
    status: str,
    filled: Number,
    remaining: Number,
    avg_fill_price: float,
    perm_id: int,
    parent_id: int,
    last_fill_price: float,
    client_id: int,
    why_held: str = "",
    mkt_cap_price: float = 0.0,
) -> list[Field]:
    """``3,orderId,status,filled,remaining,avgFillPrice,permId,parentId,lastFillPrice,clientId,
    whyHeld,mktCapPrice`` — no version field at 178 (12 fields).

    ib_async finds the trade by (clientId, orderId): a wrong clientId logs "No order found".
    Statuses: PreSubmitted, Submitted, Filled, Cancelled, Inactive, PendingCancel, ApiCancelled.
    """
    return [
        OutMsg.ORDER_STATUS,
        order_id,
        status,
        filled,
        remaining,
        avg_fill_price,
        perm_id,
        parent_id,
        last_fill_price,
        client_id,
        why_held,
        mkt_cap_price,
    ]


def exec_details(req_id: int, contract: ContractSpec, execution: ExecutionSpec) -> list[Field]:
    """``11,reqId,orderId,<11 contract fields>,execId,time,…,pendingPriceRevision`` — 32 fields.

    ``req_id`` is -1 for live fills, or the reqExecutions reqId when answering that request.
    No version field at 178. The contract's exchange field carries the execution exchange.
    """
    e = execution
    time_text = e.time if isinstance(e.time, str) else format_bar_date(e.time)
    return [
        OutMsg.EXECUTION_DATA,
        req_id,
        e.order_id,
        *contract.wire11(exchange=e.exchange),
        e.exec_id,
        time_text,
        e.account,
        e.exchange,
        e.side,
        e.shares,
        e.price,
        e.perm_id,
        e.client_id,
        e.liquidation,
        e.cum_qty,
        e.avg_price,
        e.order_ref,
        e.ev_rule,
        e.ev_multiplier,
        e.model_code,
        e.last_liquidity,
        e.pending_price_revision,
    ]


def exec_details_end(req_id: int) -> list[Field]:
    """``55,1,reqId`` — ends reqExecutions (ib_async's connect sync waits for it)."""
    return [OutMsg.EXECUTION_DATA_END, 1, req_id]


def commission_report(
    exec_id: str,
    commission: float,
    currency: str,
    realized_pnl: float | None = None,
    yield_: float | None = None,
    yield_redemption_date: int | None = None,
) -> list[Field]:
    """``59,1,execId,commission,currency,realizedPNL,yield,yieldRedemptionDate`` — exactly 8.

    Real IB sends the unset double as realizedPNL on opening fills (ib_async maps it to 0.0),
    so ``None`` is sent that way too.
    """
    return [
        OutMsg.COMMISSION_REPORT,
        1,
        exec_id,
        commission,
        currency,
        _unset(realized_pnl),
        _unset(yield_),
        yield_redemption_date,
    ]


def completed_order(
    order: OrderSpec, contract: ContractSpec, status: str, filled: Number, completed_time: str, completed_status: str
) -> list[Field]:
    """``101,<11 contract fields>,action,…`` — one order that ended today, answering reqCompletedOrders.

    Not openOrder's layout (ib_async 2.1.0 ``Decoder.completedOrder``): no orderId and no clientId at all
    (ib_async leaves both 0: a completed order is known by permId and orderRef only), no sharesAllocation,
    auctionStrategy, blockOrder, eTradeOnly, firmQuoteOnly, nbboPriceCap, parentId, basisPoints, optOutSmartRouting,
    whatIf, margins or adjusted-order fields; instead filledQuantity, parentPermId, completedTime/Status.
    """
    o = order
    fields: list[Field] = [
        OutMsg.COMPLETED_ORDER,
        *contract.wire11(),
        *_order_head(o),
        o.perm_id,
        o.outside_rth,
        o.hidden,
        0.0,  # discretionaryAmt
        o.good_after_time,
        "",  # faGroup
        "",  # faMethod
        "",  # faPercentage
        # (no faProfile at >= 177)
        o.model_code,
        o.good_till_date,
        "",  # rule80A
        None,  # percentOffset
        "",  # settlingFirm
        0,  # shortSaleSlot
        "",  # designatedLocation
        -1,  # exemptCode
        None,  # startingPrice
        None,  # stockRefPrice
        None,  # delta
        None,  # stockRangeLower
        None,  # stockRangeUpper
        o.display_size,
        False,  # sweepToFill
        o.all_or_none,
        o.min_qty,
        o.oca_type,
        o.trigger_method,
        None,  # volatility
        None,  # volatilityType
        "",  # deltaNeutralOrderType: MUST be empty (else 4 more fields are read)
        None,  # deltaNeutralAuxPrice
        False,  # continuousUpdate
        None,  # referencePriceType
        o.trail_stop_price,
        o.trailing_percent,
        "",  # comboLegsDescrip
        0,  # number of combo legs
        0,  # number of order combo legs
        0,  # number of smartComboRoutingParams
        None,  # scaleInitLevelSize
        None,  # scaleSubsLevelSize
        None,  # scalePriceIncrement (empty => no scale block)
        "",  # hedgeType (empty => no hedgeParam)
        "",  # clearingAccount
        "",  # clearingIntent
        False,  # notHeld
        False,  # deltaNeutralContract present
        "",  # algoStrategy (empty => no algo params)
        False,  # solicited
        status,  # orderState.status: Filled, Cancelled, Inactive
        False,  # randomizeSize
        False,  # randomizePrice
    ]
    if o.order_type in {"PEG BENCH", "PEGBENCH"}:
        fields += [0, False, 0.0, 0.0, ""]  # the five PEG BENCH fields, as in open_order
    fields += [
        0,  # number of conditions (0 => no conditionsIgnoreRth/CancelOrder)
        o.trail_stop_price,
        None,  # lmtPriceOffset
        None,  # cashQty
        False,  # dontUseAutoPriceForHedge
        False,  # isOmsContainer
        "",  # autoCancelDate
        filled,  # filledQuantity
        0,  # refFuturesConId
        False,  # autoCancelParent
        "",  # shareholder
        False,  # imbalanceOnly
        False,  # routeMarketableToBbo
        None,  # parentPermId
        completed_time,
        completed_status,
        None,  # minTradeQty (>= 170)
        None,  # minCompeteSize
        None,  # competeAgainstBestOffset
        None,  # midOffsetAtWhole
        None,  # midOffsetAtHalf
    ]
    return fields


def completed_orders_end() -> list[Field]:
    """``102`` alone — ends reqCompletedOrders (ib_async's connect sync waits for it)."""
    return [OutMsg.COMPLETED_ORDERS_END]
