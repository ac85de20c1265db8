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

from tickguard.core.exit_rules import StopLoss, TakeProfit, TimeStop
from tickguard.core.model import Side
from tickguard.core.trade_manager import TradeManager
from tickguard.core.trades import TradeRequest
from tickguard.runtime.journal_recorder import JournalRecorder
from tickguard.runtime.order_executor import OrderExecutor
from tickguard.runtime.order_record import OrderRecord
from tickguard.runtime.recovery import restore
from tickguard.store.journal import Journal


class Crash(BaseException):
    pass


def _submitting(recorder: JournalRecorder, intent, clock) -> None:
    record = OrderRecord(intent)
    record.attempts = 1
    entry = {"ts_ns": clock(), "event": "submitting", "attempt": 1, "qty": intent.qty}
    record.events.append(entry)
    recorder.on_order_event(record, "submitting", entry)


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
