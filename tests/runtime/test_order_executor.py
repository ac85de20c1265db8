"""The executor against a recording order sink (our own protocol, not the IB client)."""

from decimal import Decimal

import pytest

from tickguard.adapters.broker import CommissionEvent, FillEvent, OrderStatusEvent
from tickguard.core.model import Action, OrderIntent, OrderType, PriorityClass
from tickguard.core.order_state import OrderStatus
from tickguard.runtime.order_executor import DuplicateIntent, OrderExecutor, OrderRecord


class Sink:
    def __init__(self):
        self.placed = []
        self.cancelled = []

    def place_order(self, order):
        self.placed.append(order)
        return len(self.placed)

    def cancel_order(self, order_id):
        self.cancelled.append(order_id)


class Listener:
    def __init__(self):
        self.fills = []
        self.closed = []

    def on_fill(self, intent, qty, price, ts, commission, execution=None):
        self.fills.append((intent.key, qty, price, commission))

    def on_intent_closed(self, intent, status, remaining, reason):
        self.closed.append((intent.key, status, remaining, reason))


def intent(key="tg:T1:stop:1", qty=100.0):
    return OrderIntent(key, "T1", "stop", "u", "DU1", "AAA", Action.SELL, qty, OrderType.MARKET, None,
                       PriorityClass.EXIT_CRITICAL, 0)


@pytest.fixture
def parts(clock):
    sink, listener = Sink(), Listener()
    return sink, listener, OrderExecutor(sink, listener, clock, max_attempts=3, retry_backoff_ns=1_000)


def status(oid, st, filled=0.0, remaining=100.0, code=None, reason=""):
    return OrderStatusEvent(oid, "tg:T1:stop:1", st, filled, remaining, 0, reason, code)


def test_key_goes_into_order_ref_and_duplicates_are_refused(parts):
    sink, _, ex = parts
    ex.submit(intent())
    assert sink.placed[0].ref == "tg:T1:stop:1"
    with pytest.raises(DuplicateIntent, match="already submitted"):
        ex.submit(intent())
    assert len(sink.placed) == 1 and ex.duplicates_refused == 1


def test_partial_fills_then_filled(parts):
    _, listener, ex = parts
    rec = ex.submit(intent())
    ex.on_status(status(1, "submitted"))
    assert rec.status is OrderStatus.SUBMITTED
    ex.on_fill(FillEvent(1, "tg:T1:stop:1", "e1", "DU1", "AAA", Action.SELL, 40, 99.0, 0, 1.0))
    ex.on_fill(FillEvent(1, "tg:T1:stop:1", "e2", "DU1", "AAA", Action.SELL, 60, 98.0, 0, 1.0))
    assert listener.fills == [("tg:T1:stop:1", 40, 99.0, 1.0), ("tg:T1:stop:1", 60, 98.0, 1.0)]
    assert rec.status is OrderStatus.FILLED and rec.avg_price == Decimal("98.4")
    assert listener.closed == [("tg:T1:stop:1", "filled", 0.0, "")]
    ex.on_status(status(1, "filled", 100, 0))  # a late duplicate status changes nothing
    assert len(listener.closed) == 1


def test_pacing_rejection_is_retried_with_backoff_then_gives_up(parts, clock):
    sink, listener, ex = parts
    ex.submit(intent())
    ex.on_status(status(1, "rejected", code=100, reason="pacing"))
    assert len(sink.placed) == 1 and ex.next_deadline() == clock() + 1_000
    ex.on_time(clock() + 999)
    assert len(sink.placed) == 1
    ex.on_time(clock() + 1_000)
    assert len(sink.placed) == 2 and sink.placed[1].ref == "tg:T1:stop:1"
    ex.on_status(status(2, "rejected", code=100))
    ex.on_time(clock() + 10_000)
    ex.on_status(status(3, "rejected", code=100, reason="still pacing"))
    assert len(sink.placed) == 3
    assert listener.closed == [("tg:T1:stop:1", "rejected", 100.0, "still pacing")]


def test_final_rejection_is_not_retried(parts):
    sink, listener, ex = parts
    ex.submit(intent())
    ex.on_status(status(1, "rejected", code=201, reason="Order rejected - reason: no permissions"))
    assert len(sink.placed) == 1
    assert listener.closed == [("tg:T1:stop:1", "rejected", 100.0, "Order rejected - reason: no permissions")]


def test_retry_sends_only_the_unfilled_rest(parts, clock):
    sink, _, ex = parts
    ex.submit(intent())
    ex.on_fill(FillEvent(1, "tg:T1:stop:1", "e1", "DU1", "AAA", Action.SELL, 30, 99.0, 0))
    ex.on_status(status(1, "rejected", 30, 70, code=1100))
    ex.on_time(clock() + 10**9)
    assert sink.placed[1].qty == 70


def test_cancel_working_and_waiting_orders(parts, clock):
    sink, listener, ex = parts
    ex.submit(intent("k1"))
    ex.cancel("k1")
    assert sink.cancelled == [1]
    ex.on_status(OrderStatusEvent(1, "k1", "cancelled", 0, 100, 0, "cancelled by client"))
    assert listener.closed[-1] == ("k1", "cancelled", 100.0, "cancelled by client")
    ex.submit(intent("k2"))
    ex.on_status(OrderStatusEvent(2, "k2", "rejected", 0, 100, 0, "pacing", 100))
    ex.cancel("k2")  # waiting for its retry: closed without touching the broker
    assert listener.closed[-1][:2] == ("k2", "cancelled") and sink.cancelled == [1]
    ex.on_time(clock() + 10**9)
    assert len(sink.placed) == 2


def test_events_for_unknown_orders_are_counted_not_applied(parts):
    _, listener, ex = parts
    ex.on_fill(FillEvent(99, "x", "e", "DU1", "AAA", Action.BUY, 1, 1.0, 0))
    assert ex.unknown_events == 1 and listener.fills == []


# ------------------------------------------------------------------------------------ the state machine

def fill(oid, exec_id, qty, price=99.0):
    return FillEvent(oid, "tg:T1:stop:1", exec_id, "DU1", "AAA", Action.SELL, qty, price, 0)


def anomaly_logs(caplog):
    return [r for r in caplog.records if r.name == "tickguard.runtime.order_executor" and r.levelname == "ERROR"]


def test_normal_life_goes_through_the_states_without_anomaly(parts):
    _, listener, ex = parts
    rec = ex.submit(intent())
    assert rec.status is OrderStatus.SUBMITTING
    ex.on_status(status(1, "submitted"))
    assert rec.status is OrderStatus.SUBMITTED
    ex.on_fill(fill(1, "e1", 40))
    assert rec.status is OrderStatus.PARTIALLY_FILLED
    ex.on_status(status(1, "submitted", 40, 60))  # IB still says Submitted for a partially filled order
    assert rec.status is OrderStatus.PARTIALLY_FILLED
    ex.on_fill(fill(1, "e2", 60))
    ex.on_status(status(1, "filled", 100, 0))  # a repeat of the final state is no news
    assert rec.status is OrderStatus.FILLED and ex.anomalies == 0
    assert listener.closed == [("tg:T1:stop:1", "filled", 0.0, "")]


def test_a_status_after_filled_is_an_anomaly_logged_with_the_history_and_not_applied(parts, caplog):
    _, listener, ex = parts
    rec = ex.submit(intent())
    ex.on_status(status(1, "submitted"))
    ex.on_fill(fill(1, "e1", 100))
    assert rec.status is OrderStatus.FILLED
    with caplog.at_level("ERROR"):
        ex.on_status(status(1, "submitted"))
        ex.on_status(status(1, "cancelled", 100, 0, reason="too late"))
    assert rec.status is OrderStatus.FILLED and ex.anomalies == 2
    assert listener.closed == [("tg:T1:stop:1", "filled", 0.0, "")]  # closed once, as filled
    [first, second] = anomaly_logs(caplog)
    message = first.getMessage()
    assert "tg:T1:stop:1" in message and "filled -> submitted" in message and "refused" in message
    assert "'event': 'fill'" in message and "'exec_id': 'e1'" in message  # the order's history
    assert "filled -> cancelled" in second.getMessage()
    assert [e["event"] for e in rec.events][-2:] == ["anomaly", "anomaly"]
    assert rec.events[-2] | {"ts_ns": 0} == {"ts_ns": 0, "event": "anomaly", "from": "filled", "to": "submitted",
                                            "cause": "broker reported submitted after the order was filled"}


def test_a_backwards_report_on_a_live_order_is_refused(parts, caplog, clock):
    """An order waiting for its retry (nothing at the broker) cannot be 'cancel pending' at the broker."""
    sink, _, ex = parts
    rec = ex.submit(intent())
    ex.on_status(status(1, "rejected", code=100, reason="pacing"))
    assert rec.status is OrderStatus.RETRY_WAIT
    with caplog.at_level("ERROR"):
        ex.on_status(status(1, "cancelling"))
    assert rec.status is OrderStatus.RETRY_WAIT and ex.anomalies == 1
    assert "retry_wait -> cancelling" in anomaly_logs(caplog)[0].getMessage()
    ex.on_time(clock() + 10**9)
    assert len(sink.placed) == 2  # still retried, as if the report had never come


def test_an_engine_only_state_reported_by_a_broker_is_refused(parts, caplog):
    _, _, ex = parts
    rec = ex.submit(intent())
    ex.on_status(status(1, "submitted"))
    with caplog.at_level("ERROR"):
        ex.on_status(status(1, "retry_wait"))
    assert rec.status is OrderStatus.SUBMITTED and ex.anomalies == 1 and len(anomaly_logs(caplog)) == 1


def test_a_fill_after_cancelled_is_applied_and_the_state_stays_cancelled(parts, caplog):
    """The IB race: the cancel is confirmed, then an execution that was on its way arrives.  A fill is money."""
    sink, listener, ex = parts
    rec = ex.submit(intent("k1"))
    ex.on_status(OrderStatusEvent(1, "k1", "submitted", 0, 100, 0))
    ex.cancel("k1")
    assert rec.status is OrderStatus.CANCELLING and sink.cancelled == [1]
    ex.on_status(OrderStatusEvent(1, "k1", "cancelled", 0, 100, 0, "cancelled by client"))
    with caplog.at_level("WARNING"):
        ex.on_fill(FillEvent(1, "k1", "late", "DU1", "AAA", Action.SELL, 100, 99.0, 0))
        ex.on_fill(FillEvent(1, "k1", "late", "DU1", "AAA", Action.SELL, 100, 99.0, 0))  # once per exec id
    assert listener.fills == [("k1", 100, 99.0, 0.0)] and rec.filled == 100
    assert rec.status is OrderStatus.CANCELLED and ex.late_fills == 1 and ex.anomalies == 0
    assert listener.closed == [("k1", "cancelled", 100.0, "cancelled by client")]  # the trade hears one close
    assert any("after the order was cancelled" in r.getMessage() for r in caplog.records)


def test_the_cancel_can_lose_the_race_to_the_fill(parts):
    _, listener, ex = parts
    rec = ex.submit(intent("k1"))
    ex.on_status(OrderStatusEvent(1, "k1", "submitted", 0, 100, 0))
    ex.cancel("k1")
    ex.on_fill(FillEvent(1, "k1", "e1", "DU1", "AAA", Action.SELL, 30, 99.0, 0))
    assert rec.status is OrderStatus.CANCELLING  # still being cancelled, 30 filled
    ex.on_fill(FillEvent(1, "k1", "e2", "DU1", "AAA", Action.SELL, 70, 99.0, 0))
    assert rec.status is OrderStatus.FILLED and listener.closed == [("k1", "filled", 0.0, "")]


def test_an_order_being_cancelled_is_never_retried_even_without_the_flag(parts):
    """The table has no cancelling -> retry_wait: a record restored as cancelling (the in-memory flag lost with
    the restart) that meets a pacing refusal is closed, not sent again."""
    sink, listener, ex = parts
    rec = OrderRecord(intent(), status=OrderStatus.CANCELLING, attempts=1, order_id=7)
    ex.restore(rec, set())
    ex.on_status(status(7, "rejected", code=100, reason="pacing"))
    assert rec.status is OrderStatus.REJECTED and ex.next_deadline() is None and sink.placed == []
    assert listener.closed == [("tg:T1:stop:1", "rejected", 100.0, "pacing")] and ex.anomalies == 0


def test_a_repeated_retryable_refusal_does_not_schedule_a_second_retry(parts, clock):
    sink, _, ex = parts
    rec = ex.submit(intent())
    ex.on_status(status(1, "rejected", code=100))
    ex.on_status(status(1, "rejected", code=100))
    assert rec.status is OrderStatus.RETRY_WAIT and len(ex._retries) == 1
    ex.on_time(clock() + 10**9)
    assert len(sink.placed) == 2 and rec.status is OrderStatus.SUBMITTING


def test_recovery_moves_a_journaled_live_order_through_unknown_before_sending_it_again(parts):
    sink, _, ex = parts
    rec = OrderRecord(intent(), status=OrderStatus.SUBMITTED, attempts=1, order_id=7)
    ex.restore(rec, set())
    ex.resend(rec)
    assert [e["event"] for e in rec.events] == ["unknown", "submitting", "sent"]
    assert rec.status is OrderStatus.SUBMITTING and rec.attempts == 2 and len(sink.placed) == 1
    assert ex.anomalies == 0


def test_an_over_fill_is_seen_by_equality_recorded_on_the_order_and_not_passed_on(parts, caplog):
    """0.000001 of a share past the order's quantity is an over-fill - no tolerance hides it.  The order record
    holds the whole execution (it happened at the broker); the trade is handed none of the excess."""
    _, listener, ex = parts
    rec = ex.submit(intent())
    ex.on_status(status(1, "submitted"))
    ex.on_fill(FillEvent(1, "tg:T1:stop:1", "e1", "DU1", "AAA", Action.SELL, 100, 99.0, 0))
    assert ex.overfills == 0 and rec.filled == 100 and ex.halted == set()
    ex.on_fill(FillEvent(1, "tg:T1:stop:1", "e2", "DU1", "AAA", Action.SELL, "0.000001", 99.0, 0))
    assert ex.overfills == 1 and rec.filled == Decimal("100.000001") and "e2" in rec.exec_ids
    assert [f[1] for f in listener.fills] == [100, 0]  # the excess never reaches the trade
    assert ex.halted == {"T1"}
    [line] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    for evidence in ("tg:T1:stop:1", "execution e2", "of 0.000001", "ordered 100", "filled before 100",
                     "excess 0.000001", "HALTED"):
        assert evidence in line, evidence
    assert [e["event"] for e in rec.events][-2:] == ["fill", "overfill"]


def test_an_execution_straddling_the_quantity_passes_on_only_what_fits(parts):
    """60 filled of 100, then an execution of 50: 40 go to the trade, 10 are refused; the record holds 110."""
    _, listener, ex = parts
    rec = ex.submit(intent())
    ex.on_status(status(1, "submitted"))
    ex.on_fill(FillEvent(1, "tg:T1:stop:1", "e1", "DU1", "AAA", Action.SELL, 60, 99.0, 0))
    ex.on_fill(FillEvent(1, "tg:T1:stop:1", "e2", "DU1", "AAA", Action.SELL, 50, 98.0, 0))
    assert [f[1] for f in listener.fills] == [60, 40] and rec.filled == 110
    assert ex.overfills == 1 and rec.status is OrderStatus.FILLED
    overfill = next(e for e in rec.events if e["event"] == "overfill")
    assert (overfill["ordered"], overfill["filled_before"], overfill["qty"], overfill["applied"],
            overfill["excess"]) == (100, 60, 50, 40, 10)


def test_nothing_is_sent_for_a_halted_trade(parts, clock):
    """After an over-fill: a new order, a retry waiting for its backoff and a re-send of the trade never leave."""
    sink, listener, ex = parts
    retry = ex.submit(intent("tg:T1:tp1:1", qty=50))
    ex.on_status(OrderStatusEvent(1, "tg:T1:tp1:1", "rejected", 0, 50, 0, "pacing", 100))
    assert retry.status is OrderStatus.RETRY_WAIT
    ex.submit(intent())
    ex.on_fill(FillEvent(2, "tg:T1:stop:1", "e1", "DU1", "AAA", Action.SELL, "100.000001", 99.0, 0))
    assert ex.halted == {"T1"} and len(sink.placed) == 2
    clock.advance(1.0)
    ex.on_time(clock())  # the retry's backoff is over: not sent, closed
    assert retry.status is OrderStatus.CANCELLED and "halted" in retry.reason
    fresh = ex.submit(intent("tg:T1:stop:2"))
    assert fresh.status is OrderStatus.CANCELLED and "tg:T1:stop:2" not in ex.orders
    assert len(sink.placed) == 2 and ex.withheld == 2
    assert ("tg:T1:stop:2", OrderStatus.CANCELLED, 100, "trade halted") in listener.closed


# ------------------------------------------------------------------------- executions and commissions, once

class CommissionListener(Listener):
    def __init__(self):
        super().__init__()
        self.commissions = []

    def on_commission(self, intent, commission):
        self.commissions.append((intent.key, commission))


@pytest.fixture
def counted(clock):
    sink, listener = Sink(), CommissionListener()
    return listener, OrderExecutor(sink, listener, clock)


def commission(exec_id, amount, oid=1):
    return CommissionEvent(oid, exec_id, amount, 0)


def replay_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.levelname == "INFO" and "seen again" in r.getMessage()]


def test_a_commission_reported_with_the_fill_and_again_after_reconnects_counts_once(counted, caplog):
    listener, ex = counted
    rec = ex.submit(intent())
    with caplog.at_level("INFO", logger="tickguard.runtime.order_executor"):
        ex.on_fill(FillEvent(1, "tg:T1:stop:1", "e1", "DU1", "AAA", Action.SELL, 100, 99.0, 0, "1.25"))
        for _ in range(3):  # IB's own report, then the same report after each of two reconnects
            ex.on_commission(commission("e1", "1.25"))
    assert rec.commission == Decimal("1.25") and rec.commissions == {"e1": Decimal("1.25")}
    assert listener.fills == [("tg:T1:stop:1", 100, 99.0, Decimal("1.25"))] and listener.commissions == []
    assert ex.replays == 3 and len(replay_lines(caplog)) == 3
    assert "commission of execution e1 seen again" in replay_lines(caplog)[0]


def test_a_commission_reported_after_the_fill_counts_once_however_often_it_comes(counted):
    listener, ex = counted
    rec = ex.submit(intent())
    ex.on_fill(fill(1, "e1", 40))  # IB: the execution first, without its commission
    ex.on_fill(fill(1, "e2", 60))
    for _ in range(3):
        ex.on_commission(commission("e1", "0.40"))
        ex.on_commission(commission("e2", "0.60"))
    assert rec.commission == Decimal("1.00") and listener.commissions == [("tg:T1:stop:1", Decimal("0.40")),
                                                                         ("tg:T1:stop:1", Decimal("0.60"))]
    assert [e["event"] for e in rec.events].count("commission") == 2  # journaled once each


def test_a_commission_before_its_execution_waits_for_it_and_counts_once(counted):
    listener, ex = counted
    rec = ex.submit(intent())
    ex.on_commission(commission("e1", "1.00"))
    assert rec.commission == 0 and listener.commissions == []
    ex.on_fill(FillEvent(1, "tg:T1:stop:1", "e1", "DU1", "AAA", Action.SELL, 100, 99.0, 0, "1.00"))
    ex.on_commission(commission("e1", "1.00"))
    assert rec.commission == Decimal("1.00") and listener.fills[0][3] == Decimal("1.00")
    assert rec.events[-2]["event"] == "fill" and rec.events[-2]["commission"] == Decimal("1.00")  # the fill row's


def test_a_replayed_execution_is_applied_once_logged_at_info_and_brings_only_a_missing_commission(counted, caplog):
    listener, ex = counted
    rec = ex.submit(intent())
    ex.on_fill(fill(1, "e1", 100))  # without its commission (the engine went down before the report)
    with caplog.at_level("INFO", logger="tickguard.runtime.order_executor"):
        ex.on_fill(FillEvent(1, "tg:T1:stop:1", "e1", "DU1", "AAA", Action.SELL, 100, 99.0, 0, "1.00"))
        ex.on_fill(FillEvent(1, "tg:T1:stop:1", "e1", "DU1", "AAA", Action.SELL, 100, 99.0, 0, "1.00"))
    assert rec.filled == 100 and len(listener.fills) == 1 and listener.closed == [("tg:T1:stop:1", "filled", 0, "")]
    assert rec.commission == Decimal("1.00") and listener.commissions == [("tg:T1:stop:1", Decimal("1.00"))]
    assert any("execution e1 seen again" in line for line in replay_lines(caplog)) and ex.overfills == 0


def test_a_journal_restored_order_knows_which_commissions_it_has(tmp_path, clock):
    """Fills and commissions journaled by one executor; a second, restored from the journal after a 'restart',
    hears every execution and commission again (IB re-sends them) and counts none of them twice."""
    from tickguard.runtime.journal_recorder import JournalRecorder
    from tickguard.runtime.recovery import journaled_order
    from tickguard.store.journal import Journal

    journal = Journal.open(tmp_path / "j.db")
    journal.insert_trade(dict(trade_id="T1", user_id="u", account="DU1", symbol="AAA", side="long", qty=Decimal(100),
                              state="open", request={}, snapshot={}, created_ns=1, updated_ns=1))
    first = OrderExecutor(Sink(), CommissionListener(), clock, journal=journal)
    first.on_event = JournalRecorder(journal, None).on_order_event
    with journal.batch():
        first.submit(intent())
    first.on_fill(FillEvent(1, "tg:T1:stop:1", "e1", "DU1", "AAA", Action.SELL, 40, 99.0, 0, "0.40"))  # with it
    first.on_fill(fill(1, "e2", 60))
    first.on_commission(commission("e2", "0.60"))  # reported on its own
    [row] = journal.orders_of(["T1"])
    fills = journal.fills_of(["T1"])
    assert {f["exec_id"]: f["commission"] for f in fills} == {"e1": Decimal("0.40"), "e2": Decimal("0.60")}
    journal.close()

    listener = CommissionListener()
    again = OrderExecutor(Sink(), listener, clock)
    rec = journaled_order(row, fills)
    rec.status = OrderStatus.PARTIALLY_FILLED  # as if the process died before the final status: still routed
    again.restore(rec, {f["exec_id"] for f in fills})
    assert rec.commission == Decimal("1.00") and rec.commissions == {"e1": Decimal("0.40"), "e2": Decimal("0.60")}
    for exec_id, qty, amount in (("e1", 40, "0.40"), ("e2", 60, "0.60")):
        again.on_fill(FillEvent(1, "tg:T1:stop:1", exec_id, "DU1", "AAA", Action.SELL, qty, 99.0, 0, amount))
        again.on_commission(commission(exec_id, amount))
    assert rec.commission == Decimal("1.00") and rec.filled == 100 and rec.avg_price == Decimal("99")
    assert listener.fills == [] and listener.commissions == []
    assert again.replays == 6  # 2 fills and their 2 commissions, 2 reports


def test_an_order_held_by_a_connection_outage_is_never_given_up_and_goes_once_with_its_key(clock):
    """NotConnected is not a refusal: nothing left, so it costs no attempt, however long the outage."""
    from tickguard.adapters.broker import NotConnected

    class Down(Sink):
        def __init__(self):
            super().__init__()
            self.down = True

        def place_order(self, order):
            if self.down:
                raise NotConnected("not connected")
            return super().place_order(order)

    sink, listener = Down(), Listener()
    ex = OrderExecutor(sink, listener, clock, max_attempts=3, retry_backoff_ns=1_000)
    rec = ex.submit(intent())
    for _ in range(10):  # ten tries during the outage: more than max_attempts
        assert rec.status is OrderStatus.RETRY_WAIT and not listener.closed
        clock.now = ex.next_deadline()
        ex.on_time(clock.now)
    assert rec.held == 11 and rec.attempts == 0 and ex.next_deadline() - clock.now <= 5_000_000_000
    sink.down = False
    clock.now = ex.next_deadline()
    ex.on_time(clock.now)
    assert [o.ref for o in sink.placed] == ["tg:T1:stop:1"] and rec.attempts == 1
    assert rec.status is OrderStatus.SUBMITTING and not listener.closed


# ------------------------------------------------------------------------------- foreign executions


@pytest.mark.parametrize(("account", "symbol", "action", "field"), [
    ("DU2", "AAA", Action.SELL, "account"),
    ("DU1", "MSFT", Action.SELL, "symbol"),
    ("DU1", "AAA", Action.BUY, "action"),
])
def test_a_fill_of_another_account_symbol_or_side_is_foreign_and_never_applied(parts, caplog, account, symbol,
                                                                               action, field):
    """Defence in depth behind the adapter's attribution: the order id says whose it is, the fill must agree."""
    _, listener, ex = parts
    rec = ex.submit(intent())
    ex.on_status(status(1, "submitted"))
    with caplog.at_level("ERROR", logger="tickguard.runtime.order_executor"):
        ex.on_fill(FillEvent(1, "tg:T1:stop:1", "x1", account, symbol, action, 7, 99.0, 0, 1.0))
    assert listener.fills == [] and rec.filled == 0 and rec.exec_ids == set() and rec.commission == 0
    assert rec.status is OrderStatus.SUBMITTED and ex.foreign_fills == 1
    assert any("foreign execution x1" in r.getMessage() and field in r.getMessage() for r in anomaly_logs(caplog))
    [note] = [e for e in rec.events if e["event"] == "foreign_execution"]  # journaled with the order (recorder)
    assert note["exec_id"] == "x1" and note["qty"] == 7 and any(field in why for why in note["why"])
    ex.on_fill(fill(1, "e1", 100))  # the order's own execution still applies
    assert listener.fills == [("tg:T1:stop:1", 100, 99.0, 0)] and rec.status is OrderStatus.FILLED


def test_an_intent_without_an_account_takes_fills_of_the_connections_default_account(clock):
    listener = Listener()
    ex = OrderExecutor(Sink(), listener, clock)
    blank = OrderIntent("tg:T1:stop:1", "T1", "stop", "u", "", "AAA", Action.SELL, Decimal(100), OrderType.MARKET,
                        None, PriorityClass.EXIT_CRITICAL, 0)
    ex.submit(blank)
    ex.on_fill(fill(1, "e1", 100))  # the broker names the account it used: DU1
    assert listener.fills == [("tg:T1:stop:1", 100, 99.0, 0)] and ex.foreign_fills == 0


def at_broker_of(ex):
    """The orders the broker holds, by a walk of every order (what ``at_broker`` keeps without one)."""
    return {key for key, record in ex.orders.items() if record.status.at_broker}


def test_the_orders_at_the_broker_are_kept_as_their_states_change(parts):
    """``at_broker`` (what a reconciliation pass compares with the broker's book) is every order submitted, partially
    filled or being cancelled - after each change of state, a refused one, and a restore from the journal."""
    _, _, ex = parts
    seen = []

    def check():
        assert set(ex.at_broker) == at_broker_of(ex)
        seen.append(sorted(ex.at_broker))

    first = ex.submit(intent("k1"))
    check()
    ex.on_status(OrderStatusEvent(1, "k1", "submitted", 0, 100, 0, ""))
    check()
    ex.on_fill(FillEvent(1, "k1", "e1", "DU1", "AAA", Action.SELL, 40, 99.0, 0))
    check()
    ex.on_status(OrderStatusEvent(1, "k1", "submitting", 40, 60, 0, ""))  # backwards: refused, nothing moves
    check()
    ex.cancel("k1")
    check()
    ex.submit(intent("k2"))
    ex.on_status(OrderStatusEvent(2, "k2", "submitted", 0, 100, 0, ""))
    check()
    ex.on_status(OrderStatusEvent(1, "k1", "cancelled", 40, 60, 0, "cancelled by client"))
    check()
    ex.on_fill(FillEvent(2, "k2", "e2", "DU1", "AAA", Action.SELL, 100, 99.0, 0))
    check()
    ex.restore(OrderRecord(intent("k3"), status=OrderStatus.SUBMITTED, attempts=1, order_id=7), set())
    ex.restore(OrderRecord(intent("k4"), status=OrderStatus.FILLED, attempts=1, order_id=8), set())
    check()
    assert first.status is OrderStatus.CANCELLED
    assert seen == [[], ["k1"], ["k1"], ["k1"], ["k1"], ["k1", "k2"], ["k2"], [], ["k3"]]


def test_an_execution_applied_to_one_order_is_never_applied_to_another_from_a_book(parts, caplog):
    """An IB exec id is one execution: once applied to its order, a book (recovery, reconciliation) that names it for
    another order too has it refused with an ERROR and counted - never a second fill of the position, and the other
    order is not moved onto its order id.  Events are routed by order id and key (``on_fill``)."""
    _, listener, ex = parts
    ex.submit(intent("k1"))
    ex.submit(intent("k2"))
    assert ex.apply_found(ex.orders["k1"], FillEvent(1, "k1", "e1", "DU1", "AAA", Action.SELL, 40, 99.0, 0))
    assert not ex.apply_found(ex.orders["k2"], FillEvent(1, "k2", "e1", "DU1", "AAA", Action.SELL, 40, 99.0, 0))
    assert listener.fills == [("k1", 40, 99.0, 0)] and ex.orders["k2"].filled == 0 and ex.misrouted_fills == 1
    assert ex.orders["k2"].order_id == 2 and ex._by_order_id[1] is ex.orders["k1"]
    assert [r for r in anomaly_logs(caplog) if "applied to another order already" in r.getMessage()]
    assert ex.apply_found(ex.orders["k2"], FillEvent(2, "k2", "e2", "DU1", "AAA", Action.SELL, 40, 99.0, 0))


def test_an_execution_routed_by_its_order_id_to_an_order_of_another_key_is_not_applied(parts, caplog):
    """The order id routes an execution; the key it names must be that order's (an order id used again - IB's id
    sequence reset - or the adapter's and the executor's ids drifting apart would otherwise fill the wrong trade)."""
    _, listener, ex = parts
    ex.submit(intent("k1"))
    ex.on_fill(FillEvent(1, "k9", "e1", "DU1", "AAA", Action.SELL, 40, 99.0, 0))
    assert listener.fills == [] and ex.orders["k1"].filled == 0 and ex.misrouted_fills == 1
    assert [r for r in anomaly_logs(caplog) if "names order k9" in r.getMessage()]
    ex.on_fill(FillEvent(1, "k1", "e2", "DU1", "AAA", Action.SELL, 40, 99.0, 0))
    assert listener.fills == [("k1", 40, 99.0, 0)]
