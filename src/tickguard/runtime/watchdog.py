"""The market-data watchdog: live trades whose symbol has gone silent ("blind" trades).

A stop is only as good as the quotes it watches.  When IB's market-data farm breaks (2103) the quotes of its
symbols may simply stop, with no further word; the venue keeps trading, so a stop can be crossed there while the
engine sees nothing.  The rule, per symbol that has a live trade (open or exiting: a position, or an exit in
flight):

1. Silence is measured from the symbol's last *valid* tick (the tick handler's last quote, by its receive time on
   the broker's clock), or from when the symbol was first watched, or from the open of its regular session,
   whichever is latest.  Outside the regular session (``broker.regular_session``) nothing is raised, and an
   episode in progress is closed.
2. Silent for ``stale_tick_s``: the subscription is renewed once (``broker.resubscribe``), WARNING.
3. Still silent ``stale_tick_s`` after that: an alert, once per episode - an ERROR line naming the symbol, the
   trade ids, for how long it has been silent and the feed's state (farms, connectivity); the symbol enters
   ``health.blind`` and an ``BlindAlert`` is added to ``health.alerts``; each trade gets a journal event "blind".
4. A valid tick again: the episode ends; if an alert was raised it is cleared (INFO line, journal "sighted").
   An episode also ends when the symbol has no live trade any more or its session closes (INFO).

Checks run at most every ``check_ns`` (and exactly at the next threshold), so the tick path pays nothing:
the engine calls ``on_time`` every step and sleeps until ``next_deadline()``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tickguard.core.model import TradeState
from tickguard.core.trades import Trade

log = logging.getLogger(__name__)

WATCHED_STATES = frozenset({TradeState.OPEN, TradeState.EXITING})
NS = 1_000_000_000

SessionFn = Callable[[str, int], "tuple[int, int] | None"]
JournalFn = Callable[[str, int, list[Trade], dict[str, Any]], None]


@dataclass(slots=True)
class BlindAlert:
    symbol: str
    trade_ids: tuple[str, ...]
    since_ns: int  # start of the silence (last valid tick, watch start or session open)
    raised_ns: int
    feed: str  # the broker's feed state when raised (farms, connectivity)
    cleared_ns: int | None = None
    cleared_why: str = ""

    def silent_s(self, now_ns: int) -> float:
        end = self.cleared_ns if self.cleared_ns is not None else now_ns
        return (end - self.since_ns) / NS


@dataclass(slots=True)
class MarketDataHealth:
    """What the watchdog knows, for the live view and metrics."""

    blind: dict[str, int] = field(default_factory=dict)  # symbol -> since_ns, while its alert stands
    alerts: list[BlindAlert] = field(default_factory=list)  # every alert, newest last (cleared ones too)
    resubscribed: list[tuple[int, str]] = field(default_factory=list)  # (when, symbol)

    def active(self) -> list[BlindAlert]:
        return [a for a in self.alerts if a.cleared_ns is None]


@dataclass(slots=True)
class _Episode:
    since_ns: int
    resubscribed_ns: int
    alert: BlindAlert | None = None


def _clock(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / NS, tz=dt.UTC).strftime("%H:%M:%SZ")


class Watchdog:
    def __init__(self, stale_ns: int, watched_symbols: Callable[[], Iterable[str]],
                 trades_of: Callable[[str], list[Trade]], last_tick_ns: Callable[[str], int | None],
                 session: SessionFn, feed_state: Callable[[], str], journal: JournalFn | None = None,
                 check_ns: int | None = None) -> None:
        """``watched_symbols``: the symbols with a trade in ``WATCHED_STATES``; ``trades_of``: those trades of one
        symbol - asked for only when a symbol's episode needs them (a check looks at symbols, not at every trade:
        thousands of trades made each check a 10 ms stall of the tick path, bench/wire_to_wire.py)."""
        self.stale_ns = stale_ns
        self.check_ns = check_ns if check_ns is not None else min(NS, max(1, stale_ns // 4))
        self._watched_symbols = watched_symbols
        self._trades_of = trades_of
        self._last_tick_ns = last_tick_ns
        self._session = session
        self._feed_state = feed_state
        self._journal = journal
        self.health = MarketDataHealth()
        self.pending: list[str] = []  # symbols to resubscribe (the engine does it; it is async)
        self._episodes: dict[str, _Episode] = {}
        self._first_seen: dict[str, int] = {}
        self._next_check = 0

    def next_deadline(self) -> int:
        return self._next_check

    def on_time(self, now_ns: int) -> None:
        if now_ns < self._next_check:
            return
        watched = set(self._watched_symbols())
        for symbol in [s for s in self._first_seen if s not in watched]:
            del self._first_seen[symbol]
            self._end(symbol, now_ns, "no live trade on it any more")
        due = now_ns + self.check_ns
        for symbol in watched:
            due = min(due, self._check(symbol, now_ns))
        self._next_check = due

    def _check(self, symbol: str, now: int) -> int:
        """Look at one watched symbol; returns when it next needs looking at."""
        first = self._first_seen.setdefault(symbol, now)
        session = self._session(symbol, now)
        if session is None:
            self._end(symbol, now, "outside the regular session")
            return now + self.stale_ns
        last = self._last_tick_ns(symbol)
        episode = self._episodes.get(symbol)
        if episode is not None and last is not None and last > episode.since_ns:
            self._end(symbol, now, "ticks resumed", sighted=True)
            episode = None
        since = max(last or 0, first, session[0])
        if now - since < self.stale_ns:
            return since + self.stale_ns
        if episode is None:
            self._episodes[symbol] = _Episode(since, now)
            self.pending.append(symbol)
            self.health.resubscribed.append((now, symbol))
            log.warning("%s: no valid tick for %.0fs with live trade(s) %s; resubscribing", symbol,
                        (now - since) / NS, ", ".join(t.id for t in self._trades_of(symbol)))
            return now + self.stale_ns
        if episode.alert is None:
            if now - episode.resubscribed_ns < self.stale_ns:
                return episode.resubscribed_ns + self.stale_ns
            self._raise(symbol, episode, now)
        return now + self.check_ns

    def _raise(self, symbol: str, episode: _Episode, now: int) -> None:
        trades = self._trades_of(symbol)
        feed = self._feed_state()
        alert = BlindAlert(symbol, tuple(t.id for t in trades), episode.since_ns, now, feed)
        episode.alert = alert
        self.health.alerts.append(alert)
        self.health.blind[symbol] = episode.since_ns
        log.error("BLIND: %s has had no valid tick for %.0fs (since %s, resubscribed %.0fs ago) while trade(s) %s "
                  "are live - their exits cannot fire on quotes the engine does not see; feed: %s", symbol,
                  alert.silent_s(now), _clock(episode.since_ns), (now - episode.resubscribed_ns) / NS,
                  ", ".join(alert.trade_ids), feed)
        if self._journal is not None:
            self._journal("blind", now, trades, {"symbol": symbol, "since_ns": episode.since_ns,
                                                "silent_s": round(alert.silent_s(now), 3), "feed": feed,
                                                "trades": list(alert.trade_ids)})

    def _end(self, symbol: str, now: int, why: str, sighted: bool = False) -> None:
        episode = self._episodes.pop(symbol, None)
        if episode is None:
            return
        alert = episode.alert
        if alert is None:
            if sighted:
                log.info("%s: ticks resumed after the resubscription", symbol)
            return
        alert.cleared_ns, alert.cleared_why = now, why
        self.health.blind.pop(symbol, None)
        log.info("%s %s: blind alert cleared after %.0fs; trade(s) %s", symbol,
                 "sighted again" if sighted else why, alert.silent_s(now), ", ".join(alert.trade_ids))
        if sighted and self._journal is not None:
            self._journal("sighted", now, self._trades_of(symbol), {"symbol": symbol, "since_ns": alert.since_ns,
                                                  "blind_s": round(alert.silent_s(now), 3)})
