"""A small in-process stand-in for the engine, for crash scenarios of recovery (written by an independent review):
the real trade manager, journal recorder, executor and journal, with a broker that records what it is handed;
``flush`` is ``Engine._flush`` (submit, cancels, an exit's commit = ``commit_now(early=True)``); ``restart`` opens
the journal again in fresh objects, restores and reconciles against a given ``OrderBook`` (what IB would say)."""

from __future__ import annotations

import contextlib
from decimal import Decimal

from tickguard.adapters.broker import FillEvent, OrderBook, OrderStatusEvent
from tickguard.core.order_state import OrderStatus
from tickguard.core.trade_manager import TradeManager
from tickguard.runtime.journal_recorder import JournalRecorder
from tickguard.runtime.order_executor import OrderExecutor
from tickguard.runtime.recovery import reconcile, restore
from tickguard.store.journal import Journal


class Crash(BaseException):
    pass


class FakeBroker:
    def __init__(self) -> None:
        self.placed: list = []  # BrokerOrder
        self.cancelled: list[int] = []
        self.ids: dict[str, int] = {}
        self._next = 100

    def place_order(self, order) -> int:
        self._next += 1
        self.placed.append(order)
        self.ids[order.ref] = self._next
        return self._next

    def cancel_order(self, order_id: int) -> None:
        self.cancelled.append(order_id)


class Rig:
    def __init__(self, target, clock, market, broker: FakeBroker | None = None) -> None:
        self.target, self.clock, self.market = target, clock, market
        self.journal = Journal.open(target)
        self.tm = TradeManager(clock, market.vol.get, market.quotes.get, instance_id=self.journal.journal_id)
        self.recorder = JournalRecorder(self.journal, self.tm, 0)
        self.tm.on_event = self.recorder.on_trade_event
        self.broker = broker or FakeBroker()
        self.ex = OrderExecutor(self.broker, self.tm, clock, journal=self.journal,
                                on_event=self.recorder.on_order_event)
        self.exec_n = 0

    def flush(self) -> None:
        tm = self.tm
        while tm.outbox or tm.cancels:
            intents, tm.outbox = tm.outbox, []
            exits = False
            for intent in intents:
                exits = exits or intent.is_exit
                self.ex.submit(intent)
            cancels, tm.cancels = tm.cancels, []
            for key in cancels:
                self.ex.cancel(key)
            if exits and self.ex.exits_waiting():
                self.journal.commit_now(early=True)

    @contextlib.contextmanager
    def step(self):
        with self.journal.batch():
            yield
            self.flush()

    def ack(self, key: str) -> None:
        r = self.ex.orders[key]
        self.ex.on_status(OrderStatusEvent(r.order_id, key, OrderStatus.SUBMITTED, r.filled, r.intent.qty - r.filled,
                                           self.clock()))

    def fill(self, key: str, qty, price, commission=None) -> FillEvent:
        r = self.ex.orders[key]
        self.exec_n += 1
        ev = FillEvent(r.order_id, key, f"E{self.exec_n}", r.intent.account, r.intent.symbol, r.intent.action,
                       Decimal(qty), Decimal(str(price)), self.clock(), commission)
        self.ex.on_fill(ev)
        return ev

    def reject(self, key: str, reason: str = "no") -> None:
        r = self.ex.orders[key]
        self.ex.on_status(OrderStatusEvent(r.order_id, key, OrderStatus.REJECTED, r.filled, r.intent.qty - r.filled,
                                           self.clock(), reason, 201))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.journal.close()

    def restart(self, book: OrderBook | None = None):
        """A new process on the same journal: restore, then (if ``book``) reconcile + the start batch's flush."""
        self.close()
        new = Rig(self.target, self.clock, self.market, FakeBroker())
        new.report = restore(new.journal, new.tm, new.ex)
        new.after_restore_outbox = list(new.tm.outbox)
        if book is not None:
            with new.journal.batch():
                reconcile(book, new.tm, new.ex, new.report, None)
                new.flush()
        return new


def empty_book(complete: bool = True) -> OrderBook:
    return OrderBook({}, {}, [], {}, "", complete)
