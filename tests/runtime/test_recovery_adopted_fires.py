"""Recovery of fires journaled ahead of their trade's snapshot (``recovery.adopt_journaled_fires``) when a trade fired
more than one exit before the restart (found by an independent review, as counterexamples).

A take-profit (tp1, half) and the stop fired in one exit's commit (two ticks of one symbol evaluated before its
flush; or tp1 at the ticks and a time stop in the same step's ``on_time``): both exits journaled, the snapshot
waiting.  Killed between the two commits, recovery once adopted them one by one in the order rows' order - the stop
first when both had the same ``created_ns`` (one engine step in virtual time: "stop:1" sorts before "tp1:1") - and
the stop's close saw tp1's quantity as not in flight and decided a new exit for it: 150 shares sold of a 100-share
long.  Now every uncounted order of a trade is counted before it closes (``TradeManager.adopt_orders``)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from recovery_rig import Rig, empty_book
from test_journal_recorder import _submitting

from tickguard.adapters.broker import OrderBook
from tickguard.core.exit_rules import StopLoss, TakeProfit, TimeStop
from tickguard.core.model import Side
from tickguard.core.order_state import OrderStatus
from tickguard.core.trade_manager import TradeManager
from tickguard.core.trades import TradeRequest
from tickguard.runtime.journal_recorder import JournalRecorder
from tickguard.runtime.order_executor import OrderExecutor
from tickguard.runtime.recovery import restore
from tickguard.store.journal import Journal


class Crash(BaseException):
    pass


def _rig(target, clock, market):
    journal = Journal.open(target)
    tm = TradeManager(clock, market.vol.get, market.quotes.get, instance_id=journal.journal_id)
    recorder = JournalRecorder(journal, tm, 0)
    tm.on_event = recorder.on_trade_event
    return journal, tm, recorder


@pytest.mark.parametrize("same_ns", [True, False], ids=["one_step_clock", "wall_clock"])
def test_tp_and_stop_fired_in_one_exit_commit_are_not_exited_twice_after_restart(journal_target, clock, market,
                                                                                  same_ns):
    journal, tm, recorder = _rig(journal_target, clock, market)
    market.tick("AAA", 100.0, 100.02)
    with journal.batch():
        trade = tm.submit(TradeRequest(symbol="AAA", side=Side.LONG, qty=100,
                                       rules=[StopLoss(price=99.0), TakeProfit(price=101.0, fraction=Decimal("0.5")),
                                              TakeProfit(price=105.0, fraction=Decimal("0.5"))]))
        [entry] = tm.outbox
        tm.outbox = []
        tm.on_fill(entry, 100, 100.0, clock(), 0)
    assert trade.state.value == "open"
    step_now = clock.now + 10_000_000
    try:
        with journal.batch():
            up = market.tick("AAA", 101.01, 101.03)  # tp1 crosses
            down = market.tick("AAA", 98.99, 99.01)  # and, in the same socket read, the stop
            if same_ns:
                clock.now = step_now  # the engine's clock during one step (the simulator's virtual time)
            tm.evaluate(up)
            if not same_ns:
                clock.advance(0.000001)  # a live clock moves on between the two decisions
            tm.evaluate(down)
            exits, tm.outbox = tm.outbox, []
            assert [i.leg for i in exits] == ["tp1", "stop"]
            assert sum(i.qty for i in exits) == 100
            for intent in exits:
                _submitting(recorder, intent, clock)
            journal.commit_now(early=True)  # the exit's commit: both order rows, the snapshot waits
            raise Crash  # killed before the step's commit
    except Crash:
        pass
    journal.close()

    # restart
    journal2 = Journal.open(journal_target)
    tm2 = TradeManager(clock, market.vol.get, market.quotes.get, instance_id=journal2.journal_id)
    executor = OrderExecutor(None, tm2, clock, journal=None)  # only restore() is used: nothing is sent
    report = restore(journal2, tm2, executor)
    restored = tm2.trades[trade.id]
    new_exits = [i for i in tm2.outbox if i.is_exit]
    journal2.close()
    assert sorted(report.fires_adopted) == sorted(i.key for i in exits)
    # the position is 100; 100 are already in flight in the two journaled exits: nothing more may be decided
    assert new_exits == [], (f"a new exit decided at recovery: {[(i.key, i.qty) for i in new_exits]}; in flight "
                             f"{restored.inflight} of open {restored.open_qty}")
    assert restored.inflight == restored.open_qty == 100


def test_tp_at_the_ticks_then_time_stop_in_on_time_same_step(journal_target, clock, market):
    """The same with a time stop: tp1 fires at the step's ticks (exit's commit #1, snapshot waits), the time stop
    comes due in the same step's on_time (exit's commit #2, snapshot still waits); killed before the step's commit."""
    journal, tm, recorder = _rig(journal_target, clock, market)
    market.tick("AAA", 100.0, 100.02)
    with journal.batch():
        trade = tm.submit(TradeRequest(symbol="AAA", side=Side.LONG, qty=100,
                                       rules=[StopLoss(price=95.0), TakeProfit(price=101.0, fraction=Decimal("0.5")),
                                              TakeProfit(price=105.0, fraction=Decimal("0.5")),
                                              TimeStop(after_seconds=10)]))
        [entry] = tm.outbox
        tm.outbox = []
        tm.on_fill(entry, 100, 100.0, clock(), 0)
    deadline = trade.time_deadline_ns
    try:
        with journal.batch():
            up = market.tick("AAA", 101.01, 101.03)
            clock.now = deadline  # the step's clock: the tick and the deadline in one step
            tm.evaluate(up)
            exits, tm.outbox = tm.outbox, []
            for intent in exits:
                _submitting(recorder, intent, clock)
            journal.commit_now(early=True)
            tm.on_time(clock.now)
            more, tm.outbox = tm.outbox, []
            assert [i.leg for i in exits + more] == ["tp1", "time"]
            for intent in more:
                _submitting(recorder, intent, clock)
            journal.commit_now(early=True)
            raise Crash
    except Crash:
        pass
    journal.close()
    journal2 = Journal.open(journal_target)
    tm2 = TradeManager(clock, market.vol.get, market.quotes.get, instance_id=journal2.journal_id)
    executor = OrderExecutor(None, tm2, clock, journal=None)
    restore(journal2, tm2, executor)
    restored = tm2.trades[trade.id]
    new_exits = [i for i in tm2.outbox if i.is_exit]
    journal2.close()
    assert new_exits == [], (f"a new exit decided at recovery: {[(i.key, i.qty) for i in new_exits]}; in flight "
                             f"{restored.inflight} of open {restored.open_qty}")


# ---- crash scenarios on the engine's parts (tests/runtime/recovery_rig.py), from a second independent review: the
# ---- first failed before the recorder wrote a trade whole when its stop fired with nothing left to sell


@pytest.fixture
def target(tmp_path):
    return str(tmp_path / "j.db")


def open_trade(r: Rig, rules, qty=100, fill=None):
    r.market.tick("AAA", 100.0, 100.02)
    with r.step():
        trade = r.tm.submit(TradeRequest(symbol="AAA", side=Side.LONG, qty=qty, rules=rules))
    with r.step():
        r.ack(trade.entry_key)
        r.fill(trade.entry_key, fill or qty, 100.0)
    return trade


def exits_of(r: Rig, trade):
    return sorted(k for k, rec in r.ex.orders.items() if rec.intent.trade_id == trade.id and rec.intent.is_exit)


def crash_step(r: Rig, body):
    """A step whose exit's commit is durable; killed before the step's own commit."""
    try:
        with r.journal.batch():
            body()
            r.flush()
            raise Crash
    except Crash:
        pass


def stop_rejected_once(r: Rig, trade) -> str:
    """The trade's stop fires and its first exit is acknowledged, then rejected: its key."""
    with r.step():
        r.tm.evaluate(r.market.tick("AAA", 98.99, 99.01))
    [k1] = exits_of(r, trade)
    with r.step():
        r.ack(k1)
    with r.step():
        r.reject(k1)
    return k1


def test_retry_while_closing_stop2_after_stop1_rejected(target, clock, market):
    r = Rig(target, clock, market)
    trade = open_trade(r, [StopLoss(price=99.0)])
    k1 = stop_rejected_once(r, trade)
    assert trade.stop.inflight == 0 and trade.closing
    clock.advance(5)
    crash_step(r, lambda: r.tm.on_time(clock()))
    keys = exits_of(r, trade)
    assert len(keys) == 2, keys
    k2 = keys[1]
    # restart: stop:2 never reached the broker; stop:1 ended rejected
    book = OrderBook({}, {k1: (r.broker.ids[k1], OrderStatus.REJECTED)}, [], {}, "", True)
    n = r.restart(book)
    t2 = n.tm.trades[trade.id]
    assert n.report.fires_adopted == [k2]
    placed = [o.ref for o in n.broker.placed]
    assert placed == [k2], placed  # re-sent once, nothing decided anew
    assert t2.inflight == t2.open_qty == 100 and t2.closing


def test_retry_while_closing_stop2_rejected_while_down(target, clock, market):
    r = Rig(target, clock, market)
    trade = open_trade(r, [StopLoss(price=99.0)])
    k1 = stop_rejected_once(r, trade)
    clock.advance(5)
    crash_step(r, lambda: r.tm.on_time(clock()))
    k2 = exits_of(r, trade)[1]
    book = OrderBook({}, {k1: (r.broker.ids[k1], OrderStatus.REJECTED), k2: (r.broker.ids.get(k2, 0) or 555,
                                                                            OrderStatus.REJECTED)}, [], {}, "", True)
    n = r.restart(book)
    placed = [o.ref for o in n.broker.placed]
    assert len(placed) == 1 and placed[0].endswith(":stop:3"), placed
    assert sum(o.qty for o in n.broker.placed) == 100


def test_tp1_filled_then_stop_for_the_rest(target, clock, market):
    r = Rig(target, clock, market)
    trade = open_trade(r, [StopLoss(price=99.0), TakeProfit(price=101.0, fraction=Decimal("0.5")),
                           TakeProfit(price=105.0, fraction=Decimal("0.5"))])
    with r.step():
        r.tm.evaluate(market.tick("AAA", 101.01, 101.03))
    [tp] = exits_of(r, trade)
    with r.step():
        r.ack(tp)
        r.fill(tp, 50, 101.01)
    crash_step(r, lambda: r.tm.evaluate(market.tick("AAA", 98.99, 99.01)))
    stop = [k for k in exits_of(r, trade) if ":stop:" in k]
    assert len(stop) == 1
    n = r.restart(empty_book())
    t2 = n.tm.trades[trade.id]
    assert [o.ref for o in n.broker.placed] == stop
    assert t2.inflight == t2.open_qty == 50 and t2.closing


def test_two_targets_and_stop_in_one_read(target, clock, market):
    r = Rig(target, clock, market)
    trade = open_trade(r, [StopLoss(price=99.0), TakeProfit(price=101.0, fraction=Decimal("0.3")),
                           TakeProfit(price=101.01, fraction=Decimal("0.3")),
                           TakeProfit(price=110.0, fraction=Decimal("0.4"))])

    def body():
        r.tm.evaluate(market.tick("AAA", 101.02, 101.04))
        r.tm.evaluate(market.tick("AAA", 98.99, 99.01))
    crash_step(r, body)
    keys = exits_of(r, trade)
    assert len(keys) == 3
    n = r.restart(empty_book())
    t2 = n.tm.trades[trade.id]
    assert sorted(o.ref for o in n.broker.placed) == keys
    assert sum(o.qty for o in n.broker.placed) == 100
    assert t2.inflight == t2.open_qty == 100 and t2.closing


def test_full_size_target_and_stop_in_one_read_stays_closing(target, clock, market):
    """tp1 (the whole position) and then the stop in one read: the stop fires with nothing left to sell (no order
    row), the trade is closing; the snapshot waits (the trade is closing and its tp1 row is in the commit).  After a
    restart nothing in the journal says the stop fired: is the trade still closing?"""
    r = Rig(target, clock, market)
    trade = open_trade(r, [StopLoss(price=99.0), TakeProfit(price=101.0)])

    def body():
        r.tm.evaluate(market.tick("AAA", 101.01, 101.03))
        r.tm.evaluate(market.tick("AAA", 98.99, 99.01))
    crash_step(r, body)
    assert trade.closing and trade.close_reason == "stop_loss", (trade.closing, trade.close_reason)
    [tp] = exits_of(r, trade)
    assert ":tp1:" in tp  # the stop fired with nothing left to sell: no row of its own
    n = r.restart(empty_book())
    t2 = n.tm.trades[trade.id]
    assert n.report.fires_adopted == []  # no stop row to rebuild the fire from: the trade was written whole
    assert t2.closing and t2.close_reason == trade.close_reason, (
        f"pre-crash: closing={trade.closing} reason={trade.close_reason}; after restart: closing={t2.closing} "
        f"reason={t2.close_reason}, stop armed again: {t2.stop.level_id in n.tm.book}")


def test_partial_entry_working_stop_fires(target, clock, market):
    r = Rig(target, clock, market)
    trade = open_trade(r, [StopLoss(price=99.0)], qty=100, fill=40)
    assert trade.entry_working
    crash_step(r, lambda: r.tm.evaluate(market.tick("AAA", 98.99, 99.01)))
    [k] = exits_of(r, trade)
    entry_id = r.broker.ids[trade.entry_key]
    book = OrderBook({trade.entry_key: (entry_id, Decimal(40))}, {}, [], {}, "", True)
    n = r.restart(book)
    t2 = n.tm.trades[trade.id]
    assert [o.ref for o in n.broker.placed] == [k]
    assert entry_id in n.broker.cancelled, "the working entry of a stopped trade is not cancelled after the restart"
    assert t2.inflight == t2.open_qty == 40 and t2.closing


def test_time_stop_after_stop1_rejected_then_crash(target, clock, market):
    r = Rig(target, clock, market)
    trade = open_trade(r, [StopLoss(price=99.0), TimeStop(after_seconds=3)])
    k1 = stop_rejected_once(r, trade)
    clock.now = trade.time_deadline_ns  # time stop due before the retry
    crash_step(r, lambda: r.tm.on_time(clock()))
    keys = exits_of(r, trade)
    new = [k for k in keys if k != k1]
    assert len(new) == 1, keys
    n = r.restart(OrderBook({}, {k1: (r.broker.ids[k1], OrderStatus.REJECTED)}, [], {}, "", True))
    t2 = n.tm.trades[trade.id]
    assert [o.ref for o in n.broker.placed] == new
    assert t2.inflight == t2.open_qty == 100
    clock.advance(10)
    with n.step():
        n.tm.on_time(clock())
    assert [o.ref for o in n.broker.placed] == new


def full_target_then_stop(r: Rig, crash: bool):
    market = r.market
    market.tick("AAA", 100.0, 100.02)
    with r.step():
        trade = r.tm.submit(TradeRequest(symbol="AAA", side=Side.LONG, qty=100,
                                         rules=[StopLoss(price=99.0), TakeProfit(price=101.0)]))
    with r.step():
        r.ack(trade.entry_key)
        r.fill(trade.entry_key, 100, 100.0)
    try:
        with r.journal.batch():
            r.tm.evaluate(market.tick("AAA", 101.01, 101.03))  # tp1 (all 100)
            r.tm.evaluate(market.tick("AAA", 98.99, 99.01))  # and the stop, same read: closing, nothing to sell
            r.flush()
            if crash:
                raise Crash
    except Crash:
        pass
    [tp] = [k for k, rec in r.ex.orders.items() if rec.intent.is_exit]
    if crash:
        r = r.restart(empty_book())  # tp1:1 never left: re-sent with its key
    t = r.tm.trades[trade.id]
    with r.step():
        r.ack(tp)
    with r.step():
        r.reject(tp)  # the broker refuses the take-profit for good
    r.market.tick("AAA", 99.5, 99.52)  # the price is back above the stop
    r.clock.advance(30)
    with r.step():
        r.tm.evaluate(r.market.quotes["AAA"])
        r.tm.on_time(r.clock())  # the retry is due
    sells = [o for o in r.broker.placed if not o.ref.endswith(":entry") and o.ref != tp]
    return t, sells


def test_without_a_crash_the_stopped_trade_is_flattened_after_its_target_fails(target, clock, market):
    t, sells = full_target_then_stop(Rig(target, clock, market), crash=False)
    assert t.closing and sum(o.qty for o in sells) == 100


def test_after_a_crash_between_the_commits_a_stop_that_fired_with_nothing_to_sell_is_not_forgotten(target, clock,
                                                                                                    market):
    t, sells = full_target_then_stop(Rig(target, clock, market), crash=True)
    assert t.closing and sum(o.qty for o in sells) == 100, (
        f"restarted: closing={t.closing}, state={t.state.value}, open={t.open_qty}, sells after tp1 failed: "
        f"{[(o.ref, o.qty) for o in sells]}")
