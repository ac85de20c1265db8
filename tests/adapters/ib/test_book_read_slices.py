"""The order book read in slices (adapters/ib/recovery.py, book_changes.py): the event loop gets turns during a read
of thousands of orders, and the book is still exactly what one uninterrupted read gives - a message from IB that
may change what was read makes the read start over; the last attempt reads without a turn."""

from __future__ import annotations

import asyncio
import dataclasses
from decimal import Decimal
from typing import Any

import pytest
from ib_async import OrderStatus, Trade
from test_book_reads import add_filled, broker_with, content

from tickguard.adapters.broker import KnownToEngine, OrderBook
from tickguard.adapters.ib import recovery
from tickguard.adapters.ib.ib_client import IBBroker


async def read_counting_turns(broker: IBBroker, during: Any = None,
                              known: KnownToEngine | None = None) -> tuple[OrderBook, int]:
    """Read the book while another task counts the turns the loop gives it (``during(turn)`` runs at each)."""
    turns = 0
    task = asyncio.ensure_future(broker.order_book(full=False, known=known))
    while not task.done():
        await asyncio.sleep(0)
        turns += 1
        if during is not None and not task.done():
            during(turns)
    return task.result(), turns


def counting_attempts(broker: IBBroker) -> list[bool]:
    attempts: list[bool] = []
    read = broker._read_book

    async def counted(*args: Any, **kwargs: Any) -> OrderBook | None:
        attempts.append(kwargs["sliced"])
        return await read(*args, **kwargs)

    broker._read_book = counted  # type: ignore[method-assign]
    return attempts


def test_a_read_of_thousands_of_orders_gives_the_loop_turns_and_the_book_one_read_gives():
    broker = broker_with(2000)
    asyncio.run(broker.order_book(full=False))  # the first read converts everything

    async def both() -> tuple[OrderBook, int, OrderBook]:
        book, turns = await read_counting_turns(broker)
        whole = await broker._read_book([], True, sliced=False)
        assert whole is not None
        return book, turns, whole

    book, turns, whole = asyncio.run(both())
    assert turns >= 2 * 2000 // recovery.BOOK_SLICE  # a turn every BOOK_SLICE ended orders and executions
    assert content(book) == content(whole) and len(book.executions) == 2000 and len(book.ended) == 2000


def test_a_read_leaves_out_what_the_engine_holds_and_is_otherwise_the_whole_book():
    """``known`` (the engine's applied executions and the orders it holds final) is left out of the book as the read
    looks at each entry, in its slices - those that appear during the read too; everything else is as a read
    without it gives, in the same order."""
    broker = broker_with(1200)
    whole = asyncio.run(broker.order_book(full=False))
    refs = [f"tg:8bd45684:T{i:05d}:entry" for i in range(1200)]
    applied = {f"0001.{i}.0" for i in range(0, 1200, 3)}  # a third of the executions, some orders' and not others'
    final = set(refs[:1000:2])
    known = KnownToEngine(applied, final.__contains__)

    def more(turn: int) -> None:  # two more orders' executions reach ib_async as it reads executions: one applied
        if turn == 3:  # (turns 1-2: orders; 3: executions, after it took ib_async's list - its last part reads them)
            add_filled(broker, 1200)
            add_filled(broker, 1201)
            applied.add("0001.1200.0")

    book, turns = asyncio.run(read_counting_turns(broker, more, known))
    assert turns >= 2 * 1200 // recovery.BOOK_SLICE  # still read in slices
    assert [f.exec_id for f in book.executions] == [
        f.exec_id for f in whole.executions if f.exec_id not in applied] + ["0001.1201.0"]
    assert {k: v for k, v in book.ended.items() if k in whole.ended} == {
        k: v for k, v in whole.ended.items() if k not in final}
    assert set(book.ended) - set(whole.ended) == {"tg:8bd45684:T01200:entry", "tg:8bd45684:T01201:entry"}
    assert set(book.details) == set(book.ended)


def test_a_message_from_ib_during_a_read_makes_it_start_over_so_the_book_holds_what_it_changed():
    """A commission report for the first execution arrives after the read looked it up: read on, the book would hold
    the execution without it.  The wrapper noted the execution it names; the read starts over and holds it."""
    broker = broker_with(1200)
    asyncio.run(broker.order_book(full=False))
    first = next(iter(broker.ib.wrapper.fills.values())).execution.execId
    attempts = counting_attempts(broker)
    turns_of_orders = 1200 // recovery.BOOK_SLICE  # then the executions are looked at, the first one first

    def commission_report(turn: int) -> None:
        if turn == turns_of_orders + 1:
            broker.ib.client.decoder.interpret(["59", "1", first, "1.25", "USD", "0", "0", ""])

    book, _ = asyncio.run(read_counting_turns(broker, commission_report))
    assert attempts == [True, True]
    assert {f.exec_id: f.commission for f in book.executions}[first] == 1.25


def test_ticks_during_a_read_do_not_make_it_start_over():
    broker = broker_with(1200)
    asyncio.run(broker.order_book(full=False))
    decoder = broker.ib.client.decoder
    attempts = counting_attempts(broker)

    def ticks(turn: int) -> None:  # tickPrice and tickSize of an unknown request id: decoded, never counted
        decoder.interpret(["1", "6", "9999", "1", "99.5", "100", "0"])
        decoder.interpret(["2", "6", "9999", "0", "100"])

    book, _ = asyncio.run(read_counting_turns(broker, ticks))
    assert attempts == [True] and broker._book_changes.unknown == 0 and len(book.executions) == 1200


def test_a_status_of_an_order_not_looked_at_yet_does_not_make_the_read_start_over_and_is_in_the_book():
    """The read looks at orders in ib_async's order: one named by a message before the read got to it is read as it
    is then - no reason to start over (an exit filling while the day's orders are read is the common case)."""
    broker = broker_with(1200)
    asyncio.run(broker.order_book(full=False))
    last = broker.ib.wrapper.trades[(7, 1200)]
    attempts = counting_attempts(broker)

    def status(turn: int) -> None:
        if turn == 1:  # orderStatus (no version field): orderId, status, filled, remaining, avgFillPrice, permId,
            # parentId, lastFillPrice, clientId, whyHeld, mktCapPrice
            broker.ib.client.decoder.interpret(["3", "1200", "Cancelled", "2", "0", "100", str(last.order.permId),
                                                "0", "100", "7", "", "0"])

    book, _ = asyncio.run(read_counting_turns(broker, status))
    assert attempts == [True] and last.orderStatus.status == "Cancelled"
    assert book.ended[last.order.orderRef][1].value == "cancelled"


def test_orders_and_executions_appearing_during_a_read_are_in_the_book_without_starting_over():
    """ib_async only adds orders and executions (an order the engine places meanwhile, one reported): the read
    takes what appeared in its last part - also a key sent again while its first order had ended, which is working,
    not ended."""
    broker = broker_with(1200)
    asyncio.run(broker.order_book(full=False))
    attempts = counting_attempts(broker)
    w = broker.ib.wrapper
    again = w.trades[(7, 1)]
    added: list[Any] = []

    def appearing(turn: int) -> None:
        if turn == 1:  # while the orders are looked at: a new working order, and a key sent again
            added.append(add_filled(broker, 1200))
            w.trades[(7, 1201)].orderStatus.status = "Submitted"
            w.trades[(7, 5000)] = Trade(again.contract, dataclasses.replace(again.order, orderId=5000, permId=50_000),
                                        OrderStatus(orderId=5000, status="Submitted", filled=0, remaining=2), [], [])
        if turn == 1200 // recovery.BOOK_SLICE + 1:  # while the executions are: an order that filled at once
            added.append(add_filled(broker, 1300))

    book, _ = asyncio.run(read_counting_turns(broker, appearing))
    assert attempts == [True]
    assert book.working["tg:8bd45684:T01200:entry"][0] == 1201 and "tg:8bd45684:T01200:entry" not in book.ended
    assert book.working[again.order.orderRef][0] == 5000 and again.order.orderRef not in book.ended
    assert book.ended["tg:8bd45684:T01300:entry"][1].value == "filled"
    assert {f.execution.execId for f in added} <= {f.exec_id for f in book.executions}


def test_when_every_slice_is_interrupted_the_last_attempt_reads_without_a_turn():
    broker = broker_with(1200)
    asyncio.run(broker.order_book(full=False))
    first = next(iter(broker.ib.wrapper.fills.values()))
    decoder = broker.ib.client.decoder
    reports = iter(range(1, 1000))
    attempts = counting_attempts(broker)

    def a_report_every_turn(turn: int) -> None:
        decoder.interpret(["59", "1", first.execution.execId, f"{next(reports) / 100}", "USD", "0", "0", ""])

    book, _ = asyncio.run(read_counting_turns(broker, a_report_every_turn))
    assert attempts == [True] * (recovery.BOOK_ATTEMPTS - 1) + [False]
    commission = {f.exec_id: f.commission for f in book.executions}[first.execution.execId]
    assert commission is not None and float(commission) == first.commissionReport.commission > 0  # as it is now


def test_a_message_whose_ids_cannot_be_read_counts_as_an_unknown_change_and_still_reaches_ib_async():
    broker = broker_with(1)
    before = broker._book_changes.unknown
    with pytest.raises(AttributeError, match="yield_"):  # ib_async's own method got it (and refused it)
        broker.ib.wrapper.commissionReport(None)  # type: ignore[arg-type]
    assert broker._book_changes.unknown == before + 1


def test_an_open_order_the_client_ends_during_a_read_without_a_message_is_ended_in_the_book():
    """ib_async ends an order not transmitted yet at once when the client cancels it - no message from IB, nothing
    named: the read's last part sees the order ended and books it so, as one read at that moment would."""
    broker = broker_with(1200)
    pending = broker.ib.wrapper.trades[(7, 1)]  # looked at in the read's first slice
    pending.orderStatus.status = "PendingSubmit"
    asyncio.run(broker.order_book(full=False))
    attempts = counting_attempts(broker)

    def cancel(turn: int) -> None:
        if turn == 1:
            pending.orderStatus.status = "Cancelled"  # what ib_async's cancelOrder does to it, sending nothing back

    book, _ = asyncio.run(read_counting_turns(broker, cancel))
    whole = asyncio.run(broker._read_book([], True, sliced=False))
    assert whole is not None and attempts == [True, False]  # (the second: the read just above)
    ref = pending.order.orderRef
    assert ref not in book.working and book.ended[ref][1].value == "cancelled" and content(book) == content(whole)


def test_a_dropped_socket_during_a_read_makes_it_start_over_and_a_book_read_while_down_is_incomplete():
    """A dropped socket empties ib_async's state with no message (``connectionClosed`` -> ``reset``): the read starts
    over, and a book read while the connection is down draws no conclusion (``complete`` False) - an empty book that
    claimed to be complete would make a questioned order look never sent."""
    broker = broker_with(1200)
    broker._can_send = lambda: True  # type: ignore[method-assign]  # as when connected
    w = broker.ib.wrapper
    w.trades[(7, 1)].orderStatus.status = "Submitted"
    assert asyncio.run(broker.order_book(full=False)).complete
    attempts = counting_attempts(broker)
    down: list[int] = []

    def drop(turn: int) -> None:
        if turn == 1200 // recovery.BOOK_SLICE + 1:  # while the executions are looked at
            w.connectionClosed()
            broker._can_send = lambda: False  # type: ignore[method-assign]
            down.append(turn)

    book, _ = asyncio.run(read_counting_turns(broker, drop))
    whole = asyncio.run(broker._read_book([], True, sliced=False))
    assert down and attempts[:2] == [True, True] and not book.complete
    assert not book.working and not book.ended and not book.executions and content(book) == content(whole)


def test_another_clients_open_order_of_a_tickguard_key_ending_during_a_read_makes_it_start_over():
    """A master client sees every client's orders; one of a tickguard key (a journal's order placed under another
    client id) that fills while the read goes on belongs in ``ended``, as one read at the mark would have it."""
    broker = broker_with(1200)
    w = broker.ib.wrapper
    base = w.trades[(7, 1)]
    order = dataclasses.replace(base.order, orderId=9000, clientId=9, permId=99_999,
                                orderRef="tg:8bd45684:X00001:entry")
    status = OrderStatus(orderId=9000, status="Submitted", permId=99_999, clientId=9)
    other = Trade(base.contract, order, status, [], [])
    w.trades = {(9, 9000): other, **w.trades}  # early in the day: looked at in the first slice
    asyncio.run(broker.order_book(full=False))
    attempts = counting_attempts(broker)

    def filled(turn: int) -> None:
        if turn == 1:
            broker.ib.client.decoder.interpret(["3", "9000", "Filled", "2", "0", "100", "99999", "0", "100", "9", "",
                                                "0"])

    book, _ = asyncio.run(read_counting_turns(broker, filled))
    whole = asyncio.run(broker._read_book([], True, sliced=False))
    assert attempts[:2] == [True, True] and order.orderRef in book.ended and content(book) == content(whole)


def test_a_key_working_under_one_order_is_not_ended_by_another_of_its_orders_ending_during_the_read():
    broker = broker_with(1200)
    w = broker.ib.wrapper
    a = w.trades[(7, 1)]
    a.orderStatus.status = "Submitted"
    b_order = dataclasses.replace(a.order, orderId=5000, permId=50_000, orderType="LMT", lmtPrice=1.0, transmit=False)
    b = Trade(a.contract, b_order, OrderStatus(orderId=5000, status="PendingSubmit"), [], [])
    w.trades = {(7, 1): a, (7, 5000): b, **{k: v for k, v in w.trades.items() if k != (7, 1)}}
    asyncio.run(broker.order_book(full=False))

    def cancel(turn: int) -> None:
        if turn == 1:
            b.orderStatus.status = "Cancelled"  # ib_async's cancelOrder of an order not transmitted: no message

    book, _ = asyncio.run(read_counting_turns(broker, cancel))
    whole = asyncio.run(broker._read_book([], True, sliced=False))
    ref = a.order.orderRef
    assert ref in book.working and ref not in book.ended and book.details[ref].order_type.value == "MKT"
    assert content(book) == content(whole)


def test_two_reads_at_once_keep_each_others_names():
    """Names noted during a turn serve every read under way: one read's turn does not drop what another needs."""
    broker = broker_with(1200)
    asyncio.run(broker.order_book(full=False))
    first = next(iter(broker.ib.wrapper.fills.values())).execution.execId
    attempts = counting_attempts(broker)

    async def both() -> tuple[OrderBook, OrderBook]:
        one = asyncio.ensure_future(broker.order_book(full=False))
        two = asyncio.ensure_future(broker.order_book(full=False))
        turns = 0
        while not (one.done() and two.done()):
            await asyncio.sleep(0)
            turns += 1
            if turns == 1200 // recovery.BOOK_SLICE + 1:  # both are among the executions
                broker.ib.client.decoder.interpret(["59", "1", first, "2.5", "USD", "0", "0", ""])
        return one.result(), two.result()

    one, two = asyncio.run(both())
    assert attempts.count(True) >= 4  # each started over
    for book in (one, two):
        assert {f.exec_id: f.commission for f in book.executions}[first] == Decimal("2.5")
    assert broker._book_changes.readers == 0 and broker._book_changes.named == []
