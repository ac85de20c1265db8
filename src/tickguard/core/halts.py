"""Over-fills and halted trades: how much of an execution a trade may take, and the evidence when it may not.

An execution can take more than was asked: past its order's quantity (a), an exit past the trade's filled
entry (b), an entry past the request (c).  The broker's money is what it is - the executor keeps the whole
execution on its order record and journals it by exec id - but the trade takes only the part that fits every
one of those bounds, never the excess.  Then the trade is HALTED: final for automation (no exit, retry,
re-arm or timer sends anything for it, and its levels leave the trigger book), not closed (it keeps its
position figures, is loaded again at restart and reported there as UNRECONCILED).  Orders of the trade that
are already working at the broker are left as they are (a cancel is a message to the broker too): the
evidence names them, and the user decides.  Equality decides, never a tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tickguard.core.model import OrderIntent, TradeState
from tickguard.core.money import ZERO
from tickguard.core.stop_motion import StopTracker
from tickguard.core.trades import Trade
from tickguard.core.trigger_book import TriggerBook


@dataclass(slots=True, frozen=True)
class Execution:
    """One broker execution as its order saw it: what the order asked, had before it, and the execution whole."""

    exec_id: str
    ordered: Decimal
    filled_before: Decimal | None  # None: not known to the caller (a trade fed without its order)
    qty: Decimal

    @property
    def fits(self) -> Decimal:
        """The part of the execution within the order's quantity (all of it when the order is not known)."""
        if self.filled_before is None:
            return self.qty
        return min(self.qty, max(self.ordered - self.filled_before, ZERO))


def trade_room(trade: Trade, leg: str) -> tuple[Decimal, str]:
    """How much more the trade may take on ``leg``, and the bound that says so."""
    if leg == "entry":
        return trade.request.qty - trade.entry_filled, f"the request's {trade.request.qty}"
    return trade.entry_filled - trade.exited, f"the filled entry of {trade.entry_filled}"


def fitting(trade: Trade, leg: str, qty: Decimal, execution: Execution) -> tuple[Decimal, str]:
    """The part of ``qty`` (already within its order) that the trade may apply, and which bounds cut it."""
    room, bound = trade_room(trade, leg)
    applied = min(qty, max(room, ZERO))
    bounds = []
    if execution.fits < execution.qty:
        bounds.append(f"the order's {execution.ordered}")
    if applied < qty:
        bounds.append(bound)
    return applied, " and ".join(bounds)


def stop_automation(trade: Trade, book: TriggerBook, stops: StopTracker) -> None:
    """Make the trade HALTED before anything of the execution is applied, so nothing of it can fire: its
    levels leave the book, its trailing stop its trail group and the index of moving stops."""
    stops.ungroup(trade)
    trade.state = TradeState.HALTED
    for leg in trade.legs():
        book.remove(leg.level_id)
    stops.track(trade)


@dataclass(slots=True, frozen=True)
class Overfill:
    """The evidence of one refused excess, as the alert, the journal and the recovery report name it."""

    trade_id: str
    key: str
    exec_id: str
    ordered: Decimal
    filled_before: Decimal | None
    qty: Decimal
    applied: Decimal
    excess: Decimal
    past: str
    position: str

    @classmethod
    def of(cls, trade: Trade, intent: OrderIntent, execution: Execution, applied: Decimal, past: str) -> Overfill:
        position = (f"{trade.side.value} {trade.symbol}: entry {trade.entry_filled} of {trade.request.qty}, "
                    f"exited {trade.exited}, open {trade.open_qty}, in flight {trade.inflight}")
        return cls(trade.id, intent.key, execution.exec_id or "(unknown)", execution.ordered, execution.filled_before,
                   execution.qty, applied, execution.qty - applied, past, position)

    @classmethod
    def of_order(cls, intent: OrderIntent, execution: Execution) -> Overfill:
        """The evidence the order alone gives (its trade not known to the caller)."""
        return cls(intent.trade_id, intent.key, execution.exec_id, execution.ordered, execution.filled_before,
                   execution.qty, execution.fits, execution.qty - execution.fits, f"the order's {execution.ordered}",
                   "position not known here")

    def describe(self) -> str:
        before = "?" if self.filled_before is None else self.filled_before
        return (f"over-fill of order {self.key}: execution {self.exec_id} of {self.qty} (ordered {self.ordered}, "
                f"filled before {before}) goes past {self.past}; {self.applied} applied, excess {self.excess} "
                f"NOT applied; trade {self.trade_id} HALTED ({self.position})")

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "exec_id": self.exec_id, "ordered": self.ordered,
                "filled_before": self.filled_before, "qty": self.qty, "applied": self.applied,
                "excess": self.excess, "past": self.past, "position": self.position}
