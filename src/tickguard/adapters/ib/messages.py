"""IB's error channel (``error(reqId, code, text)``) for the connection: connectivity, data farms, a client id
already in use, pacing (a mixin of ``IBBroker``).  Messages about one order are read by ``order_status.py``.

Each message is logged once, here, at the level its meaning deserves (``errors.message_level``); ib_async's own
copy of the line is dropped by the log set-up (``interfaces/logs.py``).  Connection-wide ones also reach the
engine as ``NoticeEvent`` (it logs them, with their level, and counts them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field

from ib_async import Contract

from tickguard.adapters.broker import BrokerEvent, NoticeEvent
from tickguard.adapters.ib.attribution import PlacedOrders
from tickguard.adapters.ib.contracts import NO_SECURITY_DEFINITION
from tickguard.adapters.ib.errors import guarded, message_level
from tickguard.adapters.ib.farms import FARM_CODES, FarmTable
from tickguard.adapters.ttl_cache import TTLCache
from tickguard.config import IBConfig

log = logging.getLogger(__name__)

CONNECTIVITY_LOST, RESTORED_DATA_LOST, RESTORED_DATA_KEPT = 1100, 1101, 1102
FARM_BROKEN, FARM_OK, HMDS_BROKEN, HMDS_OK = 2103, 2104, 2105, 2106
PACING, HISTORICAL_PACING, DUPLICATE_CLIENT_ID = 100, 162, 326
# Codes reported to the engine as notices (not tied to one order).
SYSTEM_CODES = frozenset({CONNECTIVITY_LOST, RESTORED_DATA_LOST, RESTORED_DATA_KEPT, FARM_BROKEN, FARM_OK,
                          HMDS_BROKEN, HMDS_OK, PACING, HISTORICAL_PACING, DUPLICATE_CLIENT_ID, 1300, 2110, 2157})


@dataclass(slots=True)
class ConnectionState:
    connected: bool = False
    feed_trusted: bool = False
    farm_ok: bool = True
    reconnects: int = 0
    last_error: str = ""
    broken_farms: set[str] = field(default_factory=set)


class MessagesMixin:
    cfg: IBConfig
    farms: FarmTable
    _orders: PlacedOrders
    _connecting: bool
    _refused: asyncio.Event  # set by 326 inside a connection attempt: that attempt is over at once
    _history_paced: set[str]
    contract_cache: TTLCache
    now_ns: Callable[[], int]
    _emit: Callable[[BrokerEvent], None]
    _spawn: Callable[[Coroutine[None, None, None]], None]
    _resubscribe_all: Callable[..., Coroutine[None, None, None]]
    _renew_silent: Callable[[], Coroutine[None, None, None]]
    state: ConnectionState

    @guarded("error", log)
    def _on_error(self, req_id: int, code: int, message: str, contract: Contract | None) -> None:
        now = self.now_ns()
        self.farms.on_code(code, message, now)  # 1100/1101/1102 and the farm codes (farms.py)
        state = self.state
        if code == CONNECTIVITY_LOST:
            state.feed_trusted = False
        elif code in (RESTORED_DATA_LOST, RESTORED_DATA_KEPT):
            state.feed_trusted = True
            self._spawn(self._resubscribe_all() if code == RESTORED_DATA_LOST else self._renew_silent())
        elif code in FARM_CODES:
            self._on_farm(code)
        elif code == DUPLICATE_CLIENT_ID:
            state.last_error = (f"IB error 326: client id {self.cfg.client_id} is already in use by another "
                                "connection (another tickguard, TWS itself or an API client) - stop it or choose "
                                "another [ib] client_id")
            if self._connecting:
                self._refused.set()
        elif code == NO_SECURITY_DEFINITION and contract is not None and contract.symbol:
            self.contract_cache.invalidate(contract.symbol)
        elif code == HISTORICAL_PACING and contract is not None and contract.symbol:
            self._history_paced.add(contract.symbol)  # its daily-bars request waits the refusal out
        if code in SYSTEM_CODES or code == NO_SECURITY_DEFINITION:
            self._emit(NoticeEvent(code, message, now, message_level(code)))
            return
        placed = self._orders.get(req_id)
        if placed is not None:
            log.log(message_level(code, on_order=True), "order %s (id %s): IB %s: %s", placed.ref, req_id, code,
                    message)
        else:
            log.log(message_level(code), "IB %s (request %s): %s%s", code, req_id, message,
                    f" ({contract.symbol})" if contract is not None and contract.symbol else "")

    def _on_farm(self, code: int) -> None:
        """The farm table was updated (farms.py); ``farm_ok`` / ``broken_farms``: is a market-data farm broken?"""
        state = self.state
        state.broken_farms = set(self.farms.broken())
        state.farm_ok = not state.broken_farms
        if code == FARM_OK:
            self._spawn(self._renew_silent())
