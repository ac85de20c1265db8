"""The gateway's order book: IB order ids on one side, the simulated exchange's orders on the other.

Why a separate layer between the socket and the venue: IB identifies an order by (clientId, orderId)
chosen by the *client*, reports it with a permId, lets the client modify it by re-sending placeOrder
with the same id, and keeps it alive when the client disconnects. The venue knows none of that: it has
its own order ids and only accepts, cancels and fills. This module keeps the mapping and turns venue
events into the exact TWS message sequence ib_async needs to attach statuses and fills to its Trade.

Modification is cancel-and-replace inside the venue: the working venue order is cancelled and, once
the venue confirms, a new one for the new quantity minus what was already filled is submitted under
the same IB order id. Fills that race the cancel still count toward the IB order. The client sees a
single order throughout (openOrder with the new values, status Submitted).

Accounts: an order for an account the gateway does not manage - or with no account while it manages several -
fails IB's request validation: error 321 ("Error validating request.-'bS' : cause - Invalid account code", the
text IB sends for an account code it does not know) and nothing else; the order never exists (no openOrder,
no permId).  ib_async 2.1.0 counts 321 among its warnings and leaves the trade at ``ValidationError``.

Prices must be on the contract's tick grid, as at IB: a limit or aux price that is not a whole number of
minTicks (checked exactly on the wire text) is refused with error 110 and nothing else. A new order never
exists (no openOrder, no permId; ib_async, still at PendingSubmit, marks it Cancelled); a modification is
refused and the working order keeps its previous values (ib_async records ValidationError on the trade).
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from tickguard.adapters.broker import BrokerOrder, FillEvent, NoticeEvent, OrderStatus, OrderStatusEvent
from tickguard.adapters.sim.venue import SimVenue
from tickguard.core.model import Action, OrderType

from . import outgoing as out
from . import outgoing_orders as oo
from .accounts import CURRENCY, OFF_TICK, contract_spec, price_on_tick, resolve
from .incoming_orders import PlaceOrder
from .wire import Field

log = logging.getLogger(__name__)

NS = 1_000_000_000
WORKING = frozenset({"PreSubmitted", "Submitted", "PendingCancel"})
UNKNOWN_CONTRACT = "No security definition has been found for the request"
# IB's request-validation failures (error 321); 'bS' is the tag IB puts in them for a placeOrder.
INVALID_ACCOUNT = "Error validating request.-'bS' : cause - Invalid account code"
NO_ACCOUNT = "Error validating request.-'bS' : cause - You must specify an account."

Emit = Callable[[int, list[Field]], None]
"""Send fields to the connection of this clientId (dropped if that client is not connected)."""


@dataclass(slots=True)
class GatewayOrder:
    """One IB order as the gateway tracks it. ``request`` holds the latest accepted parameters."""

    order_id: int
    client_id: int
    perm_id: int
    account: str
    symbol: str
    request: PlaceOrder
    status: str = "PreSubmitted"
    filled: float = 0.0
    avg_price: float = 0.0
    last_fill_price: float = 0.0
    venue_id: int | None = None
    pending_replace: PlaceOrder | None = None
    cancel_requested: bool = False
    ended_ns: int | None = None  # when it reached Filled, Cancelled or Inactive (reqCompletedOrders reports it)
    end_text: str = ""  # completedStatus: why it ended

    @property
    def key(self) -> tuple[int, int]:
        return self.client_id, self.order_id

    @property
    def total_qty(self) -> float:
        return self.request.total_qty

    @property
    def remaining(self) -> float:
        return max(0.0, self.total_qty - self.filled)

    @property
    def working(self) -> bool:
        return self.status in WORKING

    def spec(self, what_if: bool = False) -> oo.OrderSpec:
        r = self.pending_replace or self.request
        return oo.OrderSpec(
            self.order_id, self.client_id, self.perm_id, r.action, r.total_qty, r.order_type,
            lmt_price=r.lmt_price, aux_price=r.aux_price, tif=r.tif or "DAY", account=self.account,
            order_ref=r.order_ref, what_if=what_if, parent_id=r.parent_id, outside_rth=r.outside_rth,
        )  # fmt: skip


@dataclass(slots=True)
class ExecutionRecord:
    """A fill kept for the day, so a reconnecting client's reqExecutions sees it."""

    execution: oo.ExecutionSpec
    contract: out.ContractSpec
    symbol: str
    commission: float
    ts_ns: int


@dataclass(slots=True)
class OrderBookStats:
    placed: int = 0
    refused_pacing: int = 0
    modified: int = 0
    cancelled: int = 0
    rejected: int = 0
    refused_price: int = 0  # error 110: a price off the contract's tick grid
    refused_validation: int = 0  # error 321: e.g. an account the gateway does not manage
    what_ifs: int = 0


class OrderBook:
    """Places, modifies and cancels IB orders on the venue and reports their lives to the clients."""

    def __init__(
        self,
        venue: SimVenue,
        accounts: list[str],
        emit: Emit,
        on_fill: Callable[[str, str], None],
        first_perm_id: int = 1_000_001,
    ) -> None:
        self.venue = venue
        self.accounts = accounts
        self._emit = emit
        self._on_fill = on_fill
        self._perm_ids = itertools.count(first_perm_id)
        self.orders: dict[tuple[int, int], GatewayOrder] = {}
        self._by_venue: dict[int, GatewayOrder] = {}
        self.executions: list[ExecutionRecord] = []
        self.stats = OrderBookStats()
        self.fill_delay_s = 0.0
        self._next_ids: dict[int, int] = {}
        self.cancel_requests: list[tuple[int, int]] = []  # (clientId, orderId) of every cancel asked, in order

    # ----------------------------------------------------------------------------------- queries

    def next_order_id(self, client_id: int) -> int:
        return self._next_ids.get(client_id, 1)

    def working_orders(self, client_id: int | None = None) -> list[GatewayOrder]:
        return [o for o in self.orders.values() if o.working and (client_id is None or o.client_id == client_id)]

    def open_order_messages(self, order: GatewayOrder) -> list[list[Field]]:
        """openOrder + orderStatus, as IB answers reqOpenOrders for each working order."""
        spec = contract_spec(self.venue.specs[order.symbol])
        return [oo.open_order(order.spec(), spec, oo.OrderStateSpec(order.status)), self._status(order)]

    def completed_order_messages(self) -> list[list[Field]]:
        """completedOrder for every order of every client that ended today (filled, cancelled, rejected), oldest
        first: IB's answer to reqCompletedOrders, whatever the apiOnly flag (all orders here are API orders)."""
        today = _ny_date(self.venue.now_ns)
        ended = [o for o in self.orders.values() if o.ended_ns is not None and _ny_date(o.ended_ns) == today]
        return [self._completed(o) for o in sorted(ended, key=lambda o: o.ended_ns or 0)]

    def _completed(self, order: GatewayOrder) -> list[Field]:
        from tickguard.adapters.sim.market import NY

        when = dt.datetime.fromtimestamp((order.ended_ns or 0) / NS, tz=NY).strftime("%Y%m%d %H:%M:%S America/New_York")
        contract = contract_spec(self.venue.specs[order.symbol])
        return oo.completed_order(order.spec(), contract, order.status, order.filled, when, order.end_text)

    def _end(self, order: GatewayOrder, status: str, text: str) -> None:
        order.status, order.ended_ns, order.end_text = status, self.venue.now_ns, text

    def executions_today(self) -> list[ExecutionRecord]:
        """Executions of the current (virtual) trading day: IB forgets earlier ones."""
        today = _ny_date(self.venue.now_ns)
        return [e for e in self.executions if _ny_date(e.ts_ns) == today]

    # ------------------------------------------------------------------------------ client requests

    def place(self, client_id: int, req: PlaceOrder) -> None:
        self._next_ids[client_id] = max(self.next_order_id(client_id), req.order_id + 1)
        if req.what_if:
            self._what_if(client_id, req)
            return
        existing = self.orders.get((client_id, req.order_id))
        if existing is not None:
            if existing.working:
                self._modify(existing, req)
            else:
                self._emit(client_id, out.error(req.order_id, 103, "Duplicate order id"))
            return
        spec = resolve(self.venue, req.contract)
        if spec is None:
            self._emit(client_id, out.error(req.order_id, 200, UNKNOWN_CONTRACT))
            return
        account = self._account_of(client_id, req)
        if account is None:
            return
        if self._refuse_off_tick(client_id, req, spec.min_tick):
            return
        order = GatewayOrder(req.order_id, client_id, next(self._perm_ids), account, spec.symbol, req)
        self.orders[order.key] = order
        self.stats.placed += 1
        problem = _unsupported(req)
        if problem:
            self._reject(order, 201, f"Order rejected - reason:{problem}")
            return
        for fields in self.open_order_messages(order):
            self._emit(client_id, fields)
        self._submit(order)

    def cancel(self, client_id: int, order_id: int) -> None:
        self.cancel_requests.append((client_id, order_id))
        order = self.orders.get((client_id, order_id))
        if order is None:
            text = f"OrderId {order_id} that needs to be cancelled is not found."
            self._emit(client_id, out.error(order_id, 10147, text))
            return
        if not order.working:
            self._emit(client_id, out.error(order_id, 10148, f"OrderId {order_id} that needs to be "
                                            f"cancelled cannot be cancelled, state: {order.status}."))  # fmt: skip
            return
        if order.cancel_requested:
            return
        order.cancel_requested = True
        replacing = order.pending_replace is not None
        order.pending_replace = None
        if order.venue_id is None:  # submission still delayed: nothing reached the venue yet
            self._finish_cancel(order)
            return
        order.status = "PendingCancel"
        self._emit(order.client_id, self._status(order))
        if not replacing:  # a replace already has a venue cancel in flight
            self.venue.cancel(order.venue_id)

    def cancel_all(self) -> None:
        """reqGlobalCancel: every working order of every client."""
        for order in self.working_orders():
            self.cancel(order.client_id, order.order_id)

    # ----------------------------------------------------------------------------------- internals

    def _submit(self, order: GatewayOrder) -> None:
        """Send the order's remaining quantity to the venue, now or after the injected fill delay.

        The venue order is built when it is sent, so a modification made during the delay applies.
        """

        def send() -> None:
            if order.cancel_requested or not order.working:
                return
            req = order.request
            broker_order = BrokerOrder(
                req.order_ref, order.account, order.symbol, Action(req.action), Decimal(repr(order.remaining)),
                OrderType(req.order_type), req.lmt_price if req.order_type == "LMT" else None,
            )  # fmt: skip
            order.venue_id = self.venue.place(broker_order)
            self._by_venue[order.venue_id] = order

        order.venue_id = None
        if self.fill_delay_s > 0:
            self.venue.schedule(self.venue.now_ns + int(self.fill_delay_s * NS), send)
        else:
            send()

    def _account_of(self, client_id: int, req: PlaceOrder) -> str | None:
        """The account the order is for, or None after answering error 321 (not managed, or not named while
        several are managed) - as IB, which then creates no order."""
        if not req.account and len(self.accounts) > 1:
            text = NO_ACCOUNT
        elif req.account and req.account not in self.accounts:
            text = INVALID_ACCOUNT
        else:
            return req.account or self.accounts[0]
        self.stats.refused_validation += 1
        self._emit(client_id, out.error(req.order_id, 321, text))
        return None

    def _refuse_off_tick(self, client_id: int, req: PlaceOrder, min_tick: float) -> bool:
        """Answer error 110 (and nothing else) if a price of the request is off the tick grid."""
        if not _off_tick(req, min_tick):
            return False
        self.stats.refused_price += 1
        self._emit(client_id, out.error(req.order_id, 110, OFF_TICK))
        return True

    def _modify(self, order: GatewayOrder, req: PlaceOrder) -> None:
        if self._refuse_off_tick(order.client_id, req, self.venue.specs[order.symbol].min_tick):
            return  # IB refuses the modification; the working order is unchanged
        current = order.pending_replace or order.request
        if (req.action, req.order_type, req.contract.symbol or current.contract.symbol) != (
            current.action,
            current.order_type,
            current.contract.symbol or req.contract.symbol,
        ) or order.cancel_requested:
            self._emit(order.client_id, out.error(order.order_id, 105,
                                                  "Order being modified does not match original order"))  # fmt: skip
            return
        if req.total_qty <= order.filled:
            self._emit(order.client_id, out.error(order.order_id, 105, "Order being modified does not match "
                                                  f"original order: quantity {req.total_qty} <= filled"))  # fmt: skip
            return
        self.stats.modified += 1
        unchanged = (req.total_qty, req.lmt_price) == (current.total_qty, current.lmt_price)
        if unchanged or order.venue_id is None:  # nothing to change at the venue, or not sent yet
            order.request = req
        else:
            first = order.pending_replace is None
            order.pending_replace = req
            if first:
                self.venue.cancel(order.venue_id)
        contract = contract_spec(self.venue.specs[order.symbol])
        self._emit(order.client_id, oo.open_order(order.spec(), contract, oo.OrderStateSpec(order.status)))
        self._emit(order.client_id, self._status(order))

    def _what_if(self, client_id: int, req: PlaceOrder) -> None:
        self.stats.what_ifs += 1
        spec = resolve(self.venue, req.contract)
        if spec is None:
            self._emit(client_id, out.error(req.order_id, 200, UNKNOWN_CONTRACT))
            return
        if self._refuse_off_tick(client_id, req, spec.min_tick):
            return  # ib_async ends the what-if request on 110
        problem = _unsupported(req)
        if problem:
            self._emit(client_id, out.error(req.order_id, 201, f"Order rejected - reason:{problem}"))
            return
        account = req.account or self.accounts[0]
        ex = self.venue.exchange
        broker_order = BrokerOrder(req.order_ref, account, spec.symbol, Action(req.action),
                                   Decimal(repr(req.total_qty)), OrderType(req.order_type), req.lmt_price)  # fmt: skip
        answer = self.venue.what_if(broker_order)
        equity = ex.equity(account)
        init_before = ex.gross(account) * ex.p.margin_rate
        maint_before = init_before * 0.8
        state = oo.OrderStateSpec(
            "PreSubmitted",
            init_margin_before=init_before,
            maint_margin_before=maint_before,
            equity_with_loan_before=equity,
            init_margin_change=answer.init_margin_change,
            maint_margin_change=answer.maint_margin_change,
            equity_with_loan_change=-answer.commission,
            init_margin_after=init_before + answer.init_margin_change,
            maint_margin_after=maint_before + answer.maint_margin_change,
            equity_with_loan_after=equity - answer.commission,
            commission=answer.commission,
            min_commission=answer.commission,
            max_commission=answer.commission,
            commission_currency=CURRENCY,
            warning_text=answer.warning,
        )
        order = GatewayOrder(req.order_id, client_id, 0, account, spec.symbol, req)
        self._emit(client_id, oo.open_order(order.spec(what_if=True), contract_spec(spec), state))

    def _status(self, order: GatewayOrder) -> list[Field]:
        return oo.order_status(order.order_id, order.status, order.filled, order.remaining, order.avg_price,
                               order.perm_id, order.request.parent_id, order.last_fill_price,
                               order.client_id)  # fmt: skip

    def _reject(self, order: GatewayOrder, code: int, reason: str) -> None:
        """A refused order gets the error naming the reason (reqId = orderId), then openOrder and orderStatus
        ``Inactive`` - the order TWS sends them in (ib_insync #554).

        ib_async turns the error into status Cancelled with the reason in ``trade.log``, then records Inactive.
        The error must come first: ib_async 2.1.0 counts Inactive as done, so an Inactive arriving first
        would make it drop the error from the trade's log.
        """
        self.stats.rejected += 1
        self._end(order, "Inactive", reason)
        order.pending_replace = None
        self._emit(order.client_id, out.error(order.order_id, code, reason))
        contract = contract_spec(self.venue.specs[order.symbol])
        self._emit(order.client_id, oo.open_order(order.spec(), contract, oo.OrderStateSpec("Inactive")))
        self._emit(order.client_id, self._status(order))

    def _finish_cancel(self, order: GatewayOrder) -> None:
        self.stats.cancelled += 1
        self._end(order, "Cancelled", "Cancelled by Trader")
        self._emit(order.client_id, self._status(order))
        self._emit(order.client_id, out.error(order.order_id, 202, "Order Canceled - reason:"))

    def refuse(self, client_id: int, order_id: int, code: int, message: str) -> None:
        """Answer a placeOrder the gateway will not process (pacing): the order is never executed."""
        self.stats.refused_pacing += 1
        self._emit(client_id, out.error(order_id, code, message))

    # --------------------------------------------------------------------------------- venue events

    def on_event(self, event: object) -> None:
        if isinstance(event, FillEvent):
            self._on_venue_fill(event)
        elif isinstance(event, OrderStatusEvent):
            self._on_venue_status(event)
        elif isinstance(event, NoticeEvent) and event.code != 10148:
            log.info("venue notice %s: %s", event.code, event.message)

    def _on_venue_status(self, event: OrderStatusEvent) -> None:
        order = self._by_venue.get(event.order_id)
        if order is None or event.order_id != order.venue_id or not order.working:
            return
        if event.status is OrderStatus.SUBMITTED:
            if order.status == "PreSubmitted":
                order.status = "Submitted"
                self._emit(order.client_id, self._status(order))
        elif event.status is OrderStatus.REJECTED:
            self._reject(order, event.code or 201, event.reason)
        elif event.status is OrderStatus.CANCELLED:
            replacement = order.pending_replace
            if replacement is None:
                self._finish_cancel(order)
                return
            order.pending_replace = None
            order.request = replacement
            if order.remaining <= 1e-9:
                self._end(order, "Filled", "Filled")
                self._emit(order.client_id, self._status(order))
                return
            self._submit(order)

    def _on_venue_fill(self, event: FillEvent) -> None:
        order = self._by_venue.get(event.order_id)
        if order is None:
            return
        qty, price = float(event.qty), float(event.price)  # the wire speaks doubles; the venue's values are exact
        order.avg_price = (order.avg_price * order.filled + price * qty) / (order.filled + qty)
        order.filled += qty
        order.last_fill_price = price
        contract = contract_spec(self.venue.specs[order.symbol])
        execution = oo.ExecutionSpec(
            exec_id=event.exec_id, order_id=order.order_id, client_id=order.client_id, perm_id=order.perm_id,
            time=dt.datetime.fromtimestamp(event.ts_ns / NS, tz=dt.UTC), account=order.account,
            exchange="SIMX", side="BOT" if event.action is Action.BUY else "SLD", shares=qty,
            price=price, cum_qty=order.filled, avg_price=order.avg_price, order_ref=order.request.order_ref,
        )  # fmt: skip
        commission = float(event.commission or 0.0)
        self.executions.append(ExecutionRecord(execution, contract, order.symbol, commission, event.ts_ns))
        done = order.remaining <= 1e-9
        if done:
            self._end(order, "Filled", "Filled")
        elif order.status == "PreSubmitted":
            order.status = "Submitted"
        self._emit(order.client_id, oo.exec_details(-1, contract, execution))
        self._emit(order.client_id, self._status(order))
        if done:
            self._emit(order.client_id, oo.open_order(order.spec(), contract, oo.OrderStateSpec("Filled")))
        self._emit(order.client_id, oo.commission_report(event.exec_id, commission, CURRENCY))
        if done and order.cancel_requested:
            self._emit(order.client_id, out.error(order.order_id, 10148, f"OrderId {order.order_id} that needs "
                                                  "to be cancelled cannot be cancelled, state: Filled."))  # fmt: skip
        self._on_fill(order.account, order.symbol)


def _off_tick(req: PlaceOrder, min_tick: float) -> bool:
    """Is the limit or aux price of the request (when set) off the tick grid? Judged on the wire text."""
    prices = (("lmtPrice", req.lmt_price), ("auxPrice", req.aux_price))
    return any(
        value is not None and not price_on_tick(req.raw.get(name, repr(value)), min_tick) for name, value in prices
    )


def _unsupported(req: PlaceOrder) -> str:
    """Why the simulated exchange cannot take this order ('' if it can)."""
    if req.order_type not in ("MKT", "LMT"):
        return f" order type {req.order_type} is not supported by the simulated exchange (MKT, LMT only)"
    if req.action not in ("BUY", "SELL"):
        return f" action {req.action} is not supported"
    if req.parent_id:
        return " child orders (parentId) are not supported by the simulated exchange"
    return ""


def _ny_date(ts_ns: int) -> dt.date:
    from tickguard.adapters.sim.market import NY

    return dt.datetime.fromtimestamp(ts_ns / NS, tz=NY).date()
