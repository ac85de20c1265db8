"""The engine step (runtime/engine.py): an exit leaves as soon as its symbol's evaluation is committed.

Why: a step evaluates the symbols a batch of ticks flagged, most at risk first, then fires timers and writes
coalesced snapshots; an exit that waited for all of that before its commit and its release waited milliseconds
for nothing (bench/wire_to_wire.py).  Write-ahead is unchanged: each order reaches the broker with its row
committed, read here through a connection of the test's own.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from decimal import Decimal

import pytest
import sqlalchemy as sa

from tickguard.config import load
from tickguard.core.exit_rules import StopLoss
from tickguard.core.model import Action, OrderIntent, OrderType, PriorityClass, Side, Tick, TradeState
from tickguard.core.order_state import OrderStatus
from tickguard.core.trades import Trade, TradeRequest
from tickguard.runtime import gc_policy
from tickguard.runtime.engine import Engine
from tickguard.runtime.engine_factory import sim_engine
from tickguard.runtime.order_record import OrderRecord
from tickguard.store.journal import Journal

NS = 1_000_000_000


async def two_open_trades(tmp_path, throttle: dict) -> tuple[Engine, list[Trade], list[tuple[str, str | None]]]:
    """A sim engine with a journal and one open long trade on each of two symbols, its stop 0.50 under the bid;
    the returned list records what happened, in order: ("place", the order's committed status), ("on_time", None)."""
    s = load(None, {"sim": {"speed": 0, "symbols": 2, "seed": 5}, "volatility": {"intraday": False},
                    "watchdog": {"enabled": False}, "shadow": {"enabled": False}, "throttle": throttle})
    journal = Journal.open(tmp_path / "j.db")
    engine, venue = sim_engine(s, journal=journal)
    symbols = sorted(venue.specs)
    await engine.start(symbols)
    await engine.run_until(engine.broker.now_ns() + 2 * NS)
    trades = []
    for symbol in symbols:
        bid = engine.grid(symbol).price(engine.ticks.quote(symbol).bid)
        trades.append(engine.submit(TradeRequest(symbol=symbol, side=Side.LONG, qty=Decimal(100),
                                                 rules=[StopLoss(price=float(bid - Decimal("0.50")))])))
    await engine.run_until(engine.broker.now_ns() + 2 * NS)
    assert [t.state.value for t in trades] == ["open", "open"]
    probe = sa.create_engine(f"sqlite:///{tmp_path / 'j.db'}")
    seen: list[tuple[str, str | None]] = []
    place, on_time = engine.broker.place_order, engine.on_time

    def placed(order):
        with probe.connect() as conn:
            status = conn.execute(sa.text("SELECT status FROM orders WHERE order_key = :k"),
                                  {"k": order.ref}).scalar()
        seen.append(("place", status))
        return place(order)

    def timers(now_ns: int) -> None:
        seen.append(("on_time", None))
        on_time(now_ns)

    engine.broker.place_order = placed  # type: ignore[method-assign]
    engine.on_time = timers  # type: ignore[method-assign]
    return engine, trades, seen


def crossing(engine: Engine, trade: Trade, seq: int) -> Tick:
    """A quote one cent under the trade's stop."""
    grid = engine.grid(trade.symbol)
    bid = grid.units(float(engine.trades.stop_price(trade) - Decimal("0.01")))
    now = engine.broker.now_ns()
    return Tick(trade.symbol, bid, bid + grid.units(0.02), 0, 100.0, now, now, 10_000_000 + seq)


async def test_an_exit_is_committed_and_sent_before_the_rest_of_its_step_runs(tmp_path):
    engine, trades, seen = await two_open_trades(tmp_path, {})
    engine.step([crossing(engine, trades[0], 1), crossing(engine, trades[1], 2)])
    # both symbols' exits went out, each as soon as its symbol was evaluated - before the step's timers - and
    # each found its row committed
    assert seen == [("place", "submitting"), ("place", "submitting"), ("on_time", None)]
    assert all(t.state.value == "exiting" for t in trades)
    engine.journal.close()


async def test_no_begin_sits_between_an_exits_commit_and_its_placement_and_the_next_transaction_is_begun_after(
        tmp_path):
    """An exit's commit leaves the next BEGIN until the exit is out (the placement's journal note begins it), and the
    step ends with the next transaction begun for the next exit's row."""
    engine, trades, _ = await two_open_trades(tmp_path, {})
    fast = engine.journal._fast
    assert fast is not None
    open_at_placement: list[bool] = []
    place = engine.broker.place_order

    def placed(order):
        open_at_placement.append(fast.in_transaction())
        return place(order)

    engine.broker.place_order = placed  # type: ignore[method-assign]
    engine.step([crossing(engine, trades[0], 1), crossing(engine, trades[1], 2)])
    assert open_at_placement == [False, False]  # committed, and nothing begun before the order went
    assert fast.in_transaction()  # begun afterwards, for the next exit's row
    engine.journal.close()


async def test_with_less_than_half_a_burst_left_a_steps_exits_wait_for_its_end_most_at_risk_first(tmp_path):
    engine, trades, seen = await two_open_trades(tmp_path, {"rate": 4, "burst": 4})
    for _ in range(3):
        engine.budget.charge()  # three of four spent: a storm's budget
    engine.step([crossing(engine, trades[0], 1), crossing(engine, trades[1], 2)])
    assert seen[0] == ("on_time", None) and seen[1] == ("place", "submitting")  # at the end of the hold
    engine.journal.close()


async def test_a_marked_order_book_is_applied_where_its_mark_is_in_the_stream():
    """A book the adapter marked (``BookMark``, IB) is applied when dispatch meets the mark - after the order events
    before it, before the ones after; an unmarked book (the simulator's) at the start of the step."""

    from tickguard.adapters.broker import BookMark, NoticeEvent, OrderBook

    s = load(None, {"sim": {"speed": 0, "symbols": 1, "seed": 5}, "volatility": {"intraday": False},
                    "watchdog": {"enabled": False}, "shadow": {"enabled": False}})
    engine, venue = sim_engine(s)
    await engine.start(sorted(venue.specs))
    seen: list[str] = []
    engine.reconciler.apply = lambda book, now: seen.append(f"book {book.mark}")  # type: ignore[method-assign]
    engine.reconciler.on_notice = lambda event: seen.append(event.message)  # type: ignore[method-assign]

    def fetched(mark: int | None) -> None:
        task = asyncio.get_running_loop().create_future()
        task.set_result(OrderBook({}, {}, [], {}, mark=mark))
        engine._book_task = task  # type: ignore[assignment]

    def notice(text: str) -> NoticeEvent:
        return NoticeEvent(2104, text, engine.broker.now_ns())

    fetched(7)
    engine.step([notice("before")])
    assert seen == ["before"]  # its mark has not come: the book waits
    engine.step([notice("still before"), BookMark(7), notice("after")])
    assert seen == ["before", "still before", "book 7", "after"]
    seen.clear()
    engine.step([BookMark(8)])  # a mark of no book awaited (the start-up book's): nothing
    fetched(None)
    engine.step([notice("next")])
    assert seen == ["book None", "next"]
    await engine.broker.close()


async def test_the_collector_runs_between_steps_never_inside_one(tmp_path):
    """A collection inside a step sits between a crossing and its exit order (runtime/gc_policy.py): while a step
    runs CPython's automatic collector is off, and the step's end makes the young collections that came due."""
    engine, _trades, _seen = await two_open_trades(tmp_path, {})
    inside = [False]
    during: list[bool] = []  # for each collection: was a step's dispatch running?
    kept: list = []
    dispatch = engine.dispatch

    def dispatching(events: list) -> None:
        inside[0] = True
        try:
            # what a step keeps: far more new objects than the step frees (CPython counts net allocations)
            kept.append([{} for _ in range(300)])
            dispatch(events)
        finally:
            inside[0] = False

    def watch(phase: str, _info: dict) -> None:
        if phase == "start":
            during.append(inside[0])

    engine.dispatch = dispatching  # type: ignore[method-assign]
    saved = gc.get_threshold()
    gc.set_threshold(100, 2, 1_000_000)  # every step leaves a young collection due
    gc.callbacks.append(watch)
    try:
        await engine.run_until(engine.broker.now_ns() + 10 * NS)
    finally:
        gc.callbacks.remove(watch)
        gc.set_threshold(*saved)
    assert gc.isenabled()  # as it was before each step
    assert len(during) > 10 and not any(during)
    assert engine.gc.collections[0] > 0 and engine.gc.collections[1] > 0
    engine.journal.close()


@pytest.mark.skipif(not gc_policy.FULL_THRESHOLD, reason="CPython 3.14's collector has no generation 2 threshold")
async def test_the_loop_makes_no_full_collection_of_its_own_and_leaves_the_collector_as_it_found_it(tmp_path):
    """While the loop runs CPython's own full collections are off (runtime/gc_policy.py: each walked every object
    not frozen, tens of milliseconds at thousands of trades, between a crossing and its exit); once it ends the
    process's thresholds are as they were."""
    engine, _trades, _seen = await two_open_trades(tmp_path, {})
    next_events, during = engine.broker.next_events, []

    async def watched(wake_at_ns: int | None) -> list:
        during.append(gc.get_threshold()[2])
        return await next_events(wake_at_ns)

    engine.broker.next_events = watched  # type: ignore[method-assign]
    before = gc.get_threshold()
    try:
        await engine.run_until(engine.broker.now_ns() + NS)
        assert during and set(during) == {gc_policy.NEVER}
        assert gc.get_threshold() == before and before[2] != gc_policy.NEVER
    finally:
        engine.journal.close()


async def test_a_storm_steps_held_exits_go_out_before_the_steps_collection(tmp_path):
    """In a storm (less than half a burst left) a step's exits wait for the end of the budget's hold; the step's
    collection must come after that too - the collector's block is the step's outermost (found by an independent
    review: with it innermost every other test passed)."""
    engine, trades, seen = await two_open_trades(tmp_path, {"rate": 4, "burst": 4})
    for _ in range(3):
        engine.budget.charge()

    def watch(phase: str, info: dict) -> None:
        if phase == "start":
            seen.append(("gc", info["generation"]))

    saved = gc.get_threshold()
    gc.collect()
    gc.set_threshold(1, 1, 1_000_000)  # the step's end will collect
    gc.callbacks.append(watch)
    try:
        ticks = [crossing(engine, trades[0], 1), crossing(engine, trades[1], 2)]
        seen.clear()
        engine.step(ticks)
    finally:
        gc.callbacks.remove(watch)
        gc.set_threshold(*saved)
    kinds = [k for k, _ in seen]
    assert "place" in kinds and "gc" in kinds, seen
    assert kinds.index("gc") > max(i for i, k in enumerate(kinds) if k == "place"), seen
    engine.journal.close()


async def test_a_step_that_raises_leaves_the_collector_on(tmp_path):
    engine, trades, _seen = await two_open_trades(tmp_path, {})

    class Broken(Exception):
        pass

    def broken(events: list) -> None:
        raise Broken

    engine.dispatch = broken  # type: ignore[method-assign]
    with pytest.raises(Broken):
        engine.step([crossing(engine, trades[0], 1)])
    assert gc.isenabled() and engine.gc._was_enabled == []
    engine.journal.close()


def taken_fields(intent: OrderIntent) -> tuple:
    """Every field of ``intent`` but its key, in order."""
    return (intent.trade_id, intent.leg, intent.user, intent.account, intent.symbol, intent.action, intent.qty,
            intent.order_type, intent.limit_price, intent.priority, intent.created_ns)


async def test_an_exit_decided_under_a_key_already_used_halts_its_trade_and_the_others_exits_go_on(tmp_path, caplog):
    """A fault, not a market event: the trade manager decides an exit whose key is already an order's (its state and
    its orders disagree).  The executor refuses to send it; the engine halts that one trade with an ERROR and an
    exit alert, and the other trade's exit of the same step still goes out - the refusal used to end the step (and
    the engine) with the rest of the step's exits unsent."""
    engine, trades, seen = await two_open_trades(tmp_path, {})
    first, second = trades
    key = f"{engine.trades.key_prefix}{first.id}:stop:1"  # the key its stop's first fire will use
    taken = OrderIntent(key, first.id, "stop", first.request.user, first.request.account or "", first.symbol,
                        Action.SELL, Decimal(100), OrderType.MARKET, None, PriorityClass.EXIT_CRITICAL, 0)
    engine.executor.restore(OrderRecord(taken, status=OrderStatus.CANCELLED, attempts=1, order_id=None), set())
    caplog.set_level(logging.ERROR, logger="tickguard.runtime.engine")
    engine.step([crossing(engine, first, 1), crossing(engine, second, 2)])
    assert seen == [("place", "submitting"), ("on_time", None)]  # the second trade's exit, committed and sent
    venue_refs = [o.order.ref for o in engine.broker.venue.exchange.orders.values()]  # type: ignore[attr-defined]
    assert key not in venue_refs and f"{engine.trades.key_prefix}{second.id}:stop:1" in venue_refs
    assert first.state is TradeState.HALTED and "decided a second time" in first.reason
    assert first.inflight == 0 and second.state is TradeState.EXITING
    halted, refused = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert key in halted and "HALTED" in halted
    assert refused.startswith("EXIT REFUSED") and key in refused and "NOT retried" in refused
    assert [a.key for a in engine.exit_alerts] == [key]
    await engine.run_until(engine.broker.now_ns() + 2 * NS)  # nothing is sent for the halted trade, ever
    later = engine.executor.submit(OrderIntent(f"{key}:later", *taken_fields(taken)))  # the executor's own guard
    assert later.status is OrderStatus.CANCELLED and "halted" in later.reason
    assert key not in [o.order.ref for o in engine.broker.venue.exchange.orders.values()]  # type: ignore[attr-defined]
    assert second.state.value == "closed"
    engine.journal.close()
