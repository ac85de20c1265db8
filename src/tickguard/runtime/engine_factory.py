"""The engine's three set-ups, as the commands build them: on the simulated market (``tickguard sim``), on a TWS / IB
Gateway connection (``tickguard run``), and the journal the settings name, claimed for live or simulated trades."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from tickguard.adapters.sim.broker import SimBroker
from tickguard.adapters.sim.venue import SimVenue
from tickguard.config import Settings
from tickguard.core.model import Tick
from tickguard.runtime.engine import Engine
from tickguard.store.journal import Journal


def sim_engine(settings: Settings, tick_sink: Callable[[Tick], None] | None = None,
               journal: Journal | None = None) -> tuple[Engine, SimVenue]:
    """An engine on the embedded simulated market, as ``tickguard sim`` runs it."""
    sim = settings.sim
    start_ns = int(sim.start.astimezone(dt.UTC).timestamp() * 1e9)
    venue = SimVenue(sim.seed, start_ns, sim.symbols, sim.market.params(), sim.exchange.params(),
                     history_days=settings.volatility.history_days)
    broker = SimBroker(venue, speed=sim.speed)
    return Engine(settings, broker, tick_sink, journal), venue


def ib_engine(settings: Settings, tick_sink: Callable[[Tick], None] | None = None,
              journal: Journal | None = None) -> Engine:
    """An engine on a TWS / IB Gateway connection (or the fake gateway), as ``tickguard run`` runs it."""
    from tickguard.adapters.ib.ib_client import IBBroker

    return Engine(settings, IBBroker(settings.ib), tick_sink, journal)


def open_journal(settings: Settings, create: bool = True, kind: str | None = None) -> Journal | None:
    """The journal the settings name (None if they name none).  With ``kind`` ("live" / "simulated"), for a running
    engine: held for it alone (``Journal.open(for_engine=True)``: a journal another engine runs on is refused before
    it is read or migrated) and claimed
    for that kind of trades (``Journal.claim``: a journal of the other kind is refused)."""
    target = settings.journal.target
    if not target:
        return None
    journal = Journal.open(target, create=create, synchronous=settings.journal.sqlite_synchronous,
                           for_engine=kind is not None,  # one engine per journal (store/engine_lock.py)
                           exit_log=settings.journal.exit_log)
    if kind is not None:
        try:
            journal.claim(kind)
        except Exception:
            journal.close()
            raise
    return journal
