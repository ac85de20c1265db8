"""Generate tickguard's Grafana dashboard: ``python deploy/grafana/dashboard.py`` writes tickguard-dashboard.json.

Why code and not a JSON file edited in Grafana: the dashboard's 46 panels come in a handful of shapes (a p50/p99
pair over a histogram's buckets, a rate per label, a gauge per label, a state with names for its values) and its
queries must name exactly the metrics the engine exports.  Here each shape is one helper, every query goes through
``sel``/``rate``/``quantile`` (so every one is scoped by the dashboard's ``job`` and ``instance`` variables and
reads the ``datasource`` variable), and tests/deploy/test_dashboard.py holds the committed JSON to this file and
every metric in it to src/tickguard/runtime/metric_catalog.py.  To change the dashboard, change this file and run
it; a JSON edited by hand fails that test.

Built with grafana-foundation-sdk (Grafana Labs' typed builders for dashboards, a dev dependency): the builders
know Grafana's panel schema, so an option misspelled here is an AttributeError, not a silently ignored JSON key.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, statetimeline, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dash_m
from grafana_foundation_sdk.models import heatmap as heatmap_m
from grafana_foundation_sdk.models import prometheus as prom_m

OUTPUT = Path(__file__).with_name("tickguard-dashboard.json")
UID = "tickguard-engine"

# Every panel and query reads the data source chosen in the `datasource` variable, so the JSON imports into any
# Grafana whatever its Prometheus data source is called.
DATASOURCE = dash_m.DataSourceRef(type_val="prometheus", uid="${datasource}")
SCOPE = 'job=~"$job", instance=~"$instance"'
RATE_WINDOW = "$__rate_interval"  # Grafana's window for rate(): at least 4 scrapes whatever the zoom
EVENTS_WINDOW = "5m"  # counts of rare events (exits, rejections, reconnects) are shown per 5 minutes

Panel: TypeAlias = timeseries.Panel | heatmap.Panel | stat.Panel | statetimeline.Panel


@dataclass(frozen=True, slots=True)
class Query:
    expr: str
    legend: str = ""


# ---- PromQL helpers: every selector carries the dashboard's scope ---------------------------------------------


def sel(metric: str, matchers: str = "") -> str:
    """``metric{job=~"$job", instance=~"$instance", <matchers>}``."""
    return f"{metric}{{{SCOPE}{', ' + matchers if matchers else ''}}}"


def _by(labels: Sequence[str]) -> str:
    return f"by ({', '.join(labels)}) " if labels else ""


def rate(metric: str, by: Sequence[str] = (), matchers: str = "") -> str:
    """Per-second rate of a counter, summed over what ``by`` does not keep."""
    return f"sum {_by(by)}(rate({sel(metric, matchers)}[{RATE_WINDOW}]))"


def increase(metric: str, by: Sequence[str] = (), window: str = EVENTS_WINDOW) -> str:
    """How many events in ``window``: for counters that move a few times an hour, where a rate reads as 0.003/s."""
    return f"sum {_by(by)}(increase({sel(metric)}[{window}]))"


def gauge(metric: str, by: Sequence[str] = (), agg: str = "sum", matchers: str = "") -> str:
    return f"{agg} {_by(by)}({sel(metric, matchers)})"


def quantile(q: float, family: str, by: Sequence[str] = ()) -> str:
    """The q-quantile of a histogram family, from the rate of its buckets (per ``by`` label)."""
    return f"histogram_quantile({q}, {rate(family + '_bucket', ('le', *by))})"


def legend(prefix: str, by: Sequence[str]) -> str:
    """``p99 {{kind}}``: a legend naming the series by its labels."""
    return " ".join([prefix, *(f"{{{{{label}}}}}" for label in by)]).strip()


# ---- panel shapes -------------------------------------------------------------------------------------------


def _frame(panel: Panel, title: str, description: str, queries: Sequence[Query], unit: str, width: int,
           height: int) -> Panel:
    """What every panel has: title, why-to-look text, the datasource variable, unit, size, and its queries."""
    panel.title(title).description(description).datasource(DATASOURCE).unit(unit).span(width).height(height)
    for i, query in enumerate(queries):
        target = prometheus.Dataquery().ref_id(chr(ord("A") + i)).datasource(DATASOURCE).expr(query.expr).range()
        if query.legend:
            target.legend_format(query.legend)
        if isinstance(panel, heatmap.Panel):
            target.format(prom_m.PromQueryFormat.HEATMAP)
        panel.with_target(target)
    return panel


def graph(title: str, description: str, queries: Sequence[Query], unit: str = "short", *, width: int = 12,
          height: int = 8, stack: bool = False, bars: bool = False, signed: bool = False) -> timeseries.Panel:
    """A time series; ``stack`` for parts of a whole (trades by state), ``bars`` for counts per window, ``signed``
    for figures that go below 0 (P&L: every other axis starts at 0, so a flat line does not look like a swing)."""
    panel = timeseries.Panel()
    _frame(panel, title, description, queries, unit, width, height)
    panel.legend(common_b.VizLegendOptions().show_legend(True).display_mode(common.LegendDisplayMode.LIST)
                 .placement(common.LegendPlacement.BOTTOM))
    panel.tooltip(common_b.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING))
    panel.fill_opacity(30 if stack or bars else 10).line_width(1)
    if not signed:
        panel.min(0)
    if stack:
        panel.stacking(common_b.StackingConfig().mode(common.StackingMode.NORMAL))
    if bars:
        panel.draw_style(common.GraphDrawStyle.BARS)
    return panel


def latency(title: str, description: str, family: str, by: Sequence[str] = (), unit: str = "s",
            width: int = 12) -> timeseries.Panel:
    """p50 and p99 of a histogram (per ``by`` label): the typical case and the tail an exit may land in."""
    queries = [Query(quantile(q, family, by), legend(name, by)) for q, name in ((0.5, "p50"), (0.99, "p99"))]
    return graph(title, description, queries, unit, width=width)


def bucket_heatmap(title: str, description: str, family: str, unit: str, width: int = 12) -> heatmap.Panel:
    """The histogram's buckets over time, as Prometheus counted them (Grafana computes nothing: calculate off)."""
    panel = heatmap.Panel()
    query = Query(rate(family + "_bucket", ("le",)), "{{le}}")
    _frame(panel, title, description, [query], unit, width, 8)
    panel.calculate(False).y_axis(heatmap.YAxisConfig().unit(unit)).cell_gap(1).show_tooltip()
    panel.color(heatmap.HeatmapColorOptions().mode(heatmap_m.HeatmapColorMode.SCHEME).scheme("Oranges").steps(64))
    return panel


def _names(values: dict[str, tuple[str, str]]) -> list[dash_m.ValueMapping]:
    """Value mappings ``{"1": ("connected", "green")}``: a state read as a word and a colour, not as 0 or 1."""
    return [dash_m.ValueMap(options={value: dash_m.ValueMappingResult(text=text, color=color, index=i)
                                     for i, (value, (text, color)) in enumerate(values.items())})]


def _bad_above(limit: float) -> dash_b.ThresholdsConfig:
    """Green below ``limit``, red from it on: for figures whose healthy value is 0."""
    return dash_b.ThresholdsConfig().mode(dash_m.ThresholdsMode.ABSOLUTE).steps(
        [dash_m.Threshold(value=None, color="green"), dash_m.Threshold(value=limit, color="red")])


def single(title: str, description: str, query: Query, unit: str = "short", *,
           names: dict[str, tuple[str, str]] | None = None,
           bad_above: float | None = None, show_name: bool = False, width: int = 4, height: int = 4) -> stat.Panel:
    """One number (or word, with ``names``) at a glance, the latest value."""
    panel = stat.Panel()
    _frame(panel, title, description, [query], unit, width, height)
    panel.reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    panel.graph_mode(common.BigValueGraphMode.NONE).color_mode(common.BigValueColorMode.BACKGROUND)
    panel.text_mode(common.BigValueTextMode.NAME if show_name else common.BigValueTextMode.VALUE)
    if names:
        panel.mappings(_names(names))
    panel.thresholds(_bad_above(bad_above) if bad_above is not None else
                     dash_b.ThresholdsConfig().mode(dash_m.ThresholdsMode.ABSOLUTE).steps(
                         [dash_m.Threshold(value=None, color="blue")]))
    return panel


def states(title: str, description: str, query: Query, names: dict[str, tuple[str, str]],
           width: int = 12) -> statetimeline.Panel:
    """A state over time, one lane per series: when an account was blocked, when the broker was away."""
    panel = statetimeline.Panel()
    _frame(panel, title, description, [query], "short", width, 8)
    panel.mappings(_names(names)).show_value(common.VisibilityMode.NEVER).merge_values(True).fill_opacity(80)
    panel.legend(common_b.VizLegendOptions().show_legend(True).display_mode(common.LegendDisplayMode.LIST)
                 .placement(common.LegendPlacement.BOTTOM))
    return panel


# ---- the rows -----------------------------------------------------------------------------------------------

UP_DOWN = {"1": ("up", "green"), "0": ("DOWN", "red")}
CONNECTED = {"1": ("connected", "green"), "0": ("DISCONNECTED", "red")}
RISK = {"0": ("ok", "green"), "1": ("BLOCKED", "red")}


def overview() -> list[Panel]:
    return [
        single("Engine scrape", "Whether Prometheus reaches the engine's /metrics (alert TickguardEngineDown).",
               Query(gauge("up", agg="min")), names=UP_DOWN),
        single("Broker", "1 while connected to the broker with a trusted feed (alert TickguardBrokerDisconnected).",
               Query(gauge("tickguard_broker_connected", agg="min")), names=CONNECTED),
        single("Blind trades", "Open trades whose symbol has been silent in trading hours past the watchdog's "
               "bound: their exits cannot trigger (alert TickguardBlindTrades).",
               Query(gauge("tickguard_blind_trades")), bad_above=1),
        single("Reconciliation differences", "Differences with the broker's book still seen (alert "
               "TickguardReconciliationDifferences).", Query(gauge("tickguard_reconciliation_differences")),
               bad_above=1),
        single("Exits refused (time range)", "Exit orders the broker refused over the dashboard's time range; each "
               "is an ERROR line EXIT REFUSED and is retried (alert TickguardExitRefused).",
               Query(increase("tickguard_exit_alerts_total", window="$__range")), bad_above=1),
        single("Uptime", "Time since the engine started.",
               Query(f"time() - {gauge('tickguard_engine_start_time_seconds', agg='max')}"), "s"),
    ]


def engine() -> list[Panel]:
    return [
        single("Version", "The running version and broker (ib, or sim for the simulator).",
               Query(sel("tickguard_engine_info"), "{{version}} ({{broker}})"), show_name=True, width=6, height=8),
        graph("Engine steps / s", "Engine loop steps (one per batch of broker events or timer): the engine's "
              "heartbeat; flat at 0 while up means the loop is stuck.",
              [Query(rate("tickguard_engine_steps_total"), "steps/s")], "short", width=6),
        graph("Event-loop lag", "How late the event loop ran a timer: what any quote or order waits behind other "
              "work. p99 above 250 ms for 2 minutes fires TickguardEventLoopLag; the max is the worst single "
              "delay between two scrapes.",
              [Query(quantile(0.5, "tickguard_event_loop_lag_seconds"), "p50"),
               Query(quantile(0.99, "tickguard_event_loop_lag_seconds"), "p99"),
               Query(gauge("tickguard_event_loop_lag_max_seconds", agg="max"), "max since last scrape")], "s"),
    ]


def ticks() -> list[Panel]:
    return [
        graph("Quotes received and dropped / s", "Quotes from the broker, and those refused as invalid "
              "(crossed, non-positive, stale) by reason.",
              [Query(rate("tickguard_ticks_received_total"), "received"),
               Query(rate("tickguard_ticks_dropped_total", ("reason",)), "dropped {{reason}}")], "short"),
        latency("Ticks per evaluated batch", "How many quotes one evaluation handles: batches grow in a storm, "
                "which keeps the engine current at the price of a longer evaluation.", "tickguard_tick_batch_ticks",
                unit="short"),
        bucket_heatmap("Tick evaluation time (heatmap)", "Wall time to evaluate one batch of quotes against every "
                       "level, as counted in the histogram's buckets.", "tickguard_tick_evaluation_seconds", "s"),
        latency("Tick evaluation time", "Wall time to evaluate one batch of quotes against every level.",
                "tickguard_tick_evaluation_seconds"),
    ]


def exit_chain() -> list[Panel]:
    return [
        latency("Tick → intent", "From a quote's arrival to the exit it triggered decided (wall clock): the "
                "engine's own reaction time.", "tickguard_tick_to_intent_seconds"),
        latency("Intent → wire", "From an order decided to it written to the broker connection: the journal "
                "commit and the wait for the message budget included (wall clock).",
                "tickguard_intent_to_wire_seconds", ("kind",)),
        latency("Order → ack", "From an order sent to the broker's first status for it (broker clock; virtual in "
                "the simulator).", "tickguard_order_ack_seconds", ("kind",)),
        latency("Order → fill", "From an order sent to its first fill (broker clock).",
                "tickguard_order_fill_seconds", ("kind",)),
    ]


def trades_and_orders() -> list[Panel]:
    return [
        graph("Active trades by state", "Trades not yet over, by state (pending_entry, open, exiting, halted). A "
              "halted trade (an over-fill, or an exit decided twice) needs a person: nothing automated is sent for "
              "it (alert TickguardTradesHalted).",
              [Query(gauge("tickguard_trades", ("state",)), "{{state}}")], width=8, stack=True),
        graph("Exits by reason (per 5 min)", "Exit orders decided, by what triggered them.",
              [Query(increase("tickguard_exits_total", ("reason",)), "{{reason}}")], width=8, bars=True),
        graph("Orders sent / s", "Orders written to the broker, entries and exits.",
              [Query(rate("tickguard_orders_sent_total", ("kind",)), "{{kind}}")], width=8),
        graph("Rejected orders by code (per 5 min)", "Orders the broker refused, by its error code and kind "
              "(entry / exit); 5 in 5 minutes fires TickguardRejectionBurst. The log has each reason.",
              [Query(increase("tickguard_orders_rejected_total", ("code", "kind")), "{{kind}} code {{code}}")],
              bars=True),
        graph("Exits refused by the broker (per 5 min)", "Each one is an ERROR line EXIT REFUSED and is retried, "
              "more certain each time (alert TickguardExitRefused).",
              [Query(increase("tickguard_exit_alerts_total"), "refused exits")], bars=True),
        graph("Exit rehearsals / s by outcome", "The exit rehearsal keeps the exit path warm (about 500 a second "
              "while quotes come; none in a storm - saturated - or without quotes - quiet). A failed one is an exit "
              "that may fail when it fires: a WARNING in the log names the symbol (alert "
              "TickguardExitRehearsalFailing).",
              [Query(rate("tickguard_exit_rehearsals_total", ("outcome",)), "{{outcome}}")]),
    ]


def message_budget() -> list[Panel]:
    return [
        graph("Messages sent / s against the budget", "Messages the budget let go, per lane, against [throttle] "
              "rate. Above 90% of it for 5 minutes fires TickguardThrottleNearLimit.",
              [Query(rate("tickguard_throttle_sent_total", ("lane",)), "{{lane}}"),
               Query(rate("tickguard_throttle_sent_total"), "all lanes"),
               Query(gauge("tickguard_throttle_rate_limit_messages_per_second", agg="max"), "limit")], width=8),
        graph("Queue depth by lane", "Messages waiting for the budget, per lane. A lane never at 0 for 2 minutes "
              "fires TickguardThrottleBacklog.",
              [Query(gauge("tickguard_throttle_queue_depth", ("lane",)), "{{lane}}")], width=8),
        graph("Wait in the budget by lane", "Average wait of the messages sent (summed wait / messages sent), and "
              "the longest wait of any message, per lane.",
              [Query(f"{rate('tickguard_throttle_wait_seconds_total', ('lane',))} / "
                     f"{rate('tickguard_throttle_sent_total', ('lane',))}", "average {{lane}}"),
               Query(gauge("tickguard_throttle_wait_max_seconds", ("lane",), agg="max"), "longest {{lane}}")],
              "s", width=8),
        graph("Refusals by lane (per 5 min)", "Messages refused because they waited too long or the lane's queue "
              "was full (entries end rejected; exits are never refused). Any fires TickguardThrottleRefusing.",
              [Query(increase("tickguard_throttle_refusals_total", ("lane",)), "{{lane}}")], bars=True),
        graph("Order-efficiency ratio by account", "Messages per filled order today (IB's order efficiency "
              "ratio). Above [throttle] efficiency_max (20) new entries of the account are refused.",
              [Query(gauge("tickguard_order_efficiency_ratio", ("account",), agg="max"), "{{account}}")]),
    ]


def risk() -> list[Panel]:
    return [
        states("Risk state by account", "BLOCKED: new entries refused (entry breaker, efficiency ratio, or "
               "reconciliation incomplete); exits still go. Alert TickguardAccountRiskBlocked.",
               Query(gauge("tickguard_account_risk_state", ("account",), "max", 'state="blocked"'), "{{account}}"),
               RISK, width=8),
        graph("Why entries wait, by account", "1 for each reason an account's new entries are held now: breaker "
              "(orders refused again and again), efficiency (IB's order-efficiency ratio), reconciliation (the "
              "broker's book could not be read).",
              [Query(gauge("tickguard_account_blocked_reason", ("account", "reason"), "max"),
                     "{{account}} {{reason}}")], width=8),
        graph("New trades refused by flood control (per 5 min)", "New trades refused because their account's "
              "entries wait (breaker, efficiency), by account and reason.",
              [Query(increase("tickguard_entries_refused_total", ("account", "reason")), "{{account}} {{reason}}")],
              width=8, bars=True),
        graph("Open trades by account", "Trades with an open position, per account.",
              [Query(gauge("tickguard_account_open_trades", ("account",)), "{{account}}")], width=8),
        graph("Gross exposure by account", "Sum of |position × mark| of open trades, in the account's currency.",
              [Query(gauge("tickguard_account_gross_exposure", ("account",)), "{{account}}")], width=8),
        graph("Open risk by account", "What the open trades lose if every stop fills at its level (account "
              "currency; 0 once every stop is at or past break-even).",
              [Query(gauge("tickguard_account_open_risk", ("account",)), "{{account}}")], width=8),
        graph("P&L by account", "Realized P&L of this run's journal net of commissions, and unrealized P&L of "
              "open trades at the last quote (account currency).",
              [Query(gauge("tickguard_account_realized_pnl", ("account",)), "realized {{account}}"),
               Query(gauge("tickguard_account_unrealized_pnl", ("account",)), "unrealized {{account}}")], width=8,
              signed=True),
    ]


def _cache_ratio() -> str:
    hits, misses = rate("tickguard_cache_hits_total", ("cache",)), rate("tickguard_cache_misses_total", ("cache",))
    return f"{hits} / ({hits} + {misses})"


def caches() -> list[Panel]:
    return [
        graph("Cache hit ratio", "Lookups served from a fresh entry, per cache; a miss waits on a load.",
              [Query(_cache_ratio(), "{{cache}}")], "percentunit", width=6),
        graph("Cache lookups / s", "Hits and misses per cache.",
              [Query(rate("tickguard_cache_hits_total", ("cache",)), "hits {{cache}}"),
               Query(rate("tickguard_cache_misses_total", ("cache",)), "misses {{cache}}")], width=6),
        graph("Cache refreshes and failures (per 5 min)", "Background refreshes started, and loads that failed "
              "(a failing cache serves stale entries or makes lookups wait).",
              [Query(increase("tickguard_cache_refreshes_total", ("cache",)), "refreshes {{cache}}"),
               Query(increase("tickguard_cache_failures_total", ("cache",)), "failures {{cache}}")], width=6,
              bars=True),
        graph("Cache entries", "Entries held per cache.",
              [Query(gauge("tickguard_cache_entries", ("cache",)), "{{cache}}")], width=6),
    ]


def shadow_orders() -> list[Panel]:
    return [
        graph("Open trades by shadow verdict", "Open trades by the verdict of their exit's last what-if check "
              "(accepted, refused, error, none): refused means the broker would refuse that exit now.",
              [Query(gauge("tickguard_shadow_snapshots", ("verdict",)), "{{verdict}}")], width=8, stack=True),
        graph("Oldest shadow check", "Age of the oldest exit what-if check of an open trade.",
              [Query(gauge("tickguard_shadow_snapshot_age_max_seconds", agg="max"), "oldest")], "s", width=8),
        graph("Shadow checks / s by verdict", "Exit what-if checks made, by verdict.",
              [Query(rate("tickguard_shadow_checks_total", ("verdict",)), "{{verdict}}")], width=8),
    ]


def market_data() -> list[Panel]:
    return [
        graph("Last tick age per symbol", "Age of the last quote of each symbol with an open trade (the stalest "
              "symbols, up to [metrics] max_symbol_labels). Past [watchdog] stale_tick_s the symbol is "
              "resubscribed; past twice that, its trades are blind.",
              [Query(gauge("tickguard_last_tick_age_seconds", ("symbol",), agg="max"), "{{symbol}}")], "s"),
        graph("Blind trades and symbols", "Open trades, and symbols, silent in trading hours past the watchdog's "
              "bound (alert TickguardBlindTrades).",
              [Query(gauge("tickguard_blind_trades"), "blind trades"),
               Query(gauge("tickguard_blind_symbols"), "blind symbols")]),
    ]


def broker_and_reconciliation() -> list[Panel]:
    return [
        states("Broker connection", "Connected with a trusted feed, or not (alert TickguardBrokerDisconnected).",
               Query(gauge("tickguard_broker_connected", ("instance",), agg="min"), "{{instance}}"), CONNECTED,
               width=8),
        graph("Reconnects (per 5 min)", "Reconnections to the broker; 3 within 10 minutes fires "
              "TickguardReconnectStorm.",
              [Query(increase("tickguard_broker_reconnects_total"), "reconnects")], width=8, bars=True),
        graph("Reconciliation", "Passes completed (per 5 min), differences with the broker still seen (alert "
              "TickguardReconciliationDifferences), and 1 while the broker's book could not be read in full (new "
              "entries wait).",
              [Query(increase("tickguard_reconciliation_passes_total"), "passes"),
               Query(gauge("tickguard_reconciliation_differences"), "differences"),
               Query(gauge("tickguard_reconciliation_incomplete", agg="max"), "incomplete")], width=8),
        graph("Time since the last complete reconciliation", "Broker clock; it should stay below [engine] "
              "reconcile_interval_s plus a pass (alert TickguardReconciliationStalled).",
              [Query(gauge("tickguard_reconciliation_last_pass_age_seconds", agg="max"), "age")], "s", width=8),
    ]


def journal() -> list[Panel]:
    return [
        latency("Journal commit time", "Time to commit one journal transaction (an engine step's batch): every "
                "order waits for it before it is sent.", "tickguard_journal_commit_seconds"),
        bucket_heatmap("Journal commit time (heatmap)", "The commit time's histogram buckets over time.",
                       "tickguard_journal_commit_seconds", "s"),
        graph("Journal rollbacks (per 5 min)", "Transactions rolled back by a failed write or commit: nothing they "
              "recorded is sent (alert TickguardJournalRollbacks).",
              [Query(increase("tickguard_journal_rollbacks_total"), "rollbacks")], bars=True),
    ]


ROWS = (
    ("Overview", overview),
    ("Engine", engine),
    ("Ticks", ticks),
    ("Exit latency chain: tick → intent → wire → ack → fill", exit_chain),
    ("Trades and orders", trades_and_orders),
    ("Message budget (throttle)", message_budget),
    ("Risk per account", risk),
    ("Caches", caches),
    ("Shadow orders (exit what-if checks)", shadow_orders),
    ("Market data", market_data),
    ("Broker connection and reconciliation", broker_and_reconciliation),
    ("Journal", journal),
)


def variables() -> list[dash_b.DatasourceVariable | dash_b.QueryVariable]:
    """The data source to read, then which engines (job, instance) - listed from tickguard_engine_info."""
    return [
        dash_b.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        dash_b.QueryVariable("job").label("Job").datasource(DATASOURCE)
        .query("label_values(tickguard_engine_info, job)").refresh(dash_m.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dash_m.VariableSort.ALPHABETICAL_ASC),
        dash_b.QueryVariable("instance").label("Instance").datasource(DATASOURCE)
        .query('label_values(tickguard_engine_info{job=~"$job"}, instance)')
        .refresh(dash_m.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dash_m.VariableSort.ALPHABETICAL_ASC)
        .multi(True).include_all(True).all_value(".*"),
    ]


def build() -> dash_m.Dashboard:
    board = (dash_b.Dashboard("tickguard")
             .uid(UID)
             .description("tickguard execution engine: exits, latency, message budget, risk, broker. Generated by "
                          "deploy/grafana/dashboard.py - edit that, not this JSON.")
             .tags(["tickguard", "trading"])
             .editable()
             .time("now-1h", "now")
             .refresh("10s")
             .timezone("browser")
             .tooltip(dash_m.DashboardCursorSync.CROSSHAIR))
    for variable in variables():
        board.with_variable(variable)
    ids = itertools.count(1)  # stable panel ids, in reading order: Grafana's links to a panel name its id
    for title, panels in ROWS:
        board.with_row(dash_b.Row(title).id(next(ids)))
        for panel in panels():
            board.with_panel(panel.id(next(ids)))
    return board.build()


def render() -> str:
    """The dashboard as the committed JSON text (sorted keys, so a regeneration diffs only what changed)."""
    return json.dumps(build(), cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> int:
    OUTPUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
