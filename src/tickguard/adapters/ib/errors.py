"""IB's error codes about one order, as what they do to that order; and the guard around ib_async callbacks.

IB reports a refused order, a cancel, a refused cancel and plain information all through ``error(reqId=orderId,
code, text)``.  ib_async 2.1.0 (``Wrapper.error``) reads each one into the trade's status before the adapter sees
it: a code in its ``warningCodes`` (105, 110, 165, 321, 329, 399, 404, 434, 492, 10167) or in 2100-2199 sets
``ValidationError`` - the order is left live - and any other code sets ``Cancelled`` - the order is taken as
dead - (110 too while the order is still ``PendingSubmit``).  Both readings are wrong for some codes, in ways
that cost money: 321 on a *new* order leaves it ``ValidationError`` forever although IB never created it, and
161 / 10147 / 10148 (a refused cancel) or 10349 (information) mark a working or filled order ``Cancelled``.
``ORDER_ERRORS`` says, from IB's documented meaning of each code, what the code does to the order; the adapter
follows this table, not ib_async's reading (see ``order_status.order_verdict``).

Sources: IB's API message codes (interactivebrokers.github.io/tws-api/message_codes.html), ib_async 2.1.0
``wrapper.py`` ``error()``, and reports of real TWS sessions: 201 then an ``Inactive`` status (ib_insync #554),
321 on placeOrder with no order created (ib_insync #586, swigibpy #43, node-ib #24), 10147 / 10148 answering a
cancel of a filled or unknown order (ib_insync #656, #690), 10349 on live orders that later filled
(ib_async #191, #217).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from ib_async import Trade
from ib_async.objects import CommissionReport, Fill


class ErrorKind(Enum):
    REJECTS = "rejects"  # the order is refused or killed: final, rejected
    CANCELS = "cancels"  # the order is cancelled: final, cancelled
    REJECTS_NEW = "rejects_new"  # refuses a new order (final, rejected); on a live order, only that request
    KEEPS = "keeps"  # not the end of the order: a refused cancel / modify, a warning, information


@dataclass(frozen=True, slots=True)
class OrderError:
    kind: ErrorKind
    meaning: str


ORDER_ERRORS: Mapping[int, OrderError] = {
    100: OrderError(ErrorKind.REJECTS, "pacing: the message was dropped, the order never existed (retried)"),
    103: OrderError(ErrorKind.REJECTS, "duplicate order id: this order was refused, nothing was created"),
    104: OrderError(ErrorKind.KEEPS, "can't modify a filled order: the order is filled, its fills close it"),
    105: OrderError(ErrorKind.KEEPS, "modification does not match the original order: the order is unchanged"),
    110: OrderError(ErrorKind.REJECTS_NEW, "price not on the minimum tick: a new order is refused, a "
                                          "modification is refused and the order is unchanged"),
    135: OrderError(ErrorKind.KEEPS, "can't find the order (answer to a cancel): the order's own reports decide"),
    161: OrderError(ErrorKind.KEEPS, "cancel attempted when the order is not cancellable: the order keeps its "
                                     "state (filled, or filling)"),
    200: OrderError(ErrorKind.REJECTS, "no security definition: the order is refused"),
    201: OrderError(ErrorKind.REJECTS, "order rejected, with IB's reason (margin, permissions, ...)"),
    202: OrderError(ErrorKind.CANCELS, "order cancelled"),
    321: OrderError(ErrorKind.REJECTS_NEW, "request validation failed (e.g. an account IB does not manage): a "
                                           "new order is never created; on a live order only the request failed"),
    329: OrderError(ErrorKind.KEEPS, "modification failed: the order is unchanged"),
    399: OrderError(ErrorKind.KEEPS, "order message warning (e.g. held until the open): the order lives"),
    404: OrderError(ErrorKind.KEEPS, "held while shares are located for a short sale: the order lives"),
    434: OrderError(ErrorKind.REJECTS_NEW, "order size cannot be zero: a new order is refused"),
    10147: OrderError(ErrorKind.KEEPS, "the order to cancel is not found: the order's own reports decide"),
    10148: OrderError(ErrorKind.KEEPS, "the order cannot be cancelled in its state (e.g. filled): it keeps it"),
    10349: OrderError(ErrorKind.KEEPS, "TIF set to DAY from the order preset: information, the order lives"),
}

# ib_async 2.1.0's warning codes (``Wrapper.error``): it records them as ``ValidationError`` and leaves the order.
IB_ASYNC_WARNINGS = frozenset({105, 110, 165, 321, 329, 399, 404, 434, 492, 10167})


def error_kind(code: int) -> ErrorKind:
    """What an error code does to the order it names.  A code outside the table is read as ib_async reads it:
    a warning keeps the order, anything else is a refusal (IB's documented meaning of an error on an order)."""
    known = ORDER_ERRORS.get(code)
    if known is not None:
        return known.kind
    if code in IB_ASYNC_WARNINGS or 2100 <= code < 2200:
        return ErrorKind.KEEPS
    return ErrorKind.REJECTS


# IB messages that say all is well (a farm connected or idle, connectivity restored with data kept): INFO; those
# that say tickguard cannot work as it should (client id in use, connectivity or a farm lost): ERROR; the rest,
# warnings (a refused request, pacing, 1101 restored with data lost - resubscribed): WARNING.
ALL_WELL = frozenset({0, 1102, 2104, 2106, 2107, 2108, 2119, 2158})
SERIOUS = frozenset({326, 1100, 2103, 2105, 2110})


def message_level(code: int, on_order: bool = False) -> int:
    """How loud to log one IB message, for the one line it gets: a message about an order that does not end it
    (a refused cancel, information) is INFO, one that ends it (a rejection) WARNING."""
    if on_order:
        return logging.INFO if error_kind(code) is ErrorKind.KEEPS else logging.WARNING
    if code in ALL_WELL:
        return logging.INFO
    return logging.ERROR if code in SERIOUS else logging.WARNING


# ------------------------------------------------------------------------------------------ callback guard

F = TypeVar("F", bound=Callable[..., None])


def describe(value: object) -> str:
    """A short, never-failing description of a callback argument, for the log line of a failed callback."""
    try:
        if isinstance(value, Trade):
            return (f"order {value.order.orderId} ref {value.order.orderRef!r} status "
                    f"{value.orderStatus.status!r}")
        if isinstance(value, Fill):
            return f"execution {value.execution.execId!r} of order {value.execution.orderId}"
        if isinstance(value, CommissionReport):
            return f"commission report {value.execId!r}"
        if isinstance(value, set | frozenset | list | tuple):
            return f"{len(value)} item(s)"
        return repr(value)[:200]
    except Exception:  # a malformed object: its type is all that is safe to say
        return f"<{type(value).__name__}>"


def guarded(what: str, log: logging.Logger) -> Callable[[F], F]:
    """Catch and log (with the callback's arguments) anything a callback raises.

    ib_async calls the adapter's callbacks from its socket reader; an exception escaping one would be
    swallowed by eventkit without context, after the adapter's state was half-updated.  Logged here with
    what the callback was handling, and the next message is handled normally."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(self: Any, *args: Any) -> None:
            try:
                fn(self, *args)
            except Exception:
                log.exception("IB %s callback failed on %s; that message is dropped, the connection carries on",
                              what, "; ".join(describe(a) for a in args))

        return inner  # type: ignore[return-value]

    return wrap
