"""After a short simulated run, a scrape parses (``prometheus_client``'s own parser) and holds every metric of the
catalog with values that agree with the engine's state - and no trade id ever becomes a label."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tickguard.config import load
from tickguard.core.model import TradeState
from tickguard.interfaces.demo import demo_trades
from tickguard.runtime.engine_factory import sim_engine
from tickguard.runtime.metric_catalog import CATALOG, Kind
from tickguard.runtime.metrics import EngineMetrics
from tickguard.runtime.telemetry import watch_loop_lag
from tickguard.store.journal import Journal

NS = 1_000_000_000


async def scraped(engine, max_symbol_labels: int = 200) -> tuple[dict, dict]:
    registry = CollectorRegistry(auto_describe=False)
    collector = EngineMetrics(engine, max_symbol_labels)
    registry.register(collector)
    await collector.refresh()
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {}
    for family in families.values():
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return families, samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def total(samples: dict, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """A journaled simulated run: 4 symbols, 30 demo trades, ten virtual minutes, event-loop lag sampled - run once
    for the module, scraped at its end (twice: all symbols, and one symbol label at most)."""

    async def run():
        s = load(None, {"sim": {"speed": 0, "symbols": 4, "seed": 11, "trades": 30}})
        journal = Journal.open(tmp_path_factory.mktemp("metrics") / "j.db")
        engine, venue = sim_engine(s, journal=journal)
        lag = asyncio.get_running_loop().create_task(watch_loop_lag(engine.telemetry, 0.001))
        await engine.start(sorted(venue.specs))
        start = engine.broker.now_ns()
        for i, request in enumerate(demo_trades(30, sorted(venue.specs), 11)):
            engine.schedule(start + NS + i * 10 * NS, request)
        await engine.run_until(start + 600 * NS)
        while engine.telemetry.loop_lag.count == 0:  # the run yields to the loop; make sure one sample landed
            await asyncio.sleep(0.002)
        lag.cancel()
        full, one_symbol = await scraped(engine), await scraped(engine, max_symbol_labels=1)
        if engine.shadow is not None:
            engine.shadow.cancel()
        await engine.broker.close()
        journal.close()
        return engine, full, one_symbol

    return asyncio.run(run())


def test_every_catalog_metric_is_exported_with_its_type(ran):
    _, (families, _), _ = ran
    for spec in CATALOG:
        name = spec.name.removesuffix("_total") if spec.kind is Kind.COUNTER else spec.name
        assert name in families, f"{spec.name} is not exported"
        assert families[name].type == spec.kind.value, spec.name
    assert set(families) == {s.name.removesuffix("_total") if s.kind is Kind.COUNTER else s.name for s in CATALOG}


def test_values_agree_with_the_engine(ran):
    engine, (_, samples), _ = ran
    live = [t for t in engine.trades.trades.values() if not t.state.is_final]
    for state in ("pending_entry", "open", "exiting", "halted"):
        assert value(samples, "tickguard_trades", state=state) == sum(t.state.value == state for t in live)
    assert sum(t.state is TradeState.CLOSED for t in engine.trades.trades.values()) > 0  # exits happened
    exits = [r for r in engine.executor.orders.values() if r.intent.is_exit]
    entries = [r for r in engine.executor.orders.values() if not r.intent.is_exit]
    assert total(samples, "tickguard_exits_total") == len(exits) > 0
    assert value(samples, "tickguard_orders_sent_total", kind="exit") == sum(r.order_id is not None for r in exits)
    assert value(samples, "tickguard_orders_sent_total", kind="entry") == sum(r.order_id is not None
                                                                               for r in entries)
    counters = engine.ticks.counters
    assert value(samples, "tickguard_ticks_received_total") == counters.accepted + counters.dropped_total > 1000
    assert value(samples, "tickguard_tick_batch_ticks_sum") == counters.accepted + counters.dropped_total  # each once
    assert 0 < value(samples, "tickguard_tick_evaluation_seconds_sum") < 60
    # every exit fired by a tick has its tick-to-intent latency; every order decided here its intent-to-wire
    tick_fired = sum(1 for r in exits if r.intent.trigger is not None and r.intent.trigger.tick_seq >= 0)
    assert value(samples, "tickguard_tick_to_intent_seconds_count") == tick_fired > 0
    assert value(samples, "tickguard_intent_to_wire_seconds_count", kind="exit") == len(exits)
    assert value(samples, "tickguard_order_ack_seconds_count", kind="entry") >= 1
    assert value(samples, "tickguard_order_fill_seconds_count", kind="exit") == sum(r.filled > 0 for r in exits)
    assert value(samples, "tickguard_journal_commit_seconds_count") == engine.journal.commits
    assert value(samples, "tickguard_event_loop_lag_seconds_count") >= 1
    assert value(samples, "tickguard_broker_connected") == 1
    assert value(samples, "tickguard_cache_entries", cache="contracts") == 4
    stats = engine.budget.throttle.stats()
    sent_exits = value(samples, "tickguard_throttle_sent_total", lane="exit_critical") + value(
        samples, "tickguard_throttle_sent_total", lane="exit")
    assert sent_exits == sum(stats.sent[lane] for lane in stats.sent if lane.name.startswith("EXIT"))
    assert value(samples, "tickguard_throttle_rate_limit_messages_per_second") == engine.settings.throttle.rate
    assert value(samples, "tickguard_reconciliation_passes_total") == engine.reconciliation.passes
    accounts = {t.request.account for t in engine.trades.trades.values()}
    open_by_account = {a: sum(1 for t in live if t.request.account == a and t.open_qty > 0) for a in accounts}
    for account, n in open_by_account.items():
        assert value(samples, "tickguard_account_open_trades", account=account) == n
        assert value(samples, "tickguard_account_risk_state", account=account, state="ok") == 1
    # every live trade with a position has its exit checked by the what-if (runtime/shadow.py), in the background
    shadow_counts, _ = engine.shadow.summary(engine.broker.now_ns())
    assert total(samples, "tickguard_shadow_snapshots") == sum(shadow_counts.values()) > 0
    assert value(samples, "tickguard_shadow_snapshots", verdict="accepted") > 0
    assert total(samples, "tickguard_shadow_checks_total") >= value(samples, "tickguard_shadow_snapshots",
                                                                    verdict="accepted")
    assert 0 < value(samples, "tickguard_shadow_snapshot_age_max_seconds") <= 600  # the run is 600 s long
    open_symbols = {t.symbol for t in live if t.open_qty > 0}
    ages = {dict(k[1])["symbol"]: v for k, v in samples.items() if k[0] == "tickguard_last_tick_age_seconds"}
    assert set(ages) == open_symbols and all(0 <= a < 60 for a in ages.values())


def test_no_trade_id_or_order_key_is_a_label_and_symbol_labels_are_bounded(ran):
    engine, _, (_, samples) = ran
    ids = set(engine.trades.trades) | set(engine.executor.orders)
    labels = {v for _, lbls in samples for _, v in lbls}
    assert not labels & ids
    assert not any(v.startswith("tg:") for v in labels)
    assert sum(1 for (n, _) in samples if n == "tickguard_last_tick_age_seconds") <= 1


async def test_a_scrape_of_an_engine_without_journal_or_trades_still_parses():
    s = load(None, {"sim": {"speed": 0, "symbols": 1, "seed": 1}})
    engine, venue = sim_engine(s)
    await engine.start(sorted(venue.specs))
    families, samples = await scraped(engine)
    assert value(samples, "tickguard_trades", state="open") == 0
    assert families["tickguard_journal_commit_seconds"].samples == []  # no journal: no commit figures
    await engine.broker.close()


async def test_a_halted_trade_is_counted_as_halted_not_open():
    """What ``TickguardTradesHalted`` (deploy/prometheus/alerts.yml) watches: a trade the engine halts leaves the
    open count and is counted under ``state="halted"`` at the next scrape - its exits are no longer automated."""
    s = load(None, {"sim": {"speed": 0, "symbols": 2, "seed": 3, "trades": 6}, "shadow": {"enabled": False}})
    engine, venue = sim_engine(s)
    await engine.start(sorted(venue.specs))
    start = engine.broker.now_ns()
    for i, request in enumerate(demo_trades(6, sorted(venue.specs), 3)):
        engine.schedule(start + NS + i * NS, request)
    await engine.run_until(start + 10 * NS)
    _, samples = await scraped(engine)
    open_before = value(samples, "tickguard_trades", state="open")
    assert value(samples, "tickguard_trades", state="halted") == 0 and open_before >= 1
    victim = next(t for t in engine.trades.trades.values() if t.state is TradeState.OPEN)
    engine.trades.halt(victim.id, "an exit decided under a key that is already an order's (test)")
    _, samples = await scraped(engine)
    assert value(samples, "tickguard_trades", state="halted") == 1
    assert value(samples, "tickguard_trades", state="open") == open_before - 1
    await engine.broker.close()


async def test_flood_control_and_rejections_are_exported_by_account_reason_code_and_kind():
    """An account whose orders are refused again and again: its rejections by code and kind, its entries held by
    the breaker (the reason said) and the new trade refused for it are all in the scrape."""
    from dataclasses import replace
    from decimal import Decimal

    from tickguard.core.exit_rules import StopLoss
    from tickguard.core.model import Side
    from tickguard.core.trade_checks import TradeRejected
    from tickguard.core.trades import TradeRequest

    s = load(None, {"sim": {"speed": 0, "symbols": 2, "seed": 5}, "volatility": {"intraday": False},
                    "throttle": {"breaker_rejections": 3, "breaker_cool_down_s": 600}, "shadow": {"enabled": False}})
    engine, venue = sim_engine(s)
    await engine.start(sorted(venue.specs))
    await engine.run_until(engine.broker.now_ns() + 2 * NS)
    venue.exchange.p = replace(venue.exchange.p, reject_prob=1.0)

    def req() -> TradeRequest:
        return TradeRequest(symbol="SIM001", side=Side.LONG, qty=Decimal(10), account="DU1000",
                            rules=[StopLoss(distance=5.0)])

    for _ in range(3):
        engine.submit(req())
    await engine.run_until(engine.broker.now_ns() + 2 * NS)
    with pytest.raises(TradeRejected):
        engine.submit(req())
    _, samples = await scraped(engine)
    rejected = {dict(k[1])["kind"]: v for k, v in samples.items() if k[0] == "tickguard_orders_rejected_total"}
    assert rejected == {"entry": 3}
    assert value(samples, "tickguard_account_risk_state", account="DU1000", state="blocked") == 1
    assert value(samples, "tickguard_account_blocked_reason", account="DU1000", reason="breaker") == 1
    assert value(samples, "tickguard_account_blocked_reason", account="DU1000", reason="efficiency") == 0
    assert value(samples, "tickguard_entries_refused_total", account="DU1000", reason="breaker") == 1
    await engine.broker.close()
