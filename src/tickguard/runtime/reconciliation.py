"""Reconciliation while running: the acknowledgement deadline of every order in flight, and a periodic comparison
of the broker's order book with the journal (the start-up comparison of ``recovery.py``, again and again).

* **Acknowledgement deadline.**  An order sent (``submitting``) and not acknowledged within ``ack_timeout`` is
  *questioned*: logged at WARNING with its key and age, and the broker's order book is fetched out of band (the
  engine runs ``broker.order_book()`` as a task; the loop never waits on it) and applied in a later step, inside
  the step's journal batch.  Known at the broker → adopted (acknowledged); ended there → closed with the
  broker's status; executions → applied once (the executor dedupes by exec id).
* **The re-send decision.**  An order is re-sent (same key, through ``unknown``) only when a *complete* order
  book - working orders, completed orders and executions - fetched after the deadline does not know its key.
  The fetch starts after the order was handed over, on the same connection or a later one, so a broker that
  processes one connection's messages in order (IB does) would list an order it ever received: a complete book
  without the key says it never arrived.  An incomplete book (an exception, or ``OrderBook.complete`` False,
  e.g. IB's completed orders could not be had) is no answer: nothing is re-sent, the order stays questioned and
  is checked again at the next pass.
* **The periodic pass**, every ``interval`` and after every reconnect notice (1101, 1102, the adapter's
  "reconnected"): executions since the last pass (one of ours the journal lacks is applied once; one whose
  key no order of this journal has is a difference), open orders with our key vs the executor's records, and
  positions per (account, symbol) vs the journal's trades (``recovery.position_differences``).  Positions are
  never "fixed".
* **Differences** are reported as ``UNRECONCILED: ...`` at ERROR with the figures, once per episode: a new
  difference is confirmed by a second pass ``retry`` later (a fill in flight between the broker's snapshot and
  its event is not a difference), then raised, kept in ``Reconciliation.differences`` until a pass no longer
  sees it, and listed in ``alerts``.
* **Incomplete**: new entries wait (the engine holds them, exits are never held) until a complete pass; the
  next pass comes ``retry`` later.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import compress
from operator import attrgetter, not_

from tickguard.adapters.broker import NoticeEvent, OrderBook
from tickguard.core.order_state import AT_BROKER, OrderStatus
from tickguard.core.trade_manager import TradeManager
from tickguard.runtime.order_executor import OrderExecutor, OrderRecord
from tickguard.runtime.order_record import holds_elsewhere
from tickguard.runtime.recovery import (
    RecoveryReport,
    ours_only,
    position_differences,
    settle,
    unjournaled_execution,
)
from tickguard.runtime.stray_orders import take_over_strays

log = logging.getLogger(__name__)

_EXEC_ID = attrgetter("exec_id")
RECONNECT_CODES = frozenset({1101, 1102})  # IB: connectivity restored (data lost / kept)


def is_reconnect(event: NoticeEvent) -> bool:
    """1101 / 1102, or the adapter's own notice after it re-established a dropped socket (code 0)."""
    return event.code in RECONNECT_CODES or (event.code == 0 and event.message.startswith("reconnected"))


@dataclass
class Reconciliation:
    """What the engine knows of its agreement with the broker (``engine.reconciliation``)."""

    last_pass_ns: int | None = None  # the last complete pass
    passes: int = 0
    incomplete: bool = False  # the last pass could not fetch the whole book: new entries wait
    incomplete_since_ns: int | None = None
    differences: dict[str, int] = field(default_factory=dict)  # raised and still seen: line -> raised at
    alerts: list[tuple[int, str]] = field(default_factory=list)  # every UNRECONCILED raised, once per episode
    questioned: list[tuple[int, str, float]] = field(default_factory=list)  # (at, key, age in s) past the deadline
    resolved: list[tuple[str, str]] = field(default_factory=list)  # (key, how) questioned orders resolved


class Reconciler:
    def __init__(self, executor: OrderExecutor, trades: TradeManager, clock: Callable[[], int], journal_id: str,
                 interval_ns: int, retry_ns: int, ack_timeout_ns: int, full_every: int = 1) -> None:
        self.state = Reconciliation()
        self._executor, self._trades, self._clock, self._journal_id = executor, trades, clock, journal_id
        self._interval, self._retry, self._ack = interval_ns, retry_ns, ack_timeout_ns
        self._acks: list[tuple[int, int, str, int]] = []  # (deadline, seq, key, broker order id)
        self._seq = itertools.count()
        self._questioned: dict[str, int] = {}  # key -> the broker order id it was questioned under
        self._deferred: set[str] = set()  # in flight at a restart whose book was incomplete
        self._suspect: set[str] = set()  # differences seen once, to be confirmed
        self._seen_execs: set[str] = set()
        self._due: int | None = None
        self.wanted = ""  # why a check of the book is due now (the engine starts it)
        self.running = False
        self.full = True  # whether the check begun asks the broker for everything (broker.order_book(full))
        self._full_every, self._routine = max(1, full_every), 0
        self.cancel_stray: Callable[[int], None] | None = None  # how an order of ours no live trade owns is cancelled
        # looks up in the journal the book's keys no order of the executor has (recovery.remember_orders_over)
        self.remember_over: Callable[[OrderBook], None] | None = None

    # -------------------------------------------------------------------------------------- schedule

    def baseline(self, book: OrderBook | None, now_ns: int) -> None:
        """The start-up book (already reconciled by ``recovery``): its executions are not news."""
        if book is not None:
            self._seen_execs = {f.exec_id for f in book.executions}
            self._set_complete(book.complete, now_ns)
        self._due = now_ns + (self._retry if self.state.incomplete else self._interval)

    def defer(self, keys: list[str]) -> None:
        """Orders recovery could not decide (the start-up book was incomplete): settled at the first complete
        pass, as recovery would have - adopted, closed as the broker ended them, or re-sent if unknown there."""
        self._deferred.update(keys)

    def on_sent(self, record: OrderRecord) -> None:
        if record.order_id is not None:
            heapq.heappush(self._acks, (self._clock() + self._ack, next(self._seq), record.intent.key,
                                        record.order_id))

    def on_notice(self, event: NoticeEvent) -> None:
        if is_reconnect(event):
            self.wanted = self.wanted or f"reconnect ({event.code})"

    def next_deadline(self) -> int | None:
        acks = self._acks
        while acks and not self._unacknowledged(acks[0][2], acks[0][3]):
            heapq.heappop(acks)
        ack = acks[0][0] if acks else None
        due = None if self.running else self._due
        return min((d for d in (ack, due) if d is not None), default=None)

    def _unacknowledged(self, key: str, order_id: int) -> bool:
        record = self._executor.orders.get(key)
        return record is not None and record.status is OrderStatus.SUBMITTING and record.order_id == order_id

    def on_time(self, now_ns: int) -> None:
        while self._acks and self._acks[0][0] <= now_ns:
            deadline, _, key, order_id = heapq.heappop(self._acks)
            if self._unacknowledged(key, order_id) and key not in self._questioned:
                age = (now_ns - deadline + self._ack) / 1e9
                log.warning("order %s: no acknowledgement %.1f s after it was sent (broker id %s); asking the broker",
                            key, age, order_id)
                self.state.questioned.append((now_ns, key, age))
                self._questioned[key] = order_id
                self.wanted = self.wanted or "acknowledgement deadline"
        if self._due is not None and now_ns >= self._due and not self.running:
            self.wanted = self.wanted or "interval"

    def begin(self) -> str:
        """The engine starts a fetch of the book now; returns why.  ``full`` says whether it asks for the whole
        day: always after a reconnect or an incomplete pass, and on one routine pass in ``full_every`` (the others
        - the interval, an acknowledgement deadline - read what the live connection reported: ``Broker.order_book``)."""
        why, self.wanted, self.running = self.wanted, "", True
        # an acknowledgement deadline is a question about orders of this connection, which it has heard about if
        # the broker answered at all: a routine pass answers it (a full one after 5,000 entries is a 1.5 s read
        # that holds the loop - the wire-to-wire benchmark's longest stalls after an entry storm)
        routine = why in ("interval", "acknowledgement deadline") and not self.state.incomplete
        self._routine = self._routine + 1 if routine else 0
        self.full = not routine or self._routine % self._full_every == 0
        return why

    # ----------------------------------------------------------------------------------------- apply

    def apply(self, result: OrderBook | BaseException, now_ns: int) -> None:
        """The fetched book (or why it could not be fetched), inside the engine step's journal batch."""
        self.running = False
        complete = isinstance(result, OrderBook) and result.complete
        self._set_complete(complete, now_ns, result if isinstance(result, BaseException) else None)
        self._due = now_ns + (self._retry if not complete else self._interval)
        if not isinstance(result, OrderBook) or not complete:
            return
        if self.remember_over is not None:
            self.remember_over(result)
        book = ours_only(result, self._executor, RecoveryReport(journal_id=self._journal_id))
        taken: list[str] = []
        found: list[str] = []
        take_over_strays(book, self._trades, self._executor, self._journal_id, taken, found, self.cancel_stray)
        for line in taken:
            self.state.resolved.append((line.split(" ", 1)[0], "found at the broker, never journaled: taken over"))
        found += self._executions(book)
        self._settle_deferred(book)
        self._resolve_questioned(book)
        found += self._open_orders(book) + position_differences(result, self._trades)
        self._report(found, now_ns)
        self.state.last_pass_ns = now_ns
        self.state.passes += 1

    def _set_complete(self, complete: bool, now_ns: int, error: BaseException | None = None) -> None:
        st = self.state
        if complete and st.incomplete:
            log.warning("reconciliation complete again; new entries may go out")
            st.incomplete, st.incomplete_since_ns = False, None
        elif not complete and not st.incomplete:
            log.error("reconciliation INCOMPLETE (%s): new entries wait, exits still go out; asking again in %.0f s",
                      error or "the broker's order book is partial", self._retry / 1e9)
            st.incomplete, st.incomplete_since_ns = True, now_ns

    def _executions(self, book: OrderBook) -> list[str]:
        """Executions since the last pass: ours the journal lacks are applied once; others are differences.

        The day's executions are filtered in C (``compress`` over set lookups), not looked at one by one: those this
        reconciler saw at an earlier pass, then those the executor has applied already (heard as events) - at
        5,000 trades the first pass after the entries' fills walked all of them in Python, ~6 ms of an 11 ms hold
        of the event loop, the longest exits of ``bench/wire_to_wire.py`` at 10,000 quotes/s.  What is left (an
        execution the engine never heard: none, on a healthy connection) is looked at as before.  One no order of
        the executor's takes is a difference at every pass, until it is gone (it was said once and never raised:
        a difference is raised when two passes in a row see it)."""
        out: list[str] = []
        seen = self._seen_execs
        unseen = list(compress(book.executions, map(not_, map(seen.__contains__, map(_EXEC_ID, book.executions)))))
        if not unseen:  # the routine case: the day's executions, all seen
            return out
        executor = self._executor
        applied = executor.applied_execs
        news = list(compress(unseen, map(not_, map(applied.__contains__, map(_EXEC_ID, unseen)))))
        seen.update(map(_EXEC_ID, unseen))  # an execution applied already is no news
        for fill in news:
            record = executor.orders.get(fill.ref)
            if record is None:
                seen.discard(fill.exec_id)  # said again at the next pass: a standing difference
                out.append(unjournaled_execution(fill) if fill.ref in executor.journaled_over else
                           f"{fill.account} {fill.symbol}: execution {fill.exec_id} of {fill.ref} ({fill.action} "
                           f"{fill.qty} @ {fill.price}) at the broker, no such order in the journal")
            elif fill.exec_id not in record.exec_ids and executor.apply_found(record, fill):
                log.warning("order %s: execution %s (%s @ %s) found at the broker, not yet heard; applied once",
                            fill.ref, fill.exec_id, fill.qty, fill.price)
        return out

    def _settle_deferred(self, book: OrderBook) -> None:
        for key in sorted(self._deferred):
            record = self._executor.orders.get(key)
            if record is None or record.final:
                continue
            if key in book.working:
                self._executor.adopt(key, book.working[key][0])
                how = "adopted: working at the broker"
            else:
                report = RecoveryReport()
                settle(key, record, book, self._executor, report, "(decided at the first complete reconciliation)")
                how = ("re-sent: unknown at the broker" if report.resent
                       else "NOT re-sent: placed through another IB client" if report.unseen
                       else f"{record.status} at the broker")
            log.warning("order %s, in flight at the restart: %s", key, how)
            self.state.resolved.append((key, how))
        self._deferred.clear()

    def _resolve_questioned(self, book: OrderBook) -> None:
        for key, order_id in list(self._questioned.items()):
            del self._questioned[key]
            record = self._executor.orders[key]
            if not self._unacknowledged(key, order_id):
                how = f"{record.status} meanwhile"
            elif key in book.working:
                self._executor.adopt(key, book.working[key][0])
                how = "adopted: working at the broker"
            elif key in book.ended:
                if book.ended[key][0]:  # 0: the broker did not say which id (IB's completed orders)
                    self._executor.adopt(key, book.ended[key][0])
                settle(key, record, book, self._executor, RecoveryReport(), "(found by the acknowledgement check)")
                how = f"{book.ended[key][1]} at the broker"
            else:
                self._executor.mark_unknown(record, "not acknowledged, unknown to the broker's complete order book")
                settle(key, record, book, self._executor, RecoveryReport())
                how = "unknown at the broker: re-sent with the same key"
            log.warning("order %s: %s", key, how)
            self.state.resolved.append((key, how))

    def _open_orders(self, book: OrderBook) -> list[str]:
        """Working orders at the broker vs the executor's records, both ways."""
        out: list[str] = []
        for key, (order_id, filled) in sorted(book.working.items()):
            record = self._executor.orders.get(key)
            if record is None and key in self._executor.journaled_over:
                continue  # an order of a trade over before this start: cancelled and reported (stray_orders.py)
            if record is None or record.final:
                said = "no such order" if record is None else f"{record.status}"
                out.append(f"order {key}: working at the broker (id {order_id}, filled {filled}), journal: {said}")
            elif filled != record.filled:
                out.append(f"order {key}: filled {filled} at the broker, {record.filled} in the journal")
        # the records at the broker (the executor keeps them as their states change: every order of the day is in
        # ``orders``, few still at the broker), then sorted
        orders = self._executor.orders
        at_broker = list(self._executor.at_broker.items())
        # and those held: in flight through another IB client, whatever their state (runtime/recovery.py) - a few
        at_broker += [(key, r) for key in self._executor.held_elsewhere if (r := orders[key]).status not in AT_BROKER
                      and not r.final and r.status is not OrderStatus.RETRY_WAIT
                      and holds_elsewhere(r.placed_through, self._executor.session)]
        for key, record in sorted(at_broker):
            if key not in book.working and key not in self._questioned:
                there = f"{book.ended[key][1]}" if key in book.ended else "unknown"
                out.append(f"order {key}: {record.status} in the journal, {there} at the broker")
        return out

    def _report(self, found: list[str], now_ns: int) -> None:
        """Raise a difference seen twice in a row, once per episode; forget one no longer seen."""
        st, current, suspects = self.state, set(found), set()
        for line in found:
            if line in st.differences:
                continue
            if line in self._suspect:
                st.differences[line] = now_ns
                st.alerts.append((now_ns, line))
                log.error("UNRECONCILED: %s", line)
            else:
                suspects.add(line)
        for line in [d for d in st.differences if d not in current]:
            del st.differences[line]
            log.warning("reconciled again: %s", line)
        self._suspect = suspects
        if suspects and self._due is not None:
            self._due = min(self._due, now_ns + self._retry)
