"""The engine's two watchers of open trades, built from the settings: the market-data watchdog (blind trades,
``runtime/watchdog.py``) and the shadow what-if of each exit (``runtime/shadow.py``).

Why a module of its own: both are optional, read several of the engine's parts, and are built the same way;
kept here, the composition root (``runtime/engine.py``) stays one screen of wiring per concern.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from tickguard.adapters.broker import ContractInfo
from tickguard.config import Settings
from tickguard.core.model import Tick
from tickguard.core.trade_manager import TradeManager
from tickguard.runtime.shadow import ShadowChecker, stop_exit_key, stop_exit_order
from tickguard.runtime.watchdog import WATCHED_STATES, Watchdog

Quote = Callable[[str], Tick | None]


def make_watchdog(settings: Settings, broker: Any, trades: TradeManager, quote: Quote,
                  journal_health: Callable[..., None] | None) -> Watchdog | None:
    """Blind trades are resubscribed, then reported (None when ``[watchdog] enabled`` is false)."""
    cfg = settings.watchdog
    if not cfg.enabled:
        return None
    session = getattr(broker, "regular_session", None) or (lambda symbol, ts: (0, 2**63 - 1))
    feed_state = getattr(broker, "feed_state", None) or (lambda: "unknown")

    def last_tick_ns(symbol: str) -> int | None:
        tick = quote(symbol)
        return None if tick is None else tick.recv_ns

    return Watchdog(int(cfg.stale_tick_s * 1e9), lambda: trades.symbols_in(WATCHED_STATES),
                    lambda symbol: trades.trades_in(symbol, WATCHED_STATES), last_tick_ns, session, feed_state,
                    journal_health)


def make_shadow(settings: Settings, broker: Any, trades: TradeManager, quote: Quote,
                contracts: dict[str, ContractInfo]) -> ShadowChecker | None:
    """Each open trade's exit checked with the broker's what-if (None when ``[shadow] enabled`` is false)."""
    cfg = settings.shadow
    if not cfg.enabled:
        return None

    def lot_size(symbol: str) -> Decimal:
        return contracts[symbol].lot_size if symbol in contracts else Decimal(1)

    return ShadowChecker(broker.what_if, trades, broker.now_ns, int(cfg.interval_s * 1e9),
                         cfg.max_in_flight, stop_exit_order(trades, quote, lot_size),
                         scan_ns=int(cfg.scan_s * 1e9), min_gap_ns=int(cfg.min_gap_s * 1e9), timeout_s=cfg.timeout_s,
                         exit_key=stop_exit_key(trades), start_gap_ns=int(1e9 / cfg.max_per_s))
