"""Writes the engine's state changes to the journal, from the hooks of the trade manager and the executor.

Lifecycle events hand the journal their event row (inside a batch it writes them together before the
commit) and mark the trade: its snapshot (trade row and legs) is written once, just before the transaction
commits (the journal's ``before_commit`` hook) - a stop that fires makes three events ("closing",
"exit_intent", "state") but one snapshot.  Pure level moves of trailing and break-even stops are coalesced to at
most one snapshot per trade per ``snapshot_interval_ns`` so a trending market does not turn every tick into a
database write.

An exit's commit (``Journal.commit_now(early=True)``, between a crossing and its order on the wire) holds what
is acted on - the exit's order row, with its key, quantity and trigger - and, for a trade whose only change in
the transaction is the fire of its stop or time stop, with that exit's order row in it, not yet its snapshot and
events: those follow in the next commit, right after the send, in the same engine step.  Why: the snapshot, the
legs and the events were most of the journal's time between a crossing and the wire (``bench/exit_path.py``), and
nothing in them is needed to recover the fire - a restart between the two commits finds the order row and a trade
that has not fired it, and recovery counts it as fired and in flight (``recovery.adopt_journaled_fires``), so it
is neither lost nor decided again.  A trade with any other change in the transaction (a fill, an entry, a halt),
one a target fired (it stays open, and its stop may have moved on the same tick - a move only its snapshot
records), and one whose stop fired with nothing left to sell (no order row says so) is written whole, as before.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from typing import Any

from tickguard.core.model import OrderIntent, Tick
from tickguard.core.trade_manager import TradeManager
from tickguard.core.trades import Leg, Trade
from tickguard.runtime.order_record import OrderRecord
from tickguard.store.journal import Journal

FULL_SCAN_EVERY = 1000  # steps between two looks at every trail group (the others look at the step's symbols)
MOVES_PER_STEP = 4  # level-move snapshots written per engine step at most (see JournalRecorder.flush_moved)
# The events of a fire (TradeManager._fire_terminal / _fire_target): a trade whose events in a transaction are only
# these, and whose exit order row the transaction holds, may wait for the next commit (see the module's docstring).
FIRE_EVENTS = frozenset({"closing", "exit_intent", "state"})


def intent_row(record: OrderRecord, now: int) -> dict[str, Any]:
    i = record.intent
    return {
        "order_key": i.key, "trade_id": i.trade_id, "leg": i.leg, "user_id": i.user, "account": i.account,
        "symbol": i.symbol, "action": i.action.value, "qty": i.qty, "status": record.status.value,
        "attempts": record.attempts, "broker_order_id": record.order_id, "filled": record.filled,
        "avg_price": record.avg_price, "commission": record.commission, "reason": record.reason,
        "intent": i.to_dict(), "created_ns": i.created_ns, "updated_ns": now, "placed_through": record.placed_through,
    }


class JournalRecorder:
    def __init__(self, journal: Journal, trades: TradeManager, snapshot_interval_ns: int = 250_000_000) -> None:
        self.journal = journal
        self.trades = trades
        self._interval = snapshot_interval_ns
        self._last_snapshot: dict[str, int] = {}
        self._moved: set[str] = set()  # trades whose stop moved, waiting for their snapshot interval
        self._due: list[tuple[int, str]] = []  # (when its interval is over, trade id) of the moved: a heap
        self._dirty: dict[str, tuple[Trade, int]] = {}  # trades with events in the open transaction
        # trades whose only change since their last snapshot is a fire: their event rows, held with the snapshot
        self._held: dict[str, list[tuple[Any, ...]]] = {}
        # of those, the ones whose stop's or time stop's exit order row is journaled: they may wait (see above)
        self._fired: set[str] = set()
        self._steps = 0
        journal.before_commit.append(self.write_snapshots)

    def on_trade_event(self, trade: Trade, kind: str, record: dict[str, Any]) -> None:
        j = self.journal
        now = record["ts_ns"]
        req = trade.request
        data = {k: v for k, v in record.items() if k not in ("ts_ns", "event")}
        if kind == "accepted":
            self._last_snapshot.pop(trade.id, None)
            j.insert_trade({
                "trade_id": trade.id, "user_id": req.user, "account": req.account or "", "symbol": trade.symbol,
                "side": req.side.value, "qty": req.qty, "state": trade.state.value,
                "request": req.model_dump(mode="json"), "snapshot": self.trades.snapshot(trade),
                "created_ns": trade.created_ns, "updated_ns": now,
            })
        self._event(trade.id, (kind, now, _jsonable(data), trade.id, data.get("key"), req.user, req.account or ""),
                    kind in FIRE_EVENTS)
        self._dirty[trade.id] = (trade, now)  # its snapshot is written before this transaction commits

    def _event(self, trade_id: str, row: tuple[Any, ...], of_a_fire: bool) -> None:
        """Journal an event row of ``trade_id``'s - or hold it with the trade's snapshot while every change of the
        trade since that snapshot is a fire (``of_a_fire``); any other change writes what was held first."""
        held = self._held.get(trade_id)
        if of_a_fire and (held is not None or trade_id not in self._dirty):
            if held is None:
                held = self._held[trade_id] = []
            held.append(row)
            return
        self._release(trade_id)
        self.journal.event(*row)

    def _closes(self, intent: OrderIntent) -> bool:
        """Is ``intent`` the exit of a stop or time stop - the fire recovery rebuilds a closing trade from?  A
        target's order row does not say its trade is closing: a stop that fired with nothing left to sell (a
        full-size target in flight) leaves no row of its own, so such a trade is written whole (found by an
        independent review: after a restart between the commits the stop's fire was forgotten)."""
        trade = self.trades.trades.get(intent.trade_id)
        leg = None if trade is None else trade.find_leg(intent.leg)
        return leg is not None and leg.terminal

    def _release(self, trade_id: str) -> None:
        """Write the event rows held for ``trade_id``: its changes are no longer only a fire, or its snapshot is
        being written."""
        self._fired.discard(trade_id)
        for row in self._held.pop(trade_id, ()):
            self.journal.event(*row)

    def write_snapshots(self, early: bool = False) -> None:
        """The journal's before-commit hook: the snapshot of every trade with events in the transaction - but at an
        exit's commit (``early``), not yet of one whose only change is the fire of its stop or time stop, with that
        exit's order row in the transaction (``_fired``): its snapshot and events wait for the next commit (see
        the module's docstring)."""
        waiting: dict[str, tuple[Trade, int]] = {}
        while self._dirty:
            dirty, self._dirty = self._dirty, {}
            for trade_id, (trade, now) in dirty.items():
                if early and trade_id in self._fired:
                    waiting[trade_id] = (trade, now)
                    continue
                self._release(trade_id)
                self._snapshot(trade, now)
        self._dirty = waiting

    def _snapshot(self, trade: Trade, now: int) -> None:
        snap = self.trades.snapshot(trade)
        self.journal.update_trade(trade.id, state=trade.state.value, snapshot=snap, updated_ns=now)
        self.journal.put_legs(trade.id, [self._leg_row(trade, leg, snap, now) for leg in trade.legs()])
        self._last_snapshot[trade.id] = now
        self._moved.discard(trade.id)  # the snapshot holds its stop as it is now

    def _leg_row(self, trade: Trade, leg: Leg, snap: dict[str, Any], now: int) -> dict[str, Any]:
        """A leg as the ``legs`` table shows it; the stop leg's level is the trade's effective stop."""
        if leg is trade.stop:
            stop = self.trades.stops.effective(trade)
            level_x = None if stop is None else stop.level_x
        else:
            level_x = leg.level_x
        return {"name": leg.name, "kind": "take_profit" if leg.rule is not None else leg.name,
                "fraction": leg.fraction,
                "level": None if level_x is None else self.trades.grid(trade.symbol).price(trade.sign * level_x),
                "armed": snap["legs"][leg.name]["armed"], "fired": leg.fired, "filled": leg.filled,
                "inflight": leg.inflight, "updated_ns": now}

    def flush_moved(self, now: int, ticks: Sequence[Tick] | None = None) -> None:
        """Snapshot trades whose stop moved, unless one was written within the interval (those wait), at most
        ``MOVES_PER_STEP`` per engine step, the longest-waiting first.  Why a bound: the trailing stops of a trail
        group all move when its mark does; written in one step they would make one long stall of the tick path,
        spread over the next steps each step pays for a few."""
        self._steps += 1
        full = ticks is None or self._steps % FULL_SCAN_EVERY == 0
        moved = self.trades.stops.take_moved(None if full else (t.symbol for t in ticks))  # type: ignore[union-attr]
        interval, due = self._interval, self._due
        for tid in moved:
            if tid not in self._moved and tid not in self._dirty:  # a trade with events is written at the commit
                self._moved.add(tid)
                heapq.heappush(due, (self._last_snapshot.get(tid, -interval) + interval, tid))
        written = 0
        while due and due[0][0] <= now and written < MOVES_PER_STEP:  # the longest-waiting first
            _, tid = heapq.heappop(due)
            if tid not in self._moved:  # written meanwhile (an event of it): a stale entry
                continue
            at = self._last_snapshot.get(tid, -interval) + interval
            if at > now:  # written since it was queued: its interval starts again
                heapq.heappush(due, (at, tid))
                continue
            self._snapshot(self.trades.trades[tid], now)
            written += 1

    def rehearse(self, record: OrderRecord, data: dict[str, Any]) -> None:
        """An exit's rows as its fire makes them - the order row bound and encoded as its exit record, the event's
        data made JSON-ready - written nowhere (runtime/exit_rehearsal.py)."""
        _jsonable(data)
        self.journal.rehearse_order(intent_row(record, record.intent.created_ns))

    def on_order_event(self, record: OrderRecord, kind: str, entry: dict[str, Any]) -> None:
        j = self.journal
        now = entry["ts_ns"]
        i = record.intent
        if kind in ("submitting", "found_at_broker") and record.attempts == 1 and not record.events[:-1]:
            j.insert_order(intent_row(record, now))
            if kind == "submitting" and i.trade_id in self._held and self._closes(i):
                self._fired.add(i.trade_id)  # its stop's (or time stop's) exit is in this transaction: it may wait
        else:
            j.update_order(i.key, status=record.status.value, attempts=record.attempts, broker_order_id=record.order_id,
                           filled=record.filled, avg_price=record.avg_price, commission=record.commission,
                           reason=record.reason, updated_ns=now, placed_through=record.placed_through)
        if kind == "fill":
            j.insert_fill({"exec_id": entry["exec_id"], "order_key": i.key, "trade_id": i.trade_id,
                           "qty": entry["qty"], "price": entry["price"], "commission": entry.get("commission"),
                           "ts_ns": entry.get("fill_ts_ns", now)})
        elif kind == "commission":  # reported after its execution: onto the fill's row, where recovery reads it
            j.set_fill_commission(entry["exec_id"], entry["commission"])
        data = {k: v for k, v in entry.items() if k not in ("ts_ns", "event")}
        row = (f"order_{kind}", now, _jsonable(data), i.trade_id, i.key, i.user, i.account)
        if i.trade_id in self._held:  # an order of a trade whose snapshot waits: its events wait with it
            self._held[i.trade_id].append(row)
        else:
            j.event(*row)


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, float):
            out[k] = v if math.isfinite(v) else None  # JSON has no NaN: "no such figure"
        elif isinstance(v, dict):
            out[k] = _jsonable(v)
        else:
            out[k] = v
    return out
