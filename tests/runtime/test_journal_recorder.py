"""The journal recorder's coalesced level-move snapshots (runtime/journal_recorder.py).

Why: trailing stops in a trail group move together whenever the group's mark does, and nobody is told (the tick
handler advances the mark inline).  They must still reach the journal - a crash would otherwise restore them at
a looser, older level - but a large group must not write all its snapshots in one engine step.
"""

from __future__ import annotations

import contextlib
import json
from decimal import Decimal

from tickguard.core.exit_rules import StopLoss, TakeProfit, TrailingStop
from tickguard.core.model import Side
from tickguard.core.trade_manager import TradeManager
from tickguard.core.trades import TradeRequest
from tickguard.runtime.journal_recorder import MOVES_PER_STEP, JournalRecorder
from tickguard.runtime.order_record import OrderRecord
from tickguard.store.exact import json_dumps
from tickguard.store.journal import Journal

N = 10


def test_a_trail_groups_moves_reach_the_journal_a_few_per_step_and_restore_exactly(tmp_path, clock, market):
    journal = Journal.open(str(tmp_path / "j.db"))
    tm = TradeManager(clock, market.vol.get, market.quotes.get, instance_id=journal.journal_id)
    recorder = JournalRecorder(journal, tm, 0)
    tm.on_event = recorder.on_trade_event
    market.tick("AAA", 100.0, 100.02)
    trades = []
    with journal.batch():
        for _ in range(N):
            trade = tm.submit(TradeRequest(symbol="AAA", side=Side.LONG, qty=100,
                                           rules=[TrailingStop(distance=0.5, unit="price")]))
            [entry] = tm.outbox
            tm.outbox = []
            tm.on_fill(entry, 100, 100.0, clock(), 0)
            trades.append(trade)
    assert all(t.grouped for t in trades)
    recorder.flush_moved(clock())
    tm.stops.marks_for("AAA").observe(tm.grid("AAA").units(101.0), tm.grid("AAA").units(101.02))  # the tick path
    written = []
    for _ in range(N):
        before = {t.id: journal.list_trades()[i]["snapshot"]["trail_x"] for i, t in enumerate(trades)}
        with journal.batch():
            recorder.flush_moved(clock())
        after = {t.id: journal.list_trades()[i]["snapshot"]["trail_x"] for i, t in enumerate(trades)}
        written.append(sum(before[k] != after[k] for k in before))
    assert max(written) <= MOVES_PER_STEP and sum(written) == N  # every member once, a few per step
    assert {row["snapshot"]["trail_x"] for row in journal.list_trades()} == {"100.50"}
    fresh = TradeManager(clock, market.vol.get, market.quotes.get, instance_id=journal.journal_id)
    row = journal.list_trades()[0]
    restored = fresh.restore(row["trade_id"], TradeRequest.model_validate(row["request"]), row["snapshot"],
                             row["created_ns"])
    assert fresh.stop_price(restored) == Decimal("100.50")  # not the 99.50 of the entry
    journal.close()


async def test_a_grouped_trailing_stop_that_moves_in_the_engine_is_journaled_within_its_snapshot_interval(tmp_path):
    """The engine hands the recorder each step's ticks, and a trail group's members whose mark moved with them are
    journaled at most ``snapshot_interval_ms`` later - not only at the recorder's occasional look at every group
    (a crash would otherwise restore the stop where it was minutes ago: looser)."""
    from decimal import Decimal

    from tickguard.config import load
    from tickguard.core.exit_rules import TrailingStop
    from tickguard.core.model import Side
    from tickguard.core.trades import TradeRequest
    from tickguard.runtime.engine_factory import sim_engine
    from tickguard.store.journal import Journal

    ns = 1_000_000_000
    s = load(None, {"sim": {"speed": 0, "symbols": 1, "seed": 3}, "volatility": {"intraday": False},
                    "shadow": {"enabled": False}, "journal": {"snapshot_interval_ms": 50}})
    journal = Journal.open(tmp_path / "j.db")
    engine, venue = sim_engine(s, journal=journal)
    await engine.start(sorted(venue.specs))
    await engine.run_until(engine.broker.now_ns() + 2 * ns)
    symbol = sorted(venue.specs)[0]
    trade = engine.submit(TradeRequest(symbol=symbol, side=Side.LONG, qty=Decimal(100),
                                       rules=[TrailingStop(distance=30.0)]))  # far: it trails, it does not fire
    await engine.run_until(engine.broker.now_ns() + 5 * ns)
    assert trade.state.value == "open" and trade.grouped
    first = engine.trades.stop_price(trade)
    moved = False
    for _ in range(600):  # a minute of virtual seconds, a few hundred engine steps at most per second
        await engine.run_until(engine.broker.now_ns() + ns // 10)
        if engine.trades.stop_price(trade) != first:
            moved = True
            break
    assert moved, "the market never made a new high: pick another seed"
    await engine.run_until(engine.broker.now_ns() + ns // 5)  # past the snapshot interval, a few steps
    [stop_leg] = [leg for leg in journal.legs_of([trade.id]) if leg["name"] == "stop"]
    assert Decimal(str(stop_leg["level"])) == engine.trades.stop_price(trade)
    await engine.broker.close()
    journal.close()


def _rig(tmp_path, clock, market, interval_ns: int = 0):
    journal = Journal.open(str(tmp_path / "j.db"))
    tm = TradeManager(clock, market.vol.get, market.quotes.get, instance_id=journal.journal_id)
    recorder = JournalRecorder(journal, tm, interval_ns)
    tm.on_event = recorder.on_trade_event
    return journal, tm, recorder


def _open_long(tm: TradeManager, clock, rules) -> object:
    trade = tm.submit(TradeRequest(symbol="AAA", side=Side.LONG, qty=100, rules=rules))
    [entry] = tm.outbox
    tm.outbox = []
    tm.on_fill(entry, 100, 100.0, clock(), 0)
    return trade


def test_a_stop_that_fires_writes_its_events_and_one_snapshot_the_trade_as_its_exit_leaves(tmp_path, clock,
                                                                                              market):
    """A firing stop makes three events (closing, exit_intent, state); the trade's snapshot is written once,
    just before the step's commit, and holds the trade as it is when the exit is released (exiting, the stop
    leg fired and in flight) - three snapshots per exit were most of an exit's journal time."""
    journal, tm, _ = _rig(tmp_path, clock, market)
    market.tick("AAA", 100.0, 100.02)
    with journal.batch():
        trade = _open_long(tm, clock, [StopLoss(price=99.0)])
    updates: list[str] = []
    original = journal.update_trade
    journal.update_trade = lambda tid, **v: (updates.append(tid), original(tid, **v))[1]  # type: ignore[method-assign]
    events_before = len(journal.events_of([trade.id]))
    with journal.batch():
        tm.evaluate(market.tick("AAA", 98.99, 99.01))
        assert [i.leg for i in tm.outbox] == ["stop"] and updates == []  # nothing snapshotted before the commit
    kinds = [e["kind"] for e in journal.events_of([trade.id])][events_before:]
    assert kinds == ["closing", "exit_intent", "state"] and updates == [trade.id]
    [row] = journal.list_trades()
    assert row["state"] == "exiting" and row["snapshot"] == json.loads(json_dumps(tm.snapshot(trade)))
    [stop] = [leg for leg in journal.legs_of([trade.id]) if leg["name"] == "stop"]
    assert (stop["fired"], stop["inflight"]) == (1, Decimal(100))
    journal.close()


def test_moved_stops_are_written_longest_waiting_first_and_not_again_after_an_event_wrote_them(tmp_path, clock,
                                                                                               market):
    """Moves wait out their trade's snapshot interval in a queue ordered by when it ends (a step looks at the few
    that are due, not at every waiting trade); a trade an event snapshotted meanwhile is not written again."""
    interval = 1_000_000_000
    journal, tm, recorder = _rig(tmp_path, clock, market, interval)
    market.tick("AAA", 100.0, 100.02)
    with journal.batch():
        trades = [_open_long(tm, clock, [TrailingStop(distance=0.5, unit="price")]) for _ in range(6)]
        recorder.flush_moved(clock())  # the entries' own snapshots cover their first levels
    assert not recorder._moved
    written: list[str] = []
    original = recorder._snapshot
    recorder._snapshot = lambda t, now: (written.append(t.id), original(t, now))[1]  # type: ignore[method-assign]
    for trade in trades:  # each stop moves 0.1 s after the previous one
        clock.advance(0.1)
        tm.stops.moved.add(trade.id)
        recorder.flush_moved(clock())
    assert written == []  # none has waited its interval yet
    with journal.batch():  # an event of trade 1: its snapshot is written at the commit
        recorder.on_trade_event(trades[1], "note", {"ts_ns": clock(), "event": "note"})
    assert written == [trades[1].id]
    clock.advance(1.0)
    recorder.flush_moved(clock())
    assert written[1:] == [t.id for t in (trades[0], trades[2], trades[3], trades[4])][:MOVES_PER_STEP]
    recorder.flush_moved(clock())
    assert written[1:] == [t.id for t in (trades[0], trades[2], trades[3], trades[4], trades[5])]
    recorder.flush_moved(clock())
    assert len(written) == 6 and not recorder._moved
    journal.close()


def _submitting(recorder: JournalRecorder, intent, clock) -> None:
    """The executor's note of an order's first send, as ``OrderExecutor._send`` makes it (its row is inserted)."""
    record = OrderRecord(intent)
    record.attempts = 1
    entry = {"ts_ns": clock(), "event": "submitting", "attempt": 1, "qty": intent.qty}
    record.events.append(entry)
    recorder.on_order_event(record, "submitting", entry)


def test_an_exits_commit_holds_its_order_rows_and_only_a_trade_whose_sole_change_is_the_fire_waits(tmp_path, clock,
                                                                                                   market):
    """An exit's commit (``commit_now(early=True)``) holds every exit's order row; the snapshot and events of a
    closing trade whose only change in the transaction is the fire follow in the next commit, in order (recovery
    rebuilds the fire from the row), while a trade with another change - here its entry's last fill - is written
    whole at once (that fill could not be rebuilt from anything else), and so is one a target fired (it stays open:
    its stop may have moved on the same tick)."""
    journal, tm, recorder = _rig(tmp_path, clock, market)
    market.tick("AAA", 100.0, 100.02)
    with journal.batch():
        quiet = _open_long(tm, clock, [StopLoss(price=99.0)])
        target = tm.submit(TradeRequest(symbol="AAA", side=Side.SHORT, qty=100, rules=[  # its tp1 fires on the tick
            StopLoss(price=105.0), TakeProfit(price=99.5, fraction=Decimal("0.5")),
            TakeProfit(price=90.0, fraction=Decimal("0.5"))]))
        [short_entry] = tm.outbox
        tm.outbox = []
        tm.on_fill(short_entry, 100, 100.0, clock(), 0)
        busy = tm.submit(TradeRequest(symbol="AAA", side=Side.LONG, qty=100, rules=[StopLoss(price=99.0)]))
        [entry] = tm.outbox
        tm.outbox = []
        tm.on_fill(entry, 50, 100.0, clock(), 0)

    def committed(trade) -> tuple[str, int, list[str], list[str]]:
        """What another connection sees committed of ``trade``: state, the stop's fires, events, order keys."""
        other = Journal.open(str(tmp_path / "j.db"))
        try:
            [row] = [r for r in other.list_trades() if r["trade_id"] == trade.id]
            return (row["state"], row["snapshot"]["legs"]["stop"]["fired"],
                    [e["kind"] for e in other.events_of([trade.id])], [o["leg"] for o in other.orders_of([trade.id])])
        finally:
            other.close()

    quiet_before = committed(quiet)
    with journal.batch():
        tm.on_fill(entry, 50, 100.0, clock(), 0)  # busy's entry completes in the exit's transaction
        tm.evaluate(market.tick("AAA", 98.99, 99.01))
        exits, tm.outbox = tm.outbox, []
        assert sorted(i.trade_id for i in exits) == sorted([quiet.id, target.id, busy.id])
        for intent in exits:
            _submitting(recorder, intent, clock)
        journal.commit_now(early=True)
        assert committed(quiet) == (*quiet_before[:3], ["stop"])  # its order row; its snapshot and events wait
        state, fired, kinds, legs = committed(busy)
        assert (state, fired, legs) == ("exiting", 1, ["stop"])
        assert kinds[-5:] == ["entry_fill", "closing", "exit_intent", "state", "order_submitting"]
        # a target's fire leaves the trade open, its stop perhaps moved on the same tick: written whole, at once
        [row] = [r for r in journal.list_trades() if r["trade_id"] == target.id]
        with contextlib.closing(Journal.open(str(tmp_path / "j.db"))) as other:
            [seen] = [r for r in other.list_trades() if r["trade_id"] == target.id]
        assert seen["snapshot"]["legs"]["tp1"]["fired"] == 1 and seen["snapshot"] == row["snapshot"]
    state, fired, kinds, _ = committed(quiet)
    assert (state, fired) == ("exiting", 1)
    assert kinds == quiet_before[2] + ["closing", "exit_intent", "state", "order_submitting"]
    assert [leg["fired"] for leg in journal.legs_of([quiet.id]) if leg["name"] == "stop"] == [1]
    journal.close()
