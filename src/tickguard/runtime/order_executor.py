"""Turns intents into broker orders and broker events back into trade-manager calls.

It tracks each order through the state machine of ``core.order_state`` (``new → submitting → submitted →
partially_filled → filled``, or ``cancelling → cancelled``, ``rejected``, ``retry_wait``, ``unknown``), retries
what is worth retrying (pacing and connectivity refusals) with the same idempotency key, and refuses ever to
submit a key twice: that refusal is the last line of defence against a duplicate exit.

Every state change goes through ``advance``: a move the table does not allow (a broker report that goes
backwards, a status after a final one) is an *anomaly* - logged with the order's key and its event history,
counted in ``anomalies``, noted in the order's history (and so journaled), and never applied.  Fills are not
state changes: they are money and are applied once per execution id whatever the state; one after a final
state (a fill racing a cancel) is applied, logged and counted in ``late_fills``, and the state stays final.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from tickguard.adapters.broker import BrokerOrder, CommissionEvent, FillEvent, OrderStatusEvent
from tickguard.core.model import OrderIntent
from tickguard.core.money import ZERO, ratio
from tickguard.core.order_state import OrderStatus, Transition, acknowledged, advance, after_fill

log = logging.getLogger("tickguard.runtime.order_executor")

# Broker codes after which the same order may simply be sent again: pacing (100), connectivity (1100,
# 1101, 1102 lost-and-restored, 2110 TWS-server connectivity) and the simulator's transient refusals (0).
RETRYABLE_CODES = frozenset({100, 1100, 1101, 1102, 2110, 0})


class DuplicateIntent(RuntimeError):
    """An intent whose idempotency key was already submitted."""


class OrderSink(Protocol):
    def place_order(self, order: BrokerOrder) -> int: ...

    def cancel_order(self, order_id: int) -> None: ...


class IntentListener(Protocol):
    def on_fill(self, intent: OrderIntent, qty: Decimal, price: Decimal, ts_ns: int, commission: Decimal) -> None: ...

    def on_intent_closed(self, intent: OrderIntent, status: OrderStatus, remaining: Decimal, reason: str) -> None: ...

    def on_commission(self, intent: OrderIntent, commission: Decimal) -> None: ...


@dataclass(slots=True)
class OrderRecord:
    intent: OrderIntent
    status: OrderStatus = OrderStatus.NEW
    attempts: int = 0
    order_id: int | None = None
    filled: Decimal = ZERO
    notional: Decimal = ZERO  # sum of fill price x qty, exact
    commission: Decimal = ZERO
    reason: str = ""
    cancel_requested: bool = False
    exec_ids: set[str] = field(default_factory=set)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final(self) -> bool:
        return self.status.is_final

    @property
    def avg_price(self) -> Decimal:
        """Average fill price (zero before the first fill), from the exact sums."""
        return ratio(self.notional, self.filled) if self.filled else ZERO


class OrderExecutor:
    def __init__(
        self,
        broker: OrderSink,
        listener: IntentListener,
        clock: Callable[[], int],
        max_attempts: int = 5,
        retry_backoff_ns: int = 250_000_000,
        on_event: Callable[[OrderRecord, str, dict[str, Any]], None] | None = None,
        deferred: bool = False,
    ) -> None:
        """``deferred``: orders and cancels wait for ``transmit()``, which the engine calls only once the
        journal has committed them - the write-ahead rule.  Without a journal they go out at once."""
        self._broker = broker
        self._listener = listener
        self._clock = clock
        self._max_attempts = max_attempts
        self._backoff_ns = retry_backoff_ns
        self.on_event = on_event  # the journal recorder listens here
        self.orders: dict[str, OrderRecord] = {}
        self._by_order_id: dict[int, OrderRecord] = {}
        self._retries: list[tuple[int, int, str]] = []
        self._seq = itertools.count()
        self.duplicates_refused = 0
        self.unknown_events = 0
        self.anomalies = 0  # illegal state changes refused (each logged with the order's history)
        self.late_fills = 0  # fills applied to an order already in a final state
        self.overfills = 0  # executions that took an order past its quantity
        self._deferred = deferred
        self._outgoing: list[OrderRecord] = []
        self._cancels_out: list[int] = []

    # -------------------------------------------------------------------------------------- commands

    def submit(self, intent: OrderIntent) -> OrderRecord:
        if intent.key in self.orders:
            self.duplicates_refused += 1
            raise DuplicateIntent(f"order {intent.key} was already submitted; refusing to send it twice")
        record = OrderRecord(intent)
        self.orders[intent.key] = record
        self._send(record)
        return record

    def cancel(self, key: str) -> None:
        record = self.orders.get(key)
        if record is None or record.final:
            return
        record.cancel_requested = True
        at_broker = record.order_id is not None and record.status is not OrderStatus.RETRY_WAIT
        if at_broker and self._move(record, OrderStatus.CANCELLING, "cancel requested").illegal:
            return
        self._note(record, "cancel_requested", {})
        if not at_broker:
            self._close(record, OrderStatus.CANCELLED, "cancelled before it reached the broker")
        else:
            assert record.order_id is not None
            self._cancels_out.append(record.order_id)
            if not self._deferred:
                self.transmit()

    def _send(self, record: OrderRecord) -> None:
        if self._move(record, OrderStatus.SUBMITTING, "send").illegal:
            return
        record.attempts += 1
        record.order_id = None
        self._note(record, "submitting", {"attempt": record.attempts, "qty": record.intent.qty - record.filled})
        self._outgoing.append(record)
        if not self._deferred:
            self.transmit()

    def transmit(self) -> None:
        """Hand journaled orders and cancels to the broker, in the order they were decided."""
        outgoing, self._outgoing = self._outgoing, []
        for record in outgoing:
            if record.status is not OrderStatus.SUBMITTING:
                continue  # cancelled before it went out
            intent = record.intent
            order = BrokerOrder(
                ref=intent.key, account=intent.account, symbol=intent.symbol, action=intent.action,
                qty=intent.qty - record.filled, order_type=intent.order_type, limit_price=intent.limit_price,
            )
            try:
                order_id = self._broker.place_order(order)
            except Exception as exc:  # the adapter could not even hand it over (no contract, socket gone)
                self._note(record, "send_failed", {"reason": str(exc)})
                self.on_status(OrderStatusEvent(-1, intent.key, OrderStatus.REJECTED, record.filled,
                                                intent.qty - record.filled, self._clock(), str(exc), 0),
                               record)
                continue
            record.order_id = order_id
            self._by_order_id[order_id] = record
            self._note(record, "sent", {"order_id": order_id})
        cancels, self._cancels_out = self._cancels_out, []
        for order_id in cancels:
            self._broker.cancel_order(order_id)


    # ---------------------------------------------------------------------------------------- events

    def on_status(self, event: OrderStatusEvent, record: OrderRecord | None = None) -> None:
        record = record or self._by_order_id.get(event.order_id)
        if record is None or (record.order_id != event.order_id and event.order_id != -1):
            self.unknown_events += record is None
            return
        status = OrderStatus(event.status)
        if record.final:  # a repeat of the final status is no news; anything else is refused (finals are final)
            self._move(record, status, f"broker reported {status} after the order was {record.status}")
        elif status in (OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED):
            if self._move(record, acknowledged(record.status, record.filled > 0), "acknowledged").moved:
                self._note(record, "submitted", {"order_id": event.order_id})
        elif status is OrderStatus.FILLED:
            self._maybe_done(record)  # the fills close it, once every execution has been applied
        elif status is OrderStatus.CANCELLING:
            if self._move(record, status, "cancel pending at the broker").moved:
                self._note(record, "cancelling", {"order_id": event.order_id})
        elif status in (OrderStatus.CANCELLED, OrderStatus.REJECTED):
            self._on_ended(record, status, event)
        else:  # new, submitting, retry_wait, unknown: the engine's own states, never the broker's word
            self._anomaly(record, status, f"{status} is not a state a broker reports")

    def _on_ended(self, record: OrderRecord, status: OrderStatus, event: OrderStatusEvent) -> None:
        reason = event.reason or status.value
        self._note(record, status.value, {"code": event.code, "reason": reason, "order_id": event.order_id})
        if not self._retryable(record, status, event.code):
            self._close(record, status, reason)
        elif self._move(record, OrderStatus.RETRY_WAIT, reason).moved:
            due = self._clock() + self._backoff_ns * (2 ** (record.attempts - 1))
            heapq.heappush(self._retries, (due, next(self._seq), record.intent.key))

    def _retryable(self, record: OrderRecord, status: OrderStatus, code: int | None) -> bool:
        """A refusal for a reason that passes, attempts left, no cancel asked - and a state that may wait
        for a retry (the table has no ``cancelling → retry_wait``: an order being cancelled is not resent)."""
        return (
            status is OrderStatus.REJECTED
            and code in RETRYABLE_CODES
            and record.attempts < self._max_attempts
            and not record.cancel_requested
            and not advance(record.status, OrderStatus.RETRY_WAIT).illegal
        )

    def on_fill(self, event: FillEvent) -> None:
        record = self._by_order_id.get(event.order_id)
        if record is None:
            self.unknown_events += 1
            return
        if event.exec_id in record.exec_ids:
            return  # the same execution seen again (live, then in a reconciliation): apply it once
        record.exec_ids.add(event.exec_id)
        total = record.filled + event.qty
        record.notional += event.price * event.qty
        record.filled = total
        commission = event.commission if event.commission is not None else ZERO
        record.commission += commission
        if total > record.intent.qty:  # exact: one share too many is an over-fill, never "close enough"
            self.overfills += 1
            log.error("order %s: over-filled, %s of %s after execution %s - applied (it happened), flagged",
                      record.intent.key, total, record.intent.qty, event.exec_id)
        after = after_fill(record.status, complete=total >= record.intent.qty)
        if after is not OrderStatus.FILLED:
            self._move(record, after, "partial fill")
        self._note(record, "fill", {"exec_id": event.exec_id, "qty": event.qty, "price": event.price,
                                    "commission": event.commission, "fill_ts_ns": event.ts_ns})
        self._listener.on_fill(record.intent, event.qty, event.price, event.ts_ns, commission)
        if record.final:  # it was final before this fill: the money is applied, the state stays
            self.late_fills += 1
            log.warning("order %s: fill %s (%g @ %g) after the order was %s - applied, state kept",
                        record.intent.key, event.exec_id, event.qty, event.price, record.status)
        elif after is OrderStatus.FILLED:
            self._close(record, OrderStatus.FILLED, "")

    def on_commission(self, event: CommissionEvent) -> None:
        record = self._by_order_id.get(event.order_id)
        if record is None:
            self.unknown_events += 1
            return
        record.commission += event.commission
        self._note(record, "commission", {"exec_id": event.exec_id, "commission": event.commission})
        self._listener.on_commission(record.intent, event.commission)

    def _maybe_done(self, record: OrderRecord) -> None:
        if not record.final and record.filled >= record.intent.qty:
            self._close(record, OrderStatus.FILLED, "")

    def _close(self, record: OrderRecord, status: OrderStatus, reason: str) -> None:
        if not self._move(record, status, reason or "closed").moved:
            return
        record.reason = reason
        self._note(record, "closed", {"status": status.value, "reason": reason})
        self._listener.on_intent_closed(record.intent, status, record.intent.qty - record.filled, reason)

    def _move(self, record: OrderRecord, new: OrderStatus, cause: str) -> Transition:
        """Apply ``record.status → new`` if the state machine allows it; report it as an anomaly if not."""
        transition = advance(record.status, new)
        if transition.moved:
            record.status = new
        elif transition.illegal:
            self._anomaly(record, new, cause)
        return transition

    def _anomaly(self, record: OrderRecord, new: OrderStatus, cause: str) -> None:
        """A state change refused: logged with the order's key and history, counted, noted - never applied."""
        self.anomalies += 1
        log.error("order %s: transition %s -> %s refused (%s); history: %s", record.intent.key, record.status,
                  new, cause, record.events)
        self._note(record, "anomaly", {"from": record.status.value, "to": new.value, "cause": cause})

    # ------------------------------------------------------------------------------------------ time

    def next_deadline(self) -> int | None:
        return self._retries[0][0] if self._retries else None

    def on_time(self, now_ns: int) -> None:
        while self._retries and self._retries[0][0] <= now_ns:
            _, _, key = heapq.heappop(self._retries)
            record = self.orders[key]
            if record.status is OrderStatus.RETRY_WAIT:
                self._send(record)

    # ---------------------------------------------------------------------------------------- recovery

    def restore(self, record: OrderRecord, exec_ids: set[str]) -> None:
        """Take back an order from the journal.  Its key is known again, so it can never be sent twice."""
        record.exec_ids = set(exec_ids)
        self.orders[record.intent.key] = record
        if record.order_id is not None and not record.final:
            self._by_order_id[record.order_id] = record

    def adopt(self, key: str, order_id: int) -> OrderRecord | None:
        """The broker knows this key under ``order_id``: route its events to the journaled record."""
        record = self.orders.get(key)
        if record is None:
            return None
        if record.order_id is not None and record.order_id != order_id:
            self._by_order_id.pop(record.order_id, None)
        record.order_id = order_id
        self._by_order_id[order_id] = record
        if not record.final:
            self._move(record, acknowledged(record.status, record.filled > 0), "adopted from the broker")
        self._note(record, "adopted", {"order_id": order_id})
        return record

    def resend(self, record: OrderRecord) -> None:
        """Send again an order the broker never received (journaled in flight, unknown at the broker).

        One the journal says the broker held goes through ``unknown`` first: its state could not be
        established, and the history shows it."""
        if record.status.at_broker and self._move(record, OrderStatus.UNKNOWN, "the broker does not know it").moved:
            self._note(record, "unknown", {"reason": "journaled as at the broker, unknown there"})
        self._send(record)

    def close_from_broker(self, record: OrderRecord, status: OrderStatus, reason: str) -> None:
        self._note(record, status.value, {"reason": reason, "from": "reconciliation"})
        self._close(record, status, reason)

    def _note(self, record: OrderRecord, kind: str, data: dict[str, Any]) -> None:
        entry = {"ts_ns": self._clock(), "event": kind, **data}
        record.events.append(entry)
        if self.on_event is not None:
            self.on_event(record, kind, entry)
