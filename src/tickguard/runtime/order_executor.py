"""Turns intents into broker orders and broker events back into trade-manager calls.

It tracks each order through the state machine of ``core.order_state`` (``new → submitting → submitted →
partially_filled → filled``, or ``cancelling → cancelled``, ``rejected``, ``retry_wait``, ``unknown``), retries
what is worth retrying (pacing and connectivity refusals) with the same idempotency key, and refuses ever to
submit a key twice: that refusal is the last line of defence against a duplicate exit.

Size: one class, the order's whole lifecycle (send, cancel, broker events, fills, retries, adoption, recovery's
hand-over) - the state machine's transitions are read together; split, each half would need the other's state.

Every state change goes through ``advance``: a move the table does not allow (a broker report that goes
backwards, a status after a final one) is an *anomaly* - logged with the order's key and its event history,
counted in ``anomalies``, noted in the order's history (and so journaled), and never applied.  Fills are not
state changes: they are money and are applied once per execution id whatever the state; one after a final
state (a fill racing a cancel) is applied, logged and counted in ``late_fills``, and the state stays final.
Commissions are counted once per execution id too, however often a broker reports them (with the fill, in a
report of their own, again after each reconnect); a replayed execution or commission is logged at INFO.
Over-fills (``core/halts.py``): the order record holds the whole execution, the trade only what fits.  An excess
halts the trade (ERROR with the evidence, ``overfills``, journaled ``order_overfill``); then no order of it leaves
- new, retried, awaiting its commit or re-sent at recovery: each is closed as cancelled, unsent.

Write-ahead: with a journal, an order or a cancel is queued with the journal position of the write that
records it, and goes out only when a ``CommitReceipt`` of that journal covers the position - the journal hands
one to ``_on_commit`` after each commit.  ``transmit`` without a receipt is refused, and a receipt from before
the commit cannot cover the order, so no caller can send ahead of the journal, however it orders its calls.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from tickguard.adapters.broker import BrokerOrder, CommissionEvent, FillEvent, NotConnected, OrderStatusEvent
from tickguard.core.halts import Execution, Overfill
from tickguard.core.message_budget import MessageBudget, order_lane
from tickguard.core.model import OrderIntent
from tickguard.core.money import ZERO
from tickguard.core.order_state import AT_BROKER, OrderStatus, Transition, acknowledged, advance, after_fill
from tickguard.core.throttle import Lane
from tickguard.runtime.order_record import DuplicateIntent, IntentListener, OrderRecord, OrderSink, holds_elsewhere
from tickguard.runtime.outbox import Outbox
from tickguard.store.journal import CommitReceipt, Journal

log = logging.getLogger(__name__)

# Broker codes after which the same order may simply be sent again: pacing (100), connectivity (1100,
# 1101, 1102 lost-and-restored, 2110 TWS-server connectivity) and the simulator's transient refusals (0).
_MAX_HOLD_NS = 5_000_000_000  # the longest pause between two tries of an order held by a connection outage
RETRYABLE_CODES = frozenset({100, 1100, 1101, 1102, 2110, 0})


def broker_order(intent: OrderIntent, filled: Decimal = ZERO) -> BrokerOrder:
    """The order that leaves for ``intent``: what of it is not filled yet (the shadow what-if asks about the same)."""
    return BrokerOrder(ref=intent.key, account=intent.account, symbol=intent.symbol, action=intent.action,
                       qty=intent.qty - filled, order_type=intent.order_type, limit_price=intent.limit_price)


class OrderExecutor:
    def __init__(
        self,
        broker: OrderSink,
        listener: IntentListener,
        clock: Callable[[], int],
        max_attempts: int = 5,
        retry_backoff_ns: int = 250_000_000,
        on_event: Callable[[OrderRecord, str, dict[str, Any]], None] | None = None,
        journal: Journal | None = None,
        budget: MessageBudget | None = None,
    ) -> None:
        """``journal``: orders and cancels are journaled (by the ``on_event`` listener) before they are queued, and
        leave the queue only when a commit receipt of that journal covers their writes - the write-ahead rule,
        kept by the journal's after-commit hook, not by the caller.  Without a journal they go out at once."""
        self._broker = broker
        self.session: str = getattr(broker, "session_identity", "")  # journaled per order (recovery.holds_elsewhere)
        self.held_elsewhere: set[str] = set()  # restored orders placed through another session (reconciliation)
        # the orders the broker holds by this engine's account (submitted, partially filled, cancelling), kept as
        # their states change: a reconciliation pass compares these with the broker's book without walking every
        # order of the day (~2 ms of a pass inside an engine step at 10,000 orders)
        self.at_broker: dict[str, OrderRecord] = {}
        # orders of this journal whose trades were over before this start (never restored), by key -> journaled
        # status: the broker's book of the day still lists them, and they are not strays (runtime/recovery.py)
        self.journaled_over: dict[str, OrderStatus] = {}
        self.looked_up: set[str] = set()  # keys looked up in the journal for that (found or not): never again
        self._listener = listener
        self._clock = clock
        self._max_attempts = max_attempts
        self._backoff_ns = retry_backoff_ns
        self.on_event = on_event  # the journal recorder listens here
        self.on_sent: Callable[[OrderRecord], None] | None = None  # the acknowledgement deadline starts here
        self.on_cancel_sent: Callable[[OrderRecord], None] | None = None  # the order-efficiency ratio counts it
        self.orders: dict[str, OrderRecord] = {}
        self._by_order_id: dict[int, OrderRecord] = {}
        self._retries: list[tuple[int, int, str]] = []
        self._seq = itertools.count()
        self.duplicates_refused = 0
        self.unknown_events = 0
        self.anomalies = 0  # illegal state changes refused (each logged with the order's history)
        self.late_fills = 0  # fills applied to an order already in a final state
        self.overfills = 0  # executions past their order's quantity, the request or the filled entry: refused
        self.halted: set[str] = set()  # trades halted by an over-fill: none of their orders is sent again
        self.withheld = 0  # orders of halted trades that were not sent (closed as cancelled)
        self.replays = 0  # executions and commissions seen again, ignored
        # every execution applied to an order of this engine, by exec id (each order's own are in its record): a
        # reconciliation pass tells the day's executions it need not look at one by one with it, in C
        self.applied_execs: set[str] = set()
        self._journal = journal
        self._budget = budget  # IB's message budget: committed orders and cancels queue there, exits first
        self._outgoing: Outbox[OrderRecord] = Outbox(journal, lambda r: f"order {r.intent.key}")
        self._cancels_out: Outbox[tuple[int, str]] = Outbox(journal, lambda c: f"the cancel of {c[1]}")
        if journal is not None:
            journal.after_commit.append(self._on_commit)

    # -------------------------------------------------------------------------------------- commands

    def submit(self, intent: OrderIntent, decided_ns: int | None = None) -> OrderRecord:
        if intent.key in self.orders:
            self.duplicates_refused += 1
            raise DuplicateIntent(f"order {intent.key} was already submitted; refusing to send it twice")
        if intent.trade_id in self.halted:  # the trade manager decides nothing for it: the last line of defence
            self.withheld += 1
            log.error("order %s not sent: trade %s is halted", intent.key, intent.trade_id)
            self._listener.on_intent_closed(intent, OrderStatus.CANCELLED, intent.qty, "trade halted")
            return OrderRecord(intent, OrderStatus.CANCELLED, reason="not sent: trade halted")
        record = OrderRecord(intent, decided_ns=decided_ns, placed_through=self.session)
        self.orders[intent.key] = record
        self._send(record)
        return record

    def cancel(self, key: str) -> None:
        record = self.orders.get(key)
        if record is None or record.final:
            return
        if holds_elsewhere(record.placed_through, self.session) and record.status is not OrderStatus.RETRY_WAIT:
            log.error("order %s: NOT cancelled - placed through %s, which this engine (%s) cannot reach; cancel it "
                      "there (TWS) or restart through that client", key, record.placed_through, self.session)
            return
        record.cancel_requested = True
        at_broker = record.order_id is not None and record.status is not OrderStatus.RETRY_WAIT
        if at_broker and self._move(record, OrderStatus.CANCELLING, "cancel requested").illegal:
            return
        before = self._cancels_out.position()
        self._note(record, "cancel_requested", {})
        if not at_broker:
            if self._budget is not None:
                self._budget.withdraw(key)  # still queued for the budget: it never goes, and spends nothing
            self._close(record, OrderStatus.CANCELLED, "cancelled before it reached the broker")
        else:
            assert record.order_id is not None
            self._cancels_out.put((record.order_id, record.intent.key), before)
            self._release()

    def _send(self, record: OrderRecord) -> None:
        if record.intent.trade_id in self.halted:
            self._withhold(record)
            return
        if self._move(record, OrderStatus.SUBMITTING, "send").illegal:
            return
        record.attempts += 1
        record.order_id = None
        before = self._outgoing.position()
        self._note(record, "submitting", {"attempt": record.attempts, "qty": record.intent.qty - record.filled})
        self._outgoing.put(record, before)
        self._release()

    # ------------------------------------------------------------------------------------- write-ahead

    def _release(self) -> None:
        """Without a journal, send at once.  With one, send what is committed already (an order journaled outside
        a batch); inside a batch nothing new is - it goes when the batch commits."""
        if self._journal is None:
            self.transmit()
        else:
            self._on_commit(self._journal.receipt())

    def _on_commit(self, receipt: CommitReceipt) -> None:
        """The journal's after-commit hook: send what ``receipt`` covers; the notes of sending commit together."""
        if not (self._outgoing or self._cancels_out):
            return
        assert self._journal is not None
        with self._journal.batch():
            self.transmit(receipt)

    def transmit(self, receipt: CommitReceipt | None = None) -> None:
        """Hand the broker the orders and cancels the outboxes release (see ``outbox``), in decision order."""
        budget = self._budget
        for record in self._outgoing.release(receipt):
            if record.status is not OrderStatus.SUBMITTING:  # cancelled before it went out
                continue
            if budget is None:
                self._place(record)
                continue
            lane, risk = order_lane(record.intent)
            refused = budget.send(record.intent.key, lane, functools.partial(self._place_released, record), risk,
                                  functools.partial(self._refused_by_budget, record))
            if refused is not None:
                self._refused_by_budget(record, refused)
        for order_id, key in self._cancels_out.release(receipt):
            send = functools.partial(self._send_cancel, order_id, key)
            if budget is None or budget.send(f"{key}:cancel", Lane.CANCEL_MODIFY, send) is not None:
                send()

    def _send_cancel(self, order_id: int, key: str) -> None:
        self._broker.cancel_order(order_id)
        if self.on_cancel_sent is not None and key in self.orders:
            self.on_cancel_sent(self.orders[key])

    def _place_released(self, record: OrderRecord) -> None:
        """The budget let the order go: it goes, unless it was cancelled (or sent) while it waited."""
        if record.status is OrderStatus.SUBMITTING and record.order_id is None:
            self._place(record)

    def _refused_by_budget(self, record: OrderRecord, reason: str) -> None:
        """An entry the budget would not queue, or that waited too long: refused with the reason, never sent."""
        if record.final:  # cancelled while it waited
            return
        self.on_status(OrderStatusEvent(-1, record.intent.key, OrderStatus.REJECTED, record.filled,
                                        record.intent.qty - record.filled, self._clock(), reason, -1), record)

    def holds_final(self, key: str) -> bool:
        """Is ``key`` an order of this engine in a final state (``KnownToEngine.ended``)?"""
        record = self.orders.get(key)
        if record is None:
            status = self.journaled_over.get(key)
            return status is not None and status.is_final
        return record.final

    def apply_found(self, record: OrderRecord, event: FillEvent) -> bool:
        """An execution of ``record``'s found in the broker's book (recovery, reconciliation), applied once and only
        to one order: one applied to another order already is refused (ERROR, ``misrouted_fills``: a book that
        listed one execution under two orders had it applied to both); else the order is adopted under the
        execution's order id when they differ, then the execution applied.  Found by an independent review: the
        adoption came first, and moved the order onto the other order's id - that order's later fills then went
        to this one, and a cancel of this one cancelled the other."""
        if event.exec_id in self.applied_execs and event.exec_id not in record.exec_ids:
            # applied to another order already: a book names it for this one too (an IB exec id is one execution)
            self.misrouted_fills += 1
            log.error("order %s: execution %s (%s @ %s, order id %s) in the broker's book was applied to another "
                      "order already - not applied again", record.intent.key, event.exec_id, event.qty, event.price,
                      event.order_id)
            self._note(record, "execution_of_another_order", {"exec_id": event.exec_id, "qty": event.qty,
                                                              "price": event.price})
            return False
        if event.exec_id not in record.exec_ids and record.order_id != event.order_id:
            self.adopt(record.intent.key, event.order_id)
        return self.apply_fill(record, event)

    def remember_over(self, key: str, status: OrderStatus, exec_ids: set[str]) -> None:
        """An order of this journal whose trade was over before this start: known by its key (never a stray while
        it is not working at the broker), its executions applied already."""
        self.journaled_over[key] = status
        self.looked_up.add(key)
        self.applied_execs.update(exec_ids)

    def exits_waiting(self) -> bool:
        """Is an exit journaled and waiting for its commit to be sent?"""
        return any(record.intent.is_exit for record in self._outgoing.waiting())

    def waiting_orders(self) -> list[OrderRecord]:
        """Orders journaled and waiting for their commit to be sent."""
        return self._outgoing.waiting()

    @property
    def unjournaled(self) -> int:
        """Orders and cancels never sent because their journal transaction rolled back."""
        return self._outgoing.unjournaled + self._cancels_out.unjournaled

    def _withhold(self, record: OrderRecord) -> None:
        """An order of a halted trade that has not left never does: closed as cancelled, unsent."""
        self.withheld += 1
        log.error("order %s not sent: trade %s is halted (over-fill)", record.intent.key, record.intent.trade_id)
        self._close(record, OrderStatus.CANCELLED, f"not sent: trade {record.intent.trade_id} is halted")

    def _place(self, record: OrderRecord) -> None:
        intent = record.intent
        if intent.trade_id in self.halted:
            self._withhold(record)
            return
        order = broker_order(intent, record.filled)
        try:
            order_id = self._broker.place_order(order)
        except NotConnected as exc:
            self._hold(record, str(exc))
            return
        except Exception as exc:  # the adapter could not even hand it over (no contract, socket gone)
            self._note(record, "send_failed", {"reason": str(exc)})
            self.on_status(OrderStatusEvent(-1, intent.key, OrderStatus.REJECTED, record.filled,
                                            intent.qty - record.filled, self._clock(), str(exc), 0), record)
            return
        record.order_id = order_id
        self._by_order_id[order_id] = record
        self._note(record, "sent", {"order_id": order_id})
        if self.on_sent is not None:
            self.on_sent(record)

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

    def _hold(self, record: OrderRecord, reason: str) -> None:
        """The connection is down and nothing left: not a refusal, so the attempt does not count and the order
        is never given up on - the same key goes again, every ``backoff`` doubling up to 5 s, until the
        connection (and the adapter's reconciliation) is back."""
        record.attempts -= 1
        record.held += 1
        self._note(record, "held", {"reason": reason})
        if self._move(record, OrderStatus.RETRY_WAIT, "not connected").moved:
            pause = min(self._backoff_ns * 2 ** min(record.held - 1, 20), _MAX_HOLD_NS)
            heapq.heappush(self._retries, (self._clock() + pause, next(self._seq), record.intent.key))

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
        if event.ref and event.ref != record.intent.key:  # routed by its order id to an order of another key
            self.misrouted_fills += 1
            log.error("execution %s (%s @ %s) of order id %s names order %s, but that id is order %s's here - not "
                      "applied", event.exec_id, event.qty, event.price, event.order_id, event.ref, record.intent.key)
            self._note(record, "execution_of_another_order", {"exec_id": event.exec_id, "qty": event.qty,
                                                              "price": event.price, "ref": event.ref})
            return
        self.apply_fill(record, event)

    foreign_fills = 0  # executions refused: their account, symbol or side is not their order's (see _foreign)
    misrouted_fills = 0  # executions refused: of another order (on_fill's key, apply_found's exec id)

    def _foreign(self, record: OrderRecord, event: FillEvent) -> list[str]:
        """How a fill differs from its order's intent in account, symbol or side (empty: it is the order's).
        Equality decides; an intent without an account (the connection's default account) is not compared."""
        intent = record.intent
        return [f"{name} {seen!r} != the order's {want!r}" for name, seen, want in (
            ("account", event.account, intent.account), ("symbol", event.symbol, intent.symbol),
            ("action", event.action, intent.action)) if seen != want and (name != "account" or want)]

    def apply_fill(self, record: OrderRecord, event: FillEvent) -> bool:
        """Apply an execution to its order, once per exec id; returns whether it was new.  The same execution
        again (a reconnect, a reconciliation, a restart) is logged and brings at most a commission not yet had.
        A fill whose account, symbol or side is not its order's is foreign: never applied (ERROR, counted).  (An
        exec id applied to another order is refused where a book names it, ``apply_found``: events are routed by
        their order id and key, ``on_fill``, and the simulator numbers a new run's executions from 1 again.)"""
        why = self._foreign(record, event)
        if why:
            self.foreign_fills += 1
            log.error("order %s: foreign execution %s (%s @ %s, order id %s) not applied: %s", record.intent.key,
                      event.exec_id, event.qty, event.price, event.order_id, "; ".join(why))
            self._note(record, "foreign_execution", {"exec_id": event.exec_id, "qty": event.qty, "price": event.price,
                                                     "account": event.account, "symbol": event.symbol, "why": why})
            return False
        if event.exec_id in record.exec_ids:
            self.replays += 1
            log.info("order %s: execution %s seen again (replayed after a reconnect or restart) - applied once "
                     "already, ignored", record.intent.key, event.exec_id)
            if event.commission is not None:
                self._apply_commission(record, event.exec_id, event.commission)
            return False
        record.exec_ids.add(event.exec_id)
        self.applied_execs.add(event.exec_id)
        execution = Execution(event.exec_id, record.intent.qty, record.filled, event.qty)
        total = record.filled + event.qty  # the order record holds the whole execution: it happened
        record.notional += event.price * event.qty
        record.filled = total
        commission = self._fill_commission(record, event)
        after = after_fill(record.status, complete=total >= record.intent.qty)
        if after is not OrderStatus.FILLED:
            self._move(record, after, "partial fill")
        self._note(record, "fill", {"exec_id": event.exec_id, "qty": event.qty, "price": event.price,
                                    "commission": record.commissions.get(event.exec_id), "fill_ts_ns": event.ts_ns})
        # the trade gets only what fits the order (exact: one share too many is an over-fill, never "close enough")
        over = self._listener.on_fill(record.intent, execution.fits, event.price, event.ts_ns, commission, execution)
        if over is not None or execution.fits != execution.qty:
            self._overfilled(record, execution, over)
        if record.final:  # it was final before this fill: the money is applied, the state stays
            self.late_fills += 1
            log.warning("order %s: fill %s (%g @ %g) after the order was %s - recorded, state kept",
                        record.intent.key, event.exec_id, event.qty, event.price, record.status)
        elif after is OrderStatus.FILLED:
            self._close(record, OrderStatus.FILLED, "")
        return True

    def _overfilled(self, record: OrderRecord, execution: Execution, over: Overfill | None) -> None:
        """An excess was refused: the trade is halted, and nothing more is sent for it."""
        self.overfills += 1
        self.halted.add(record.intent.trade_id)
        over = over or Overfill.of_order(record.intent, execution)  # a listener that does not say: the order's
        working = [k for k, r in self.orders.items() if r.intent.trade_id == over.trade_id and r.status.at_broker
                   and r is not record]
        log.error("%s; nothing more is sent for it, left for the user (working at the broker: %s)", over.describe(),
                  ", ".join(working) or "none")
        self._note(record, "overfill", {**over.to_dict(), "working": working})

    def _fill_commission(self, record: OrderRecord, event: FillEvent) -> Decimal:
        """The commission a new execution brings: its own, or one reported before it; counted once."""
        held = record.held_commissions.pop(event.exec_id, None)
        amount = held if held is not None else event.commission
        if amount is None or event.exec_id in record.commissions:
            return ZERO
        record.commissions[event.exec_id] = amount
        record.commission += amount
        return amount

    def on_commission(self, event: CommissionEvent) -> None:
        record = self._by_order_id.get(event.order_id)
        if record is None:
            self.unknown_events += 1
            return
        self._apply_commission(record, event.exec_id, event.commission)

    def _apply_commission(self, record: OrderRecord, exec_id: str, amount: Decimal) -> None:
        """A commission counts once per execution id, whether it came with the fill, in a report of its own,
        or again after a reconnect; one that arrives before its execution waits for it."""
        if exec_id in record.commissions:
            self.replays += 1
            log.info("order %s: commission of execution %s seen again (%s) - counted once already, ignored",
                     record.intent.key, exec_id, amount)
            return
        if exec_id not in record.exec_ids:
            record.held_commissions[exec_id] = amount
            log.info("order %s: commission of execution %s came before the execution; held until it arrives",
                     record.intent.key, exec_id)
            return
        record.commissions[exec_id] = amount
        record.commission += amount
        self._note(record, "commission", {"exec_id": exec_id, "commission": amount})
        self._listener.on_commission(record.intent, amount)

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
            if new in AT_BROKER:
                self.at_broker[record.intent.key] = record
            else:
                self.at_broker.pop(record.intent.key, None)
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
        self.applied_execs.update(exec_ids)
        self.orders[record.intent.key] = record
        if record.status in AT_BROKER:
            self.at_broker[record.intent.key] = record
        # an id of another IB client's numbering is not this session's: it must never route or cancel one of ours
        if holds_elsewhere(record.placed_through, self.session) and not record.final:
            self.held_elsewhere.add(record.intent.key)
        elif record.order_id is not None and not record.final:
            self._by_order_id[record.order_id] = record

    def take_over(self, record: OrderRecord) -> None:
        """An order of this journal found at the broker that the journal never recorded (``stray_orders``):
        journaled now, its events routed, its key known - so it is never sent a second time."""
        self.restore(record, set())
        record.placed_through = self.session  # found through this session
        self._note(record, "found_at_broker", {"order_id": record.order_id})

    def adopt(self, key: str, order_id: int) -> OrderRecord | None:
        """The broker knows this key under ``order_id``: route its events to the journaled record."""
        record = self.orders.get(key)
        if record is None:
            return None
        if record.order_id is not None and record.order_id != order_id:
            self._by_order_id.pop(record.order_id, None)
        record.order_id = order_id
        self._by_order_id[order_id] = record
        record.placed_through = self.session  # seen through this session
        if not record.final:
            self._move(record, acknowledged(record.status, record.filled > 0), "adopted from the broker")
        self._note(record, "adopted", {"order_id": order_id})
        return record

    def resend(self, record: OrderRecord) -> bool:
        """Send again an order the broker never received (journaled in flight, unknown at the broker); returns
        False if it is not sent because its trade is halted (it is closed as cancelled instead).

        One the journal says the broker held goes through ``unknown`` first: its state could not be
        established, and the history shows it."""
        if record.status.at_broker and self._move(record, OrderStatus.UNKNOWN, "the broker does not know it").moved:
            self._note(record, "unknown", {"reason": "journaled as at the broker, unknown there"})
        record.placed_through = self.session  # sent again through this one
        self._send(record)
        return record.intent.trade_id not in self.halted

    def mark_unknown(self, record: OrderRecord, reason: str) -> None:
        """The broker was asked and does not know this order: its state could not be established."""
        if self._move(record, OrderStatus.UNKNOWN, reason).moved:
            self._note(record, "unknown", {"reason": reason})

    def close_from_broker(self, record: OrderRecord, status: OrderStatus, reason: str) -> None:
        self._note(record, status.value, {"reason": reason, "from": "reconciliation"})
        self._close(record, status, reason)

    def _note(self, record: OrderRecord, kind: str, data: dict[str, Any]) -> None:
        entry = {"ts_ns": self._clock(), "event": kind, **data}
        record.events.append(entry)
        if self.on_event is not None:
            self.on_event(record, kind, entry)
