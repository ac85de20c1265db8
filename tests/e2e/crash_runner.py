"""``tickguard run`` that SIGKILLs itself at one moment of an exit's life (the crash-point matrix).

Usage: ``python crash_runner.py POINT tickguard-run-args...``.  The point is reached by wrapping one method of
the real executor in this process only - the engine's code has no crash hooks.  Before dying the process
prints ``CRASH POINT <point>: <order key>`` so the harness knows the point was reached (a run that never
reaches it exits normally and the test fails).

Points, in the order of an exit's life:
  decided             the exit is decided and handed to the executor, its journal transaction not committed
  committed           its order record is durable, nothing sent yet (the exit's commit: on SQLite a record in the
                      engine's exit log, its rows not yet run by SQLite - store/exit_log.py; on PostgreSQL a
                      COMMIT; its trade's snapshot follows in the next commit)
  sent_before_snapshot the exit is on the wire, the commit after it (on SQLite: the exit's own rows too; its
                      trade's snapshot, the "sent" note) not made yet
  wire_before_commit  a fault: the order reaches the broker *before* its commit (what write-ahead prevents;
                      simulated by sending it from here), then the process dies before the commit
  acknowledged        the broker acknowledged the order
  partially_filled    one execution of a two-piece fill is applied, the rest not yet
  filled_before_commit the fill has arrived and is not yet applied or committed
"""

from __future__ import annotations

import os
import signal
import sys

from tickguard.core.model import OrderIntent
from tickguard.core.order_state import OrderStatus
from tickguard.runtime.order_executor import OrderExecutor, OrderRecord, broker_order

POINTS = ("decided", "committed", "wire_before_commit", "sent_before_snapshot", "acknowledged", "partially_filled",
          "filled_before_commit")


def die(point: str, key: str) -> None:
    print(f"CRASH POINT {point}: {key}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: str) -> None:
    submit, place, on_status, apply_fill = (OrderExecutor.submit, OrderExecutor._place, OrderExecutor.on_status,
                                            OrderExecutor.apply_fill)

    def submit_then_die(self: OrderExecutor, intent: OrderIntent, decided_ns: int | None = None) -> OrderRecord:
        record = submit(self, intent, decided_ns)
        if intent.is_exit:
            if point == "wire_before_commit":
                self._broker.place_order(broker_order(intent))
            die(point, intent.key)
        return record

    def place_or_die(self: OrderExecutor, record: OrderRecord) -> None:
        if record.intent.is_exit and point == "committed":
            die(point, record.intent.key)
        place(self, record)
        if record.intent.is_exit and point == "sent_before_snapshot":
            die(point, record.intent.key)

    def status_then_die(self: OrderExecutor, event, record: OrderRecord | None = None) -> None:
        on_status(self, event, record)
        found = record or self._by_order_id.get(event.order_id)
        if found is not None and found.intent.is_exit and found.status is OrderStatus.SUBMITTED:
            die(point, found.intent.key)

    def fill_or_die(self: OrderExecutor, record: OrderRecord, event) -> bool:
        if record.intent.is_exit and point == "filled_before_commit":
            die(point, record.intent.key)
        new = apply_fill(self, record, event)
        if record.intent.is_exit and point == "partially_filled" and 0 < record.filled < record.intent.qty:
            die(point, record.intent.key)
        return new

    wrappers = {"decided": ("submit", submit_then_die), "wire_before_commit": ("submit", submit_then_die),
                "committed": ("_place", place_or_die), "sent_before_snapshot": ("_place", place_or_die),
                "acknowledged": ("on_status", status_then_die),
                "partially_filled": ("apply_fill", fill_or_die), "filled_before_commit": ("apply_fill", fill_or_die)}
    name, wrapper = wrappers[point]
    setattr(OrderExecutor, name, wrapper)


if __name__ == "__main__":
    install(sys.argv[1])
    sys.argv = ["tickguard", *sys.argv[2:]]
    from tickguard.interfaces.cli import main

    main()
