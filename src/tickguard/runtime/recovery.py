"""Recovery on start: rebuild open trades and in-flight orders from the journal, then reconcile with the
broker by idempotency key (IB's ``orderRef``).

The rules, in order of how much money they protect:
* an order the broker knows (working, ended or executed) is adopted, never sent again;
* an execution the journal lacks (a fill while the engine was down) is applied once;
* an order journaled as in flight (``submitting``, ``submitted``, ``partially_filled``, ``retry_wait``,
  ``unknown``) that the broker has never seen did not leave: it is sent now, with the same key;
* an order journaled as ``cancelling`` that the broker has never seen is closed as cancelled (what the
  cancel wanted), never sent;
* a trade that was closing with nothing in flight gets its exit sent now, and a level crossed while the
  engine was down fires on the first tick (every level compares against the whole price, not a move);
* what cannot be reconciled - a position the journal does not explain - is reported and left alone;
* a trade halted by an over-fill (``core/halts.py``) is restored halted, with its levels unarmed and its timers
  off; nothing is resumed or re-sent for it (an order of it that never left is closed as cancelled), and its
  evidence is repeated as an UNRECONCILED line of the report at every start until a person deals with it;
* an order or execution with this journal's id that the journal does not hold (sent, then a crash before its
  commit) is taken over by its trade, never sent again (``stray_orders``);
* an order or execution whose key carries another journal's id (``tg:<other id>:...``) is foreign: reported,
  never adopted or applied.  Keys journaled before journals had ids (``tg:T00001:entry``) are matched only
  against this journal's own orders.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import chain, compress, filterfalse, repeat
from operator import attrgetter, not_
from typing import Any, TypeVar

from tickguard.adapters.broker import FillEvent, OrderBook
from tickguard.core.model import OrderIntent, TradeState
from tickguard.core.money import ZERO, exact
from tickguard.core.order_state import OrderStatus
from tickguard.core.trade_manager import TradeManager
from tickguard.core.trades import TradeRequest
from tickguard.runtime.order_executor import OrderExecutor, OrderRecord
from tickguard.runtime.order_record import holds_elsewhere
from tickguard.runtime.stray_orders import take_over_strays
from tickguard.store.journal import Journal

log = logging.getLogger(__name__)

_JOURNAL_ID = re.compile(r"tg:([0-9a-f]{8}):")  # the journal id in a key (tg:<journal id>:<trade>:<leg>...)
_OWN_ID = re.compile(r"[0-9a-f]{8}")  # a journal id as _JOURNAL_ID reads it
_REF = attrgetter("ref")
T = TypeVar("T")
V = TypeVar("V")

# Journaled states of an order that, unknown at the broker, never left: send it again (same key).
RESEND = frozenset({OrderStatus.SUBMITTING, OrderStatus.SUBMITTED, OrderStatus.PARTIALLY_FILLED,
                    OrderStatus.RETRY_WAIT, OrderStatus.UNKNOWN})


@dataclass
class RecoveryReport:
    trades: int = 0
    orders: int = 0
    adopted: list[str] = field(default_factory=list)
    fires_adopted: list[str] = field(default_factory=list)  # exits journaled before their trade's snapshot
    resent: list[str] = field(default_factory=list)
    fills_applied: list[str] = field(default_factory=list)
    closed_at_broker: list[str] = field(default_factory=list)
    withheld: list[str] = field(default_factory=list)  # never left, not sent now: their trade is halted
    deferred: list[str] = field(default_factory=list)  # in flight, broker's book incomplete: decided later
    mismatches: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    unseen: list[str] = field(default_factory=list)  # in flight through another broker session: held, not re-sent
    journal_id: str | None = None

    def lines(self) -> list[str]:
        out = [f"recovered {self.trades} open trade(s), {self.orders} order(s)"]
        if self.adopted:
            out.append(f"adopted from the broker (not re-sent): {', '.join(self.adopted)}")
        if self.fires_adopted:
            out.append("exits journaled just before the restart, ahead of their trade's snapshot (counted as fired, "
                       f"not decided again): {', '.join(self.fires_adopted)}")
        if self.fills_applied:
            out.append(f"fills that happened while down, applied: {', '.join(self.fills_applied)}")
        if self.resent:
            out.append(f"never reached the broker, sent now: {', '.join(self.resent)}")
        if self.closed_at_broker:
            out.append(f"ended at the broker while down: {', '.join(self.closed_at_broker)}")
        if self.withheld:
            out.append(f"never reached the broker, NOT sent (trade halted), closed: {', '.join(self.withheld)}")
        if self.deferred:
            out.append("in flight, NOT re-sent yet (the broker's order book is incomplete, so it may have ended "
                       f"there): {', '.join(self.deferred)} - decided at the first complete reconciliation")
        if self.foreign:
            out.append(f"another journal's orders at the broker (not ours, left alone): {', '.join(self.foreign)}")
        if self.unseen:
            out.append("UNRECONCILED: in flight through another IB client than this engine's, NOT re-sent - IB "
                       "shows a client only its own orders, so not finding them proves nothing; left open (each "
                       "reconciliation reports them) - start with the client that placed them to recover them: "
                       f"{', '.join(self.unseen)}")
        out += [f"UNRECONCILED: {m}" for m in self.mismatches]
        return out


OVER_WINDOW_NS = 7 * 86_400 * 1_000_000_000  # how far back the broker's book may list an order (IB: a week's fills)


def restore(journal: Journal, trades: TradeManager, executor: OrderExecutor) -> RecoveryReport:
    """Load open trades and their orders from the journal into the engine (no broker contact yet)."""
    report = RecoveryReport(journal_id=journal.journal_id)
    if trades.key_prefix != f"tg:{journal.journal_id}:":
        raise ValueError(f"the trade manager makes keys {trades.key_prefix}..., not with this journal's id "
                         f"{journal.journal_id}")
    trades.reserve_ids(journal.max_trade_number())
    trades.reserve_refs(journal.known_refs())
    rows = journal.open_trades()
    ids = [r["trade_id"] for r in rows]
    order_rows = journal.orders_of(ids)
    entry_keys = {o["trade_id"]: o["order_key"] for o in order_rows if o["leg"] == "entry"}
    for row in rows:
        request = TradeRequest.model_validate(row["request"])
        trade = trades.restore(row["trade_id"], request, row["snapshot"], row["created_ns"],
                               entry_keys.get(row["trade_id"]))
        if trade.state is TradeState.HALTED:
            executor.halted.add(trade.id)  # none of its orders is sent again, by the executor's own rule
    fills: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in journal.fills_of(ids):
        fills[f["order_key"]].append(f)
    for row in order_rows:
        executor.restore(journaled_order(row, fills[row["order_key"]]), {f["exec_id"] for f in fills[row["order_key"]]})
        report.orders += 1
    report.trades = len(rows)
    adopt_journaled_fires(trades, executor, report)
    # the recent orders of trades already over: the broker's book lists them (the day's orders, executions of up to
    # a week), and they are no strays - known from the start, not looked up inside an engine step later (a lookup of
    # 10,000 keys after an unreadable start held the loop 0.16 s on SQLite, 0.4 s on PostgreSQL: a review)
    _remember(executor, journal.orders_over(OVER_WINDOW_NS))
    return report


def adopt_journaled_fires(trades: TradeManager, executor: OrderExecutor, report: RecoveryReport) -> None:
    """Exits journaled before their trade's snapshot counts them: an exit's commit holds its order row, and the
    snapshot of a trade whose only change was that fire follows in the next commit (``journal_recorder``).  A
    restart between the two finds an order in flight whose fire number (the key's last part) its leg has not
    reached: the fire is counted - fired, in flight, the trade closing for a stop - exactly as if the snapshot
    had been written (``TradeManager.adopt_orders``, all of a trade's at once), so the exit is neither lost nor
    decided a second time.
    Reconciliation then treats the order as any other: adopted if the broker has it, sent if it never left."""
    adopted: list[tuple[OrderIntent, int]] = []
    for key, record in executor.orders.items():
        intent = record.intent
        trade = trades.trades.get(intent.trade_id)
        if not intent.is_exit or record.final or trade is None or not trade.state.automated:
            continue
        number = key.rsplit(":", 1)[-1]
        leg = trade.find_leg(intent.leg)
        if leg is None or not number.isdigit() or int(number) <= leg.fired:
            continue
        adopted.append((intent, int(number)))
        report.fires_adopted.append(key)
        log.warning("order %s: journaled in flight, its trade's snapshot from before it was decided (a restart "
                    "between an exit's commit and the next) - counted as fired and in flight, not decided again", key)
    trades.adopt_orders(adopted)  # all at once: a trade's exits are all counted before it closes


def journaled_order(row: dict[str, Any], fills: list[dict[str, Any]]) -> OrderRecord:
    """A journaled order with what its fill rows say: the exact notional, and the executions whose commission it
    has counted (so a commission reported again after the restart is not counted twice)."""
    filled = exact(row["filled"])
    notional = sum((exact(f["price"]) * exact(f["qty"]) for f in fills), ZERO)  # exact, unlike the stored average
    if sum((exact(f["qty"]) for f in fills), ZERO) != filled:
        log.warning("order %s: its fill rows do not add up to its filled %s; using its average price", row["order_key"],
                    filled)
        notional = exact(row["avg_price"]) * filled
    return OrderRecord(OrderIntent.from_dict(row["intent"]), status=_status(row), attempts=row["attempts"],
                       order_id=row["broker_order_id"], filled=filled, notional=notional,
                       commission=exact(row["commission"]), reason=row["reason"],
                       placed_through=row.get("placed_through") or "",
                       commissions={f["exec_id"]: exact(f["commission"]) for f in fills if f["commission"] is not None})


def _status(row: dict[str, Any]) -> OrderStatus:
    try:
        return OrderStatus(row["status"])
    except ValueError:
        log.error("order %s: journaled status %r is not an order state; treated as unknown", row["order_key"],
                  row["status"])
        return OrderStatus.UNKNOWN


def remember_orders_over(book: OrderBook, executor: OrderExecutor, journal: Journal) -> None:
    """Look up in the journal the keys of this journal the broker's book lists that no order of the executor's has
    and that were not looked up before: orders of trades over before this start (the executor restores the open
    trades' orders, and ``restore`` the recent orders of trades over; the broker's book holds every order and
    execution of the day).  Those the journal holds are remembered (``remember_over``): not strays, their journaled
    executions applied.  Found by an independent review: after any restart of the day, each such order was reported
    UNRECONCILED ("an order of this journal ... that the journal does not hold") at the start and by every
    reconciliation pass after it.  Each key is looked up once, found or not."""
    prefix = f"tg:{journal.journal_id}:"
    keys = {k for k in filterfalse(executor.orders.__contains__, chain(book.working, book.ended,
                                                                      map(_REF, book.executions)))
            if k.startswith(prefix) and k not in executor.looked_up}
    if not keys:
        return
    executor.looked_up.update(keys)  # found or not
    _remember(executor, journal.orders_held(sorted(keys)))


def _remember(executor: OrderExecutor, held: dict[str, tuple[str, set[str]]]) -> None:
    """Orders of trades that are over, as the journal holds them (key -> status, exec ids), made known as such."""
    for key, (status, exec_ids) in held.items():
        executor.remember_over(key, _status({"order_key": key, "status": status}), exec_ids)


def unjournaled_executions(book: OrderBook, executor: OrderExecutor) -> list[str]:
    """A line per execution the book holds of an order of a trade that was over before this start, that the journal
    does not hold (applied to no trade): for the start's report."""
    over, applied = executor.journaled_over, executor.applied_execs
    return [unjournaled_execution(f) for f in book.executions if f.ref in over and f.exec_id not in applied]


def unjournaled_execution(fill: FillEvent) -> str:
    """An execution at the broker of an order of a trade that was over before this start, not in the journal."""
    return (f"{fill.account} {fill.symbol}: execution {fill.exec_id} of {fill.ref} ({fill.action} {fill.qty} @ "
            f"{fill.price}) at the broker, an order of a trade that is over; not in the journal, not applied - left "
            "for the user")


def reconcile(book: OrderBook, trades: TradeManager, executor: OrderExecutor, report: RecoveryReport,
              cancel: Callable[[int], None] | None = None) -> None:
    """Bring the restored state in line with what the broker says happened (``cancel``: how an order of this
    journal that no live trade owns is cancelled at the broker)."""
    book = ours_only(book, executor, report)
    take_over_strays(book, trades, executor, report.journal_id, report.adopted, report.mismatches, cancel)
    for key, (order_id, _filled) in book.working.items():
        record = executor.orders.get(key)
        if record is not None and not record.final:
            executor.adopt(key, order_id)
            report.adopted.append(key)
    for key, (order_id, _status) in book.ended.items():
        record = executor.orders.get(key)
        if record is not None and not record.final and key not in book.working and order_id:
            executor.adopt(key, order_id)  # an id of 0: the broker did not say (IB's completed orders)
    for fill in book.executions:
        record = executor.orders.get(fill.ref)
        if record is None:
            continue
        # a replay is applied once already: the executor logs it and takes at most a commission it lacked
        if executor.apply_found(record, fill):
            report.fills_applied.append(f"{fill.ref} {fill.qty}@{fill.price}")
    for key, record in list(executor.orders.items()):
        if not record.final and key not in book.working:
            settle(key, record, book, executor, report)
    for trade in list(trades.trades.values()):
        trades.resume_closing(trade)  # a halted trade is not resumed (resume_closing asks ``automated``)
        if trade.state is TradeState.HALTED:  # restored halted, or halted by a fill applied just now
            report.mismatches.append(f"{trade.request.account or book.default_account} {trade.symbol}: trade "
                                     f"{trade.id} is HALTED - {trade.reason}; nothing automated is sent for it, "
                                     "left for the user")
    _check_positions(book, trades, report)


def ours_only(book: OrderBook, executor: OrderExecutor, report: RecoveryReport) -> OrderBook:
    """The broker's book without what belongs to another journal: a key with another journal's id is foreign
    (reported, never touched); a key with no id (journaled before ids existed) is ours only if journaled here."""
    foreign: dict[str, list[str]] = defaultdict(list)
    # A key that starts with this journal's own tag is ours at a glance (``startswith`` of an empty tuple is
    # False): a routine pass reads every order and execution of the day, nearly all of them ours, and the regex
    # and the description of each held the loop ~15 ms at 5,000 trades (bench/reconcile_pass.py).
    own = (f"tg:{report.journal_id}:",) if report.journal_id and _OWN_ID.fullmatch(report.journal_id) else ()

    def ours(key: str, what: str) -> bool:
        match = _JOURNAL_ID.match(key)
        mine = key in executor.orders if match is None else match.group(1) == report.journal_id
        if not mine and match is not None:
            foreign[key].append(what)
        return mine

    # only what lacks the tag is looked at one by one (and dropped if not ours), in the book's order; the book's
    # own dicts and list are kept when nothing is dropped (the routine pass): a copy touches each of thousands
    working = _without(book.working, [k for k in _untagged(book.working, book.working, own) if not ours(k, "working")])
    ended = _without(book.ended, [k for k in _untagged(book.ended, book.ended, own)
                                  if not ours(k, str(book.ended[k][1]))])
    executions = book.executions
    dropped = {id(f) for f in _untagged(executions, map(_REF, executions), own)
               if not ours(f.ref, f"execution {f.exec_id}")}
    if dropped:
        executions = [f for f in executions if id(f) not in dropped]
    for key, whats in sorted(foreign.items()):
        report.foreign.append(f"{key} ({', '.join(whats)})")
    # the broker's record of each order goes along: an order of ours the journal lacks that has not executed yet is
    # known only from it (stray_orders takes it over; without it, it was cancelled as nobody's)
    return OrderBook(working, ended, executions, book.positions, book.default_account, book.complete, book.details,
                     book.mark)


def _without(entries: dict[str, V], drop: list[str]) -> dict[str, V]:
    """``entries`` itself when nothing is dropped, else a copy without the keys ``drop``."""
    if not drop:
        return entries
    kept = dict(entries)
    for key in drop:
        del kept[key]
    return kept


def _untagged(items: Iterable[T], keys: Iterable[str], own: tuple[str, ...]) -> list[T]:
    """The items whose key does not start with this journal's tag, in order, found without a Python-level loop
    (``map`` and ``compress`` over ``str.startswith``): a day's book holds thousands, nearly all of them tagged."""
    return list(compress(items, map(not_, map(str.startswith, keys, repeat(own)))))


def settle(key: str, record: OrderRecord, book: OrderBook, executor: OrderExecutor, report: RecoveryReport,
           when: str = "while the engine was down") -> None:
    """An open order the broker does not hold working: ended there, or never seen there."""
    if key in book.ended:
        status = OrderStatus(book.ended[key][1])
        if status is OrderStatus.FILLED and record.filled >= record.intent.qty:
            return  # closed by the fills just applied
        executor.close_from_broker(record, OrderStatus.REJECTED if status is OrderStatus.REJECTED
                                   else OrderStatus.CANCELLED, f"{status} at the broker {when}")
        report.closed_at_broker.append(key)
    elif record.status is not OrderStatus.RETRY_WAIT and holds_elsewhere(record.placed_through, executor.session):
        # it may work there, out of this client's sight: neither re-sent nor closed (a cancel may not have reached
        # it); a RETRY_WAIT order reached no broker (write-ahead journals ``submitting`` before every send)
        report.unseen.append(f"{key} ({record.status}, placed through {record.placed_through}; this engine: "
                             f"{executor.session})")
    elif record.status is OrderStatus.CANCELLING:
        executor.close_from_broker(record, OrderStatus.CANCELLED,
                                   "cancel requested before the restart; the broker does not know the order")
        report.closed_at_broker.append(key)
    elif record.status in RESEND:
        if not book.complete:  # it may have ended at the broker among the orders we could not read: never blind
            report.deferred.append(key)
            return
        (report.resent if executor.resend(record) else report.withheld).append(key)



def _check_positions(book: OrderBook, trades: TradeManager, report: RecoveryReport) -> None:
    """Every (account, symbol) position must equal what the journal's open trades explain - exactly (checked
    once the broker's book is complete: fills still unread would show as false differences)."""
    if book.complete:  # the engine logs them (RecoveryReport.lines), once
        report.mismatches += position_differences(book, trades)


def position_differences(book: OrderBook, trades: TradeManager) -> list[str]:
    """The (account, symbol) positions at the broker that the journal's trades do not explain, with the figures."""
    out: list[str] = []
    ours: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for (account, symbol), qty in trades.positions.items():  # kept as fills are applied (core/open_positions.py)
        ours[(account or book.default_account, symbol)] += qty
    theirs = {(a, s): exact(q) for a, pos in book.positions.items() for s, q in pos.items()}
    for key in sorted(set(ours) | set(theirs)):
        mine, broker = ours.get(key, ZERO), theirs.get(key, ZERO)
        if mine != broker:
            account, symbol = key
            what = ("a position at the broker that the journal does not know" if mine == 0
                    else "a journal trade with no position at the broker" if broker == 0
                    else "a position that differs from the journal")
            out.append(f"{account} {symbol}: broker {broker}, journal {mine} - {what}; left for the user")
    return out
