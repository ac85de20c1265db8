"""Contracts and daily bars from IB, behind the adapter's TTL caches (a mixin of ``IBBroker``).

Daily bars and IB's history pacing: IB refuses (error 162) a historical request identical to one made in the last
15 seconds - which is exactly what an engine restarted at once asks for (the same symbols, the same span).  The
refusal is waited out: the request is asked again every quarter of ``[ib] history_pacing_wait_s`` until it is
answered or that long has passed, instead of starting without the symbol's volatility.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Coroutine
from decimal import Decimal

from ib_async import IB, Contract, ContractDetails, Stock

from tickguard.adapters.broker import BrokerError, BrokerEvent, ContractInfo, NoticeEvent, UnknownSymbol
from tickguard.adapters.ttl_cache import TTLCache
from tickguard.config import IBConfig
from tickguard.core.model import Bar
from tickguard.core.money import exact
from tickguard.core.throttle import Lane

NO_SECURITY_DEFINITION = 200
log = logging.getLogger(__name__)


class ContractsMixin:
    """Qualifying symbols and loading daily bars; the caches are built by ``IBBroker.__init__``."""

    ib: IB
    cfg: IBConfig
    contract_cache: TTLCache[str, ContractDetails]
    volatility_cache: TTLCache[tuple[str, int], list[Bar]]
    _emit: Callable[[BrokerEvent], None]
    now_ns: Callable[[], int]
    _history_paced: set[str]  # symbols whose historical request IB refused with 162 (messages.py records them)
    _paced: Callable[[Lane, str], Coroutine[None, None, None]]  # waits for the message budget (pacing.py)

    async def _load_contract(self, symbol: str) -> ContractDetails:
        contract = Stock(symbol, self.cfg.exchange, self.cfg.currency)
        await self._paced(Lane.DATA, f"contract details {symbol}")
        found = await asyncio.wait_for(self.ib.reqContractDetailsAsync(contract), self.cfg.request_timeout_s)
        if not found or found[0].contract is None or not found[0].contract.conId:
            raise UnknownSymbol(f"no security definition for {symbol!r} (IB error 200)")
        if len(found) > 1:
            raise BrokerError(f"{symbol!r} is ambiguous at IB ({len(found)} contracts); name the exchange")
        return found[0]

    def _contract_changed(self, symbol: str, old: ContractDetails, new: ContractDetails) -> None:
        if old.contract and new.contract and old.contract.conId != new.contract.conId:
            self._emit(NoticeEvent(NO_SECURITY_DEFINITION, f"{symbol}: conId changed {old.contract.conId} -> "
                                   f"{new.contract.conId} (symbol change or corporate action)", self.now_ns()))

    async def _contract(self, symbol: str) -> Contract:
        details = await self.contract_cache.get(symbol)
        assert details.contract is not None
        return details.contract

    async def qualify(self, symbol: str) -> ContractInfo:
        details = await self.contract_cache.get(symbol)
        c = details.contract
        assert c is not None
        return ContractInfo(symbol, c.conId, c.exchange, c.currency, float(details.minTick or 0.01),
                            exact(details.minSize) if details.minSize and details.minSize >= 1 else Decimal(1))

    async def _load_bars(self, key: tuple[str, int]) -> list[Bar]:
        symbol, days = key
        contract = await self._contract(symbol)
        wait_s = self.cfg.history_pacing_wait_s
        deadline = time.monotonic() + wait_s
        while True:
            self._history_paced.discard(symbol)
            await self._paced(Lane.DATA, f"daily bars {symbol}")
            bars = await asyncio.wait_for(
                self.ib.reqHistoricalDataAsync(contract, "", daily_duration(days), "1 day", "TRADES", useRTH=True),
                self.cfg.request_timeout_s,
            )
            if bars or symbol not in self._history_paced or time.monotonic() >= deadline:
                break
            log.warning("%s: IB paced the daily-bars request (162: the same request within 15 s, as after a "
                        "restart); asking again in %gs", symbol, wait_s / 4)
            await asyncio.sleep(wait_s / 4)
        if not bars:
            raise BrokerError(f"{symbol}: IB returned no daily bars")
        out = []
        for b in bars:
            day = b.date if isinstance(b.date, dt.date) else dt.date.fromisoformat(str(b.date)[:10])
            ts = int(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp()) * 1_000_000_000
            out.append(Bar(ts, float(b.open), float(b.high), float(b.low), float(b.close), float(b.volume)))
        return out[-days:]  # the last ``days`` sessions (the calendar span asked for holds a few more)

    async def daily_bars(self, symbol: str, days: int) -> list[Bar]:
        return await self.volatility_cache.get((symbol, days))


def daily_duration(sessions: int) -> str:
    """IB's duration for at least ``sessions`` daily bars.  IB reads "N D" of daily bars as a calendar span
    ("60 D" is about 42 sessions), so the span asked for covers the weekends and a margin of holidays in it
    (about ten a year, never more than three in a row): 7/5 of the sessions plus 3, and one more per 20.
    Past 365 days IB wants years."""
    calendar = math.ceil(sessions * 7 / 5) + 3 + sessions // 20
    return f"{calendar} D" if calendar <= 365 else f"{math.ceil(calendar / 365)} Y"
