"""The engine's state as Prometheus metric families, built when scraped (``runtime/metric_catalog.py`` names them).

Why a collector and not live ``prometheus_client`` metrics: nearly every figure already exists somewhere (the
message budget's counters, the reconciler's state, the caches' stats, the trades themselves), so the scrape reads
them where they live, and the tick path pays nothing.  What had no source is kept by ``runtime/telemetry.py``.

The per-trade figures (trades by state, per-account exposure, risk and P&L, last-tick ages) walk every trade;
with thousands of trades that is tens of milliseconds of Python, so ``refresh`` walks them in slices, and
``exposition`` formats one family at a time, yielding to the event loop in between - a scrape never holds a quote
back for longer than one slice (``bench/metrics_scrape.py`` measures the longest hold).  Everything is read on
the engine's own event loop (the HTTP server runs there too): no lock, no torn read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from tickguard import __version__
from tickguard.core.model import TradeState
from tickguard.core.throttle import Lane
from tickguard.runtime.entry_guard import trading_day
from tickguard.runtime.metric_catalog import BY_NAME, Kind
from tickguard.runtime.telemetry import Histogram

if TYPE_CHECKING:
    from tickguard.runtime.engine import Engine

ACTIVE_STATES = (TradeState.PENDING_ENTRY, TradeState.OPEN, TradeState.EXITING, TradeState.HALTED)
SLICE = 100  # trades walked between two yields to the event loop (about a millisecond of Python)


@dataclass(slots=True)
class AccountFigures:
    open_trades: int = 0
    gross_exposure: float = 0.0
    open_risk: float = 0.0
    realized: float = 0.0
    unrealized: float = 0.0


@dataclass(slots=True)
class TradeFigures:
    """What ``refresh`` gathered from the trades, read by the next ``collect``."""

    by_state: dict[str, int] = field(default_factory=dict)
    accounts: dict[str, AccountFigures] = field(default_factory=dict)
    tick_age_s: list[tuple[str, float]] = field(default_factory=list)  # stalest first, bounded
    blind_trades: int = 0


class _One:
    """A registry of one family, for the exposition's formatter (it asks a registry to ``collect``)."""

    def __init__(self, family: Metric) -> None:
        self._family = family

    def collect(self) -> list[Metric]:
        return [self._family]


async def exposition(collector: EngineMetrics, registry: Any, encoder: Callable[[Any], bytes]) -> bytes:
    """The scrape's body: the figures gathered (``refresh``), then each family formatted by ``encoder`` (one of
    ``prometheus_client``'s, as ``choose_encoder`` picks it), yielding to the loop between families.  OpenMetrics
    ends a body with ``# EOF``: the formatter writes it after every family, so it is kept once, at the end."""
    await collector.refresh()
    parts: list[bytes] = []
    eof = b"# EOF\n"
    for family in registry.collect():
        part = encoder(_One(family))
        parts.append(part.removesuffix(eof))
        await asyncio.sleep(0)
    if part.endswith(eof) if parts else False:
        parts.append(eof)
    return b"".join(parts)


def _family(name: str, labels: Iterable[str] = ()) -> Metric:
    spec = BY_NAME[name]
    cls = {Kind.COUNTER: CounterMetricFamily, Kind.GAUGE: GaugeMetricFamily, Kind.HISTOGRAM: HistogramMetricFamily}
    return cls[spec.kind](name, spec.help, labels=list(labels) or list(spec.labels))


def _histogram(name: str, hists: dict[tuple[str, ...], Histogram], scale: float = 1e-9) -> Metric:
    """A histogram family from telemetry histograms (ns, or plain counts with ``scale`` 1)."""
    family = _family(name)
    for labels, h in hists.items():
        bounds = [f"{b * scale:g}" for b in h.bounds] + ["+Inf"]
        family.add_metric(list(labels), list(zip(bounds, h.cumulative(), strict=True)), h.total * scale)
    return family


class EngineMetrics(Collector):
    """Register with a ``CollectorRegistry``; call ``refresh`` (on the loop) before each scrape."""

    def __init__(self, engine: Engine, max_symbol_labels: int = 200) -> None:
        self.engine = engine
        self.max_symbol_labels = max_symbol_labels
        self.figures = TradeFigures()

    # ------------------------------------------------------------------------------------ the walk

    async def refresh(self) -> None:
        """Gather the per-trade figures, ``SLICE`` trades at a time (module docstring)."""
        engine = self.engine
        tm = engine.trades
        now = engine.broker.now_ns()
        figures = TradeFigures(by_state={s.value: 0 for s in ACTIVE_STATES})
        blind = engine.health.blind
        symbols: set[str] = set()
        trades = list(tm.trades.values())
        for start in range(0, len(trades), SLICE):
            for trade in trades[start:start + SLICE]:
                self._add_trade(trade, figures, symbols, blind)
            if start + SLICE < len(trades):
                await asyncio.sleep(0)
        ages = []
        for symbol in symbols:
            tick = engine.ticks.quote(symbol)
            ages.append((symbol, (now - tick.recv_ns) / 1e9 if tick is not None else float("inf")))
        ages.sort(key=lambda item: (-item[1], item[0]))
        figures.tick_age_s = ages[:self.max_symbol_labels]
        self.figures = figures

    def _add_trade(self, trade: Any, figures: TradeFigures, symbols: set[str], blind: dict[str, int]) -> None:
        engine = self.engine
        account = trade.request.account or engine.settings.ib.account or "default"
        acc = figures.accounts.get(account)
        if acc is None:
            acc = figures.accounts[account] = AccountFigures()
        acc.realized += float(trade.realized - trade.commissions)
        if trade.state.is_final:
            return
        figures.by_state[trade.state.value] = figures.by_state.get(trade.state.value, 0) + 1
        open_qty = trade.open_qty
        if open_qty <= 0:
            return
        symbols.add(trade.symbol)
        if trade.symbol in blind:
            figures.blind_trades += 1
        acc.open_trades += 1
        tm = engine.trades
        tick = engine.ticks.quote(trade.symbol)
        mark: Decimal | None = None
        if tick is not None:
            grid = tm.grid(trade.symbol)
            units = tick.bid if trade.sign > 0 else tick.ask  # what a close would get
            mark = grid.price(units) if units > 0 else None
        if mark is not None:
            acc.gross_exposure += float(abs(mark * open_qty))
            acc.unrealized += float(trade.unrealized(mark))
        stop = tm.stop_price(trade)
        if stop is not None and trade.entry_filled:
            acc.open_risk += max(0.0, float(trade.sign * (trade.entry_avg - stop) * open_qty))

    # ----------------------------------------------------------------------------------- collect

    def collect(self) -> Iterator[Metric]:
        yield from self._engine_families()
        yield from self._tick_families()
        yield from self._order_families()
        yield from self._budget_families()
        yield from self._account_families()
        yield from self._broker_families()
        yield from self._health_families()

    def _engine_families(self) -> Iterator[Metric]:
        engine, tel = self.engine, self.engine.telemetry
        info = _family("tickguard_engine_info")
        info.add_metric([__version__, getattr(engine.broker, "name", type(engine.broker).__name__)], 1)
        yield info
        yield GaugeMetricFamily("tickguard_engine_start_time_seconds", BY_NAME[
            "tickguard_engine_start_time_seconds"].help, value=tel.started_s)
        steps = _family("tickguard_engine_steps_total")
        steps.add_metric([], tel.steps)
        yield steps
        yield _histogram("tickguard_event_loop_lag_seconds", {(): tel.loop_lag})
        lag = _family("tickguard_event_loop_lag_max_seconds")
        lag.add_metric([], tel.lag_max() / 1e9)
        yield lag
        yield _histogram("tickguard_journal_commit_seconds", {(): tel.commit} if engine.journal else {})
        rollbacks = _family("tickguard_journal_rollbacks_total")
        if engine.journal is not None:
            rollbacks.add_metric([], engine.journal.rollbacks)
        yield rollbacks

    def _tick_families(self) -> Iterator[Metric]:
        engine, tel = self.engine, self.engine.telemetry
        counters = engine.ticks.counters
        received = _family("tickguard_ticks_received_total")
        received.add_metric([], counters.accepted + counters.dropped_total)
        yield received
        dropped = _family("tickguard_ticks_dropped_total")
        for reason, n in sorted(counters.dropped.items()):
            dropped.add_metric([reason], n)
        yield dropped
        yield _histogram("tickguard_tick_evaluation_seconds", {(): tel.tick_eval})
        yield _histogram("tickguard_tick_batch_ticks", {(): tel.batch}, scale=1)
        yield _histogram("tickguard_tick_to_intent_seconds", {(): tel.tick_to_intent})
        yield _histogram("tickguard_intent_to_wire_seconds", {(k,): h for k, h in tel.intent_to_wire.items()})
        yield _histogram("tickguard_order_ack_seconds", {(k,): h for k, h in tel.ack.items()})
        yield _histogram("tickguard_order_fill_seconds", {(k,): h for k, h in tel.fill.items()})

    def _order_families(self) -> Iterator[Metric]:
        engine, tel = self.engine, self.engine.telemetry
        trades = _family("tickguard_trades")
        for state, n in self.figures.by_state.items():
            trades.add_metric([state], n)
        yield trades
        exits = _family("tickguard_exits_total")
        for reason in sorted({"stop_loss", "trailing_stop", "break_even", "take_profit", "time_stop", "other",
                              *tel.exits}):
            exits.add_metric([reason], tel.exits.get(reason, 0))
        yield exits
        sent = _family("tickguard_orders_sent_total")
        for kind, n in tel.sent.items():
            sent.add_metric([kind], n)
        yield sent
        rejected = _family("tickguard_orders_rejected_total")
        for (code, kind), n in sorted(tel.rejected.items()):
            rejected.add_metric([code, kind], n)
        yield rejected
        alerts = _family("tickguard_exit_alerts_total")
        alerts.add_metric([], len(engine.exit_alerts))
        yield alerts
        rehearsals = _family("tickguard_exit_rehearsals_total")
        for outcome, n in (engine.rehearsal.outcomes() if engine.rehearsal is not None else {}).items():
            rehearsals.add_metric([outcome], n)
        yield rehearsals

    def _budget_families(self) -> Iterator[Metric]:
        engine = self.engine
        stats = engine.budget.throttle.stats()
        lanes = [(lane, lane.name.lower()) for lane in Lane]
        for name, values, scale in (("tickguard_throttle_queue_depth", stats.depth, 1),
                                    ("tickguard_throttle_sent_total", stats.sent, 1),
                                    ("tickguard_throttle_refusals_total", stats.refused, 1),
                                    ("tickguard_throttle_wait_seconds_total", stats.wait_ns_total, 1e-9),
                                    ("tickguard_throttle_wait_max_seconds", stats.wait_ns_max, 1e-9)):
            family = _family(name)
            for lane, label in lanes:
                family.add_metric([label], values.get(lane, 0) * scale)
            yield family
        rate = _family("tickguard_throttle_rate_limit_messages_per_second")
        rate.add_metric([], engine.settings.throttle.rate)
        yield rate

    def _account_families(self) -> Iterator[Metric]:
        engine = self.engine
        now = engine.broker.now_ns()
        accounts = dict(self.figures.accounts)
        today = engine.guard.efficiency.today(trading_day(now))
        for account in today:
            accounts.setdefault(account or engine.settings.ib.account or "default", AccountFigures())
        efficiency = _family("tickguard_order_efficiency_ratio")
        for account, count in sorted(today.items()):
            efficiency.add_metric([account or "default"], count.ratio or 0.0)
        yield efficiency
        state = _family("tickguard_account_risk_state")
        reasons = _family("tickguard_account_blocked_reason")
        refused = _family("tickguard_entries_refused_total")
        for (account, cause), n in sorted(engine.guard.refused.items()):
            refused.add_metric([account or "default", cause], n)
        families = {n: _family(f"tickguard_account_{n}") for n in ("open_trades", "gross_exposure", "open_risk",
                                                                     "realized_pnl", "unrealized_pnl")}
        incomplete = bool(engine.reconciliation.incomplete)
        for account, acc in sorted(accounts.items()):
            causes = engine.guard.blocking("" if account == "default" else account, now)
            causes += ["reconciliation"] if incomplete else []
            state.add_metric([account, "ok"], 0 if causes else 1)
            state.add_metric([account, "blocked"], 1 if causes else 0)
            for cause in ("breaker", "efficiency", "reconciliation"):
                reasons.add_metric([account, cause], 1 if cause in causes else 0)
            for n, value in (("open_trades", acc.open_trades), ("gross_exposure", acc.gross_exposure),
                             ("open_risk", acc.open_risk), ("realized_pnl", acc.realized),
                             ("unrealized_pnl", acc.unrealized)):
                families[n].add_metric([account], value)
        yield state
        yield reasons
        yield refused
        yield from families.values()

    def _broker_families(self) -> Iterator[Metric]:
        broker = self.engine.broker
        caches = {"contracts": getattr(broker, "contract_cache", None),
                  "volatility": getattr(broker, "volatility_cache", None)}
        stats = {name: (cache.stats, len(cache)) for name, cache in caches.items() if cache is not None}
        for metric, field_name in (("hits", "hits"), ("misses", "misses"), ("refreshes", "refreshes"),
                                   ("failures", "load_failures")):
            family = _family(f"tickguard_cache_{metric}_total")
            for name, (s, _) in stats.items():
                family.add_metric([name], getattr(s, field_name))
            yield family
        entries = _family("tickguard_cache_entries")
        for name, (_, size) in stats.items():
            entries.add_metric([name], size)
        yield entries
        state = getattr(broker, "state", None)
        connected = _family("tickguard_broker_connected")
        if state is not None:  # IB: connected and its feed trusted (no 1100 pending)
            connected.add_metric([], 1 if state.connected and state.feed_trusted else 0)
        else:
            connected.add_metric([], 1 if getattr(broker, "connected", False) else 0)
        yield connected
        reconnects = _family("tickguard_broker_reconnects_total")
        reconnects.add_metric([], getattr(state, "reconnects", 0))
        yield reconnects

    def _health_families(self) -> Iterator[Metric]:
        engine = self.engine
        ages = _family("tickguard_last_tick_age_seconds")
        for symbol, age in self.figures.tick_age_s:
            ages.add_metric([symbol], age)
        yield ages
        for name, value in (("tickguard_blind_trades", self.figures.blind_trades),
                            ("tickguard_blind_symbols", len(engine.health.blind)),
                            ("tickguard_reconciliation_differences", len(engine.reconciliation.differences)),
                            ("tickguard_reconciliation_incomplete", 1 if engine.reconciliation.incomplete else 0)):
            family = _family(name)
            family.add_metric([], value)
            yield family
        passes = _family("tickguard_reconciliation_passes_total")
        passes.add_metric([], engine.reconciliation.passes)
        yield passes
        last = _family("tickguard_reconciliation_last_pass_age_seconds")
        if engine.reconciliation.last_pass_ns is not None:
            last.add_metric([], max(0, engine.broker.now_ns() - engine.reconciliation.last_pass_ns) / 1e9)
        yield last
        yield from self._shadow_families()

    def _shadow_families(self) -> Iterator[Metric]:
        shadow = getattr(self.engine, "shadow", None)
        snapshots = _family("tickguard_shadow_snapshots")
        age = _family("tickguard_shadow_snapshot_age_max_seconds")
        checks = _family("tickguard_shadow_checks_total")
        if shadow is not None:
            counts, oldest_ns = shadow.summary(self.engine.broker.now_ns())
            for verdict, n in sorted(counts.items()):
                snapshots.add_metric([verdict], n)
            age.add_metric([], oldest_ns / 1e9)
            for verdict, n in sorted(shadow.checks.items()):
                checks.add_metric([verdict], n)
        yield snapshots
        yield age
        yield checks
