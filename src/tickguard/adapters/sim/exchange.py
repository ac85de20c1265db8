"""The simulated exchange: accepts, rejects and fills orders against the simulated quotes.

It models what an exit engine must survive at a real broker: order latency, slippage, partial fills,
commissions, random and buying-power rejections, and IB's pacing rule (more than ``max_msgs_per_s``
client messages in one second is refused with error 100).  It knows nothing of asyncio or sockets: the
venue drives it in virtual time, so the same exchange can sit behind the fake IB Gateway.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tickguard.adapters.broker import BrokerOrder, FillEvent, NoticeEvent, OrderStatusEvent, WhatIf
from tickguard.adapters.sim.market import NS, SymbolSpec
from tickguard.core.model import Action, OrderType
from tickguard.core.money import ZERO, exact
from tickguard.core.order_state import OrderStatus

PACING_CODE = 100
UNKNOWN_SYMBOL_CODE = 200
REJECTED_CODE = 201


@dataclass(slots=True, frozen=True)
class ExchangeParams:
    latency_ms: float = 5.0
    latency_jitter_ms: float = 3.0
    slippage_ticks: int = 1
    partial_fill_prob: float = 0.15
    commission_per_share: float = 0.005
    min_commission: float = 1.0
    reject_prob: float = 0.0
    initial_cash: float = 1_000_000.0
    leverage: float = 4.0
    margin_rate: float = 0.25
    max_msgs_per_s: int = 50
    # IB's precautionary size limit (an order above it is refused, and so is its what-if); 0: none
    max_order_qty: float = 0.0


@dataclass(slots=True)
class SimOrder:
    order_id: int
    order: BrokerOrder
    submit_ns: int
    # The exchange's own view (pending | working | filled | cancelled | rejected), like IB's order statuses;
    # what it reports to the engine is an ``OrderStatus`` in an ``OrderStatusEvent``.
    status: str = "pending"
    filled: float = 0.0
    avg_price: float = 0.0
    pieces: list[float] = field(default_factory=list)

    @property
    def remaining(self) -> float:
        return float(self.order.qty) - self.filled


@dataclass(slots=True)
class Account:
    cash: float
    positions: dict[str, float] = field(default_factory=dict)
    avg_cost: dict[str, float] = field(default_factory=dict)
    realized: float = 0.0
    commissions: float = 0.0


Scheduler = Callable[[int, Callable[[], None]], None]


class SimExchange:
    def __init__(
        self,
        params: ExchangeParams,
        contracts: dict[str, SymbolSpec],
        rng: np.random.Generator,
        schedule: Scheduler,
        emit: Callable[[object], None],
        now: Callable[[], int],
    ) -> None:
        self.p = params
        self._now = now
        self.contracts = contracts
        self.rng = rng
        self._schedule = schedule
        self._emit = emit
        self.accounts: dict[str, Account] = {}
        self.orders: dict[int, SimOrder] = {}
        self.quotes: dict[str, tuple[float, float, int]] = {}
        self._resting: dict[str, list[SimOrder]] = collections.defaultdict(list)
        self._ids = itertools.count(1)
        self._exec_ids = itertools.count(1)
        self._msgs: collections.deque[int] = collections.deque()
        self.pacing_violations = 0
        self.executions: list[FillEvent] = []
        self.reject_next: str | None = None  # fault injection: the next order is rejected with this reason
        self.partial_next = False  # fault injection: the next order fills in pieces

    # ------------------------------------------------------------------------------------- accounting

    def account(self, name: str) -> Account:
        acct = self.accounts.get(name)
        if acct is None:
            acct = self.accounts[name] = Account(self.p.initial_cash)
        return acct

    def mark(self, symbol: str) -> float:
        bid, ask, _ = self.quotes[symbol]
        return (bid + ask) / 2

    def equity(self, name: str) -> float:
        acct = self.account(name)
        return acct.cash + sum(q * self.mark(s) for s, q in acct.positions.items() if s in self.quotes)

    def gross(self, name: str) -> float:
        acct = self.account(name)
        return sum(abs(q) * self.mark(s) for s, q in acct.positions.items() if s in self.quotes)

    def buying_power(self, name: str) -> float:
        return self.equity(name) * self.p.leverage - self.gross(name)

    def _opening_qty(self, order: BrokerOrder) -> float:
        pos = self.account(order.account).positions.get(order.symbol, 0.0)
        signed = float(order.qty) if order.action is Action.BUY else -float(order.qty)
        after = pos + signed
        return max(0.0, abs(after) - abs(pos))

    def commission(self, qty: float, price: float) -> float:
        return round(min(max(self.p.min_commission, qty * self.p.commission_per_share), 0.01 * qty * price), 4)

    # ----------------------------------------------------------------------------------------- pacing

    def count_message(self, now_ns: int) -> bool:
        """Record one client message; False when it breaks the messages-per-second limit."""
        window = self._msgs
        while window and window[0] <= now_ns - NS:
            window.popleft()
        window.append(now_ns)
        if len(window) > self.p.max_msgs_per_s:
            self.pacing_violations += 1
            return False
        return True

    # ----------------------------------------------------------------------------------------- orders

    def submit(self, order: BrokerOrder, now_ns: int) -> int:
        order_id = next(self._ids)
        sim = SimOrder(order_id, order, now_ns)
        self.orders[order_id] = sim
        paced = self.count_message(now_ns)
        delay = int((self.p.latency_ms + self.rng.uniform(0, self.p.latency_jitter_ms)) * 1e6)
        self._schedule(now_ns + delay, lambda: self._arrive(sim, paced))
        return order_id

    def _arrive(self, sim: SimOrder, paced: bool) -> None:
        order = sim.order
        now = self._now()
        if not paced:
            return self._reject(sim, PACING_CODE, f"Max rate of messages per second has been exceeded:"
                                f"max={self.p.max_msgs_per_s}")
        if order.symbol not in self.contracts:
            return self._reject(sim, UNKNOWN_SYMBOL_CODE, "No security definition has been found for the request")
        if not order.qty > 0:
            return self._reject(sim, REJECTED_CODE, f"Order rejected - reason: invalid quantity {order.qty}")
        if order.order_type is OrderType.LIMIT and not (order.limit_price and order.limit_price > 0):
            return self._reject(sim, REJECTED_CODE, "Order rejected - reason: limit price missing")
        too_large = self._precaution(order)
        if too_large:
            return self._reject(sim, REJECTED_CODE, f"Order rejected - reason: {too_large}")
        if self.reject_next is not None:
            reason, self.reject_next = self.reject_next, None
            return self._reject(sim, REJECTED_CODE, f"Order rejected - reason: {reason}")
        if self.p.reject_prob > 0 and self.rng.random() < self.p.reject_prob:
            return self._reject(sim, REJECTED_CODE, "Order rejected - reason: simulated exchange rejection")
        if order.symbol not in self.quotes:
            return self._reject(sim, REJECTED_CODE, "Order rejected - reason: no market for the contract yet")
        opening = self._opening_qty(order)
        if opening > 0:
            bid, ask, _ = self.quotes[order.symbol]
            px = _limit(order) or (ask if order.action is Action.BUY else bid)
            if opening * px > self.buying_power(order.account):
                return self._reject(sim, REJECTED_CODE, "Order rejected - reason: insufficient buying power "
                                    f"(needs {opening * px:,.0f}, has {self.buying_power(order.account):,.0f})")
        sim.status = "working"
        if self.partial_next or self.rng.random() < self.p.partial_fill_prob:
            self.partial_next = False
            sim.pieces = self._split(float(order.qty), self.contracts[order.symbol])
        else:
            sim.pieces = [float(order.qty)]
        self._emit(OrderStatusEvent(sim.order_id, order.ref, OrderStatus.SUBMITTED, ZERO, order.qty, now))
        self._resting[order.symbol].append(sim)
        self._try_fill(sim)

    def _split(self, qty: float, spec: SymbolSpec) -> list[float]:
        if qty < 2:
            return [qty]
        first = float(max(1, int(qty * self.rng.uniform(0.2, 0.7))))
        return [first, qty - first]

    def _reject(self, sim: SimOrder, code: int, reason: str) -> None:
        sim.status = "rejected"
        self._emit(OrderStatusEvent(sim.order_id, sim.order.ref, OrderStatus.REJECTED, exact(sim.filled),
                                    exact(sim.remaining), self._now(), reason, code))

    def cancel(self, order_id: int, now_ns: int) -> None:
        sim = self.orders.get(order_id)
        paced = self.count_message(now_ns)
        delay = int(self.p.latency_ms * 1e6)
        self._schedule(now_ns + delay, lambda: self._do_cancel(order_id, sim, paced))

    def _do_cancel(self, order_id: int, sim: SimOrder | None, paced: bool) -> None:
        now = self._now()
        if not paced:
            self._emit(NoticeEvent(PACING_CODE, f"cancel of order {order_id} refused: pacing", now))
            return
        if sim is None or sim.status not in ("pending", "working"):
            self._emit(NoticeEvent(10148, f"OrderId {order_id} that needs to be cancelled cannot be cancelled",
                                   now))
            return
        sim.status = "cancelled"
        resting = self._resting[sim.order.symbol]
        if sim in resting:
            resting.remove(sim)
        self._emit(OrderStatusEvent(order_id, sim.order.ref, OrderStatus.CANCELLED, exact(sim.filled),
                                    exact(sim.remaining), now, "cancelled by client"))

    # ---------------------------------------------------------------------------------------- matching

    def on_quote(self, symbol: str, bid: float, ask: float, ts_ns: int) -> None:
        self.quotes[symbol] = (bid, ask, ts_ns)
        resting = self._resting.get(symbol)
        if resting:
            for sim in list(resting):
                self._try_fill(sim)

    def _try_fill(self, sim: SimOrder) -> None:
        """Fill the next piece of a working order if the current quote allows it."""
        order = sim.order
        if sim.status != "working" or not sim.pieces:
            return
        bid, ask, _ = self.quotes[order.symbol]
        spec = self.contracts[order.symbol]
        buy = order.action is Action.BUY
        touch = ask if buy else bid
        if order.order_type is OrderType.LIMIT:
            limit = _limit(order)
            assert limit is not None
            if (buy and ask > limit) or (not buy and bid < limit):
                return
            price = touch
        else:
            slip = int(self.rng.integers(0, self.p.slippage_ticks + 1)) * spec.min_tick
            price = round(touch + slip if buy else max(spec.min_tick, touch - slip), 10)
        qty = sim.pieces.pop(0)
        self._fill(sim, qty, price)

    def _fill(self, sim: SimOrder, qty: float, price: float) -> None:
        order = sim.order
        now = self._now()
        sim.avg_price = (sim.avg_price * sim.filled + price * qty) / (sim.filled + qty)
        sim.filled += qty
        commission = self.commission(qty, price)
        acct = self.account(order.account)
        signed = qty if order.action is Action.BUY else -qty
        pos = acct.positions.get(order.symbol, 0.0)
        cost = acct.avg_cost.get(order.symbol, 0.0)
        if pos == 0 or (pos > 0) == (signed > 0):
            acct.avg_cost[order.symbol] = (cost * abs(pos) + price * qty) / (abs(pos) + qty)
        else:
            closed = min(abs(pos), qty)
            acct.realized += closed * (price - cost) * (1 if pos > 0 else -1)
            if qty > abs(pos):
                acct.avg_cost[order.symbol] = price
        acct.positions[order.symbol] = pos + signed
        acct.cash -= signed * price + commission
        acct.commissions += commission
        exec_id = f"sim.{next(self._exec_ids):08d}"
        # the exchange keeps doubles inside; what it reports is exact, as IB's decimal quantities are
        fill = FillEvent(sim.order_id, order.ref, exec_id, order.account, order.symbol, order.action, exact(qty),
                         exact(price), now, exact(commission))
        self.executions.append(fill)
        self._emit(fill)
        if sim.remaining <= 1e-9:
            sim.status = "filled"
            self._resting[order.symbol].remove(sim)
            self._emit(OrderStatusEvent(sim.order_id, order.ref, OrderStatus.FILLED, exact(sim.filled), ZERO, now))

    # ----------------------------------------------------------------------------------------- what-if

    def _precaution(self, order: BrokerOrder) -> str | None:
        """The precautionary size limit, closing orders included (IB's applies to every order): why ``order``
        is refused by it, or None.  One rule for orders and what-ifs, so a what-if predicts the order."""
        limit = self.p.max_order_qty
        if limit > 0 and float(order.qty) > limit:
            return f"order size {order.qty} exceeds the precautionary size limit of {limit:g}"
        return None

    def what_if(self, order: BrokerOrder, now_ns: int) -> WhatIf:
        self.count_message(now_ns)
        if order.symbol not in self.quotes:
            return WhatIf(False, 0.0, 0.0, 0.0, f"no market for {order.symbol}", now_ns)
        bid, ask, _ = self.quotes[order.symbol]
        px = _limit(order) or (ask if order.action is Action.BUY else bid)
        opening = self._opening_qty(order)
        init = opening * px * self.p.margin_rate
        too_large = self._precaution(order)
        accepted = too_large is None and opening * px <= self.buying_power(order.account)
        warning = "" if accepted else too_large or "insufficient buying power"
        return WhatIf(accepted, init, init * 0.8, self.commission(float(order.qty), px), warning, now_ns)


def _limit(order: BrokerOrder) -> float | None:
    """The order's limit as the exchange's doubles (it keeps prices as IB's wire does)."""
    return None if order.limit_price is None else float(order.limit_price)
