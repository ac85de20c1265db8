"""The trades not over yet, by symbol, with each symbol's count per state - kept up to date on every change of a
trade's state (``Trade.state`` tells its watcher), never rebuilt by a walk.

Why: the periodic looks of the runtime (the market-data watchdog's "which symbols have a watched trade", every
second; the shadow checker's "which trades are live", every 2 s) walked every trade ever opened.  On a VM each
trade object not touched lately costs a cache and TLB miss or several, so at 5,000 trades one such walk was a
1.5-4 ms stall of the engine's only thread, and an exit whose crossing arrived meanwhile waited it out
(bench/wire_to_wire.py ``--probe``: the watchdog's 2.5-3.8 ms ``symbols_in`` and the shadow's look were among the
slowest steps of the stream).  Here those questions cost a count per symbol, or a copy of the live trades' list.
"""

from __future__ import annotations

from collections.abc import Collection

from tickguard.core.model import TradeState
from tickguard.core.trades import Trade


class LiveTrades:
    """The live (not final) trades, in the order they became live; per symbol, the live trades and how many are in
    each state.  A trade joins with ``add``; after that its own state changes keep it here or take it out."""

    __slots__ = ("_added", "_all", "_by_symbol", "_counts")

    def __init__(self) -> None:
        self._added: dict[str, Trade] = {}  # every trade indexed, over or not: a copy of one is not it
        self._all: dict[str, Trade] = {}
        self._by_symbol: dict[str, dict[str, Trade]] = {}
        self._counts: dict[str, dict[TradeState, int]] = {}

    def add(self, trade: Trade) -> None:
        """Index ``trade`` (a new or restored one) and follow its state from now on (again: nothing)."""
        if self._added.get(trade.id) is trade:
            return
        if trade.id in self._added:
            raise ValueError(f"trade {trade.id} is indexed already (another trade with its id)")
        self._added[trade.id] = trade
        trade.watcher = self._moved
        if not trade.state.is_final:
            self._enter(trade, trade.state)

    def _moved(self, trade: Trade, before: TradeState) -> None:
        if self._added.get(trade.id) is not trade:  # a copy (``dataclasses.replace``) carries the watcher: not ours
            return
        after = trade.state
        if before.is_final:
            if not after.is_final:  # live again (an over-fill halts a closed trade)
                self._enter(trade, after)
        elif after.is_final:
            self._leave(trade, before)
        else:  # still live: it keeps its place, only the counts move
            counts = self._counts[trade.symbol]
            self._uncount(counts, before)
            counts[after] = counts.get(after, 0) + 1

    def _enter(self, trade: Trade, state: TradeState) -> None:
        symbol = trade.symbol
        self._all[trade.id] = trade
        self._by_symbol.setdefault(symbol, {})[trade.id] = trade
        counts = self._counts.setdefault(symbol, {})
        counts[state] = counts.get(state, 0) + 1

    def _leave(self, trade: Trade, state: TradeState) -> None:
        symbol = trade.symbol
        del self._all[trade.id]
        of_symbol = self._by_symbol[symbol]
        del of_symbol[trade.id]
        self._uncount(self._counts[symbol], state)
        if not of_symbol:  # no live trade on it: the symbol leaves (what is watched is what has trades)
            del self._by_symbol[symbol], self._counts[symbol]

    @staticmethod
    def _uncount(counts: dict[TradeState, int], state: TradeState) -> None:
        left = counts[state] - 1
        if left:
            counts[state] = left
        else:
            del counts[state]

    def __len__(self) -> int:
        return len(self._all)

    def trades(self) -> list[Trade]:
        """The live trades, oldest first (a copy: the caller may change trades while it goes through it)."""
        return list(self._all.values())

    def of_symbol(self, symbol: str) -> list[Trade]:
        """The live trades of ``symbol`` (a copy)."""
        return list(self._by_symbol.get(symbol, {}).values())

    def symbols_in(self, states: Collection[TradeState]) -> list[str]:
        """The symbols with a live trade in one of ``states`` (a look at a few counts per symbol); a final state is
        refused: over trades are not indexed, and an empty answer would be a wrong one."""
        _live_only(states)
        return [symbol for symbol, counts in self._counts.items() if any(s in counts for s in states)]

    def trades_in(self, symbol: str, states: Collection[TradeState]) -> list[Trade]:
        """The live trades of ``symbol`` in one of ``states`` (final states refused, as ``symbols_in``)."""
        _live_only(states)
        return [t for t in self._by_symbol.get(symbol, {}).values() if t.state in states]

    def count(self, symbol: str, state: TradeState) -> int:
        return self._counts.get(symbol, {}).get(state, 0)


def _live_only(states: Collection[TradeState]) -> None:
    final = sorted(s.value for s in states if s.is_final)
    if final:
        raise ValueError(f"the live index holds no trade in a final state ({', '.join(final)})")
