"""Every metric tickguard exports: name, type, labels and meaning, in one table.

Why a table of its own: three things must agree on these names - the collector that exports them
(``runtime/metrics.py``), the Grafana dashboard and the Prometheus alert rules in ``deploy/`` - and a test holds
each of them to this table (a panel or an alert naming a metric the engine does not export is a dashboard that
stays empty on the day it is needed).

Conventions (https://prometheus.io/docs/practices/naming/): base units in names (``_seconds``), ``_total`` on
counters, and no unbounded label values: labels are enums (state, reason, lane, verdict, cache), configured
accounts, IB error codes, and the symbols of open trades (at most ``[metrics] max_symbol_labels`` of them, the
stalest first).  A trade id is never a label.  Money is in the account's currency (no unit suffix exists for it).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str  # the family name; a counter's samples end in _total, a histogram's in _bucket/_sum/_count
    kind: Kind
    labels: tuple[str, ...]
    help: str


def _m(name: str, kind: Kind, labels: tuple[str, ...], help_: str) -> MetricSpec:
    return MetricSpec(name, kind, labels, help_)


C, G, H = Kind.COUNTER, Kind.GAUGE, Kind.HISTOGRAM

CATALOG: tuple[MetricSpec, ...] = (
    # engine
    _m("tickguard_engine_info", G, ("version", "broker"), "Constant 1; the running version and broker (ib or sim)."),
    _m("tickguard_engine_start_time_seconds", G, (), "When the engine started, seconds since the epoch."),
    _m("tickguard_engine_steps_total", C, (), "Engine loop steps (one per batch of broker events or timer)."),
    _m("tickguard_event_loop_lag_seconds", H, (), "How late the event loop ran a timer: the time any tick or "
       "order waits behind other work."),
    _m("tickguard_event_loop_lag_max_seconds", G, (), "Largest event-loop lag of the last 60 seconds."),
    # ticks
    _m("tickguard_ticks_received_total", C, (), "Quotes received from the broker."),
    _m("tickguard_ticks_dropped_total", C, ("reason",), "Quotes refused as invalid (crossed, non-positive, stale)."),
    _m("tickguard_tick_evaluation_seconds", H, (), "Wall time to evaluate one batch of ticks against every level."),
    _m("tickguard_tick_batch_ticks", H, (), "Ticks in one evaluated batch."),
    # latency of an exit, stage by stage
    _m("tickguard_tick_to_intent_seconds", H, (), "From the quote's arrival to the exit it triggered decided "
       "(wall clock)."),
    _m("tickguard_intent_to_wire_seconds", H, ("kind",), "From an order decided to it written to the broker "
       "connection: journal commit and message budget included (wall clock)."),
    _m("tickguard_order_ack_seconds", H, ("kind",), "From an order sent to the broker's first status for it "
       "(broker clock: virtual in the simulator)."),
    _m("tickguard_order_fill_seconds", H, ("kind",), "From an order sent to its first fill (broker clock)."),
    # trades and orders
    _m("tickguard_trades", G, ("state",), "Trades not yet over, by state (pending_entry, open, exiting, halted)."),
    _m("tickguard_exits_total", C, ("reason",), "Exit orders decided, by what triggered them."),
    _m("tickguard_orders_sent_total", C, ("kind",), "Orders written to the broker, entries and exits."),
    _m("tickguard_orders_rejected_total", C, ("code", "kind"), "Orders the broker refused, by its error code, "
       "entries and exits."),
    _m("tickguard_exit_alerts_total", C, (), "Exits the broker refused (each one an ERROR line and an alert)."),
    _m("tickguard_exit_rehearsals_total", C, ("outcome",),
       "Turns of the exit rehearsal (runtime/exit_rehearsal.py) by outcome: rehearsed, failed (the exit's own code "
       "raised on that trade: its exit may fail the same way), saturated / quiet (skipped: a storm, no quotes), "
       "dropped (events still waiting after the step)."),
    # message budget and flood control
    _m("tickguard_throttle_queue_depth", G, ("lane",), "Messages waiting for the message budget, per lane."),
    _m("tickguard_throttle_sent_total", C, ("lane",), "Messages the budget let go, per lane."),
    _m("tickguard_throttle_refusals_total", C, ("lane",), "Messages refused because they waited too long or the "
       "lane's queue was full, per lane."),
    _m("tickguard_throttle_wait_seconds_total", C, ("lane",), "Summed time messages waited in the budget, per lane "
       "(divide by sent for the average)."),
    _m("tickguard_throttle_wait_max_seconds", G, ("lane",), "Longest wait of any message in the budget, per lane."),
    _m("tickguard_throttle_rate_limit_messages_per_second", G, (), "The budget's configured rate ([throttle] rate)."),
    _m("tickguard_order_efficiency_ratio", G, ("account",), "Messages per filled order today, per account "
       "(IB's order efficiency ratio)."),
    # risk, per account
    _m("tickguard_account_risk_state", G, ("account", "state"), "1 for the account's state: ok, or blocked "
       "(new entries refused: entry breaker, efficiency ratio, or reconciliation incomplete)."),
    _m("tickguard_account_blocked_reason", G, ("account", "reason"), "1 for each reason an account's new entries "
       "wait now: breaker (orders refused), efficiency (order-efficiency ratio), reconciliation (broker book "
       "unread)."),
    _m("tickguard_entries_refused_total", C, ("account", "reason"), "New trades refused by flood control (breaker, "
       "efficiency)."),
    _m("tickguard_account_open_trades", G, ("account",), "Trades with an open position, per account."),
    _m("tickguard_account_gross_exposure", G, ("account",), "Sum of |position x mark| of open trades (account "
       "currency)."),
    _m("tickguard_account_open_risk", G, ("account",), "What the open trades lose if every stop fills at its level "
       "(account currency; 0 when every stop is at or past break-even)."),
    _m("tickguard_account_realized_pnl", G, ("account",), "Realized P&L of this run's journal, net of commissions."),
    _m("tickguard_account_unrealized_pnl", G, ("account",), "Unrealized P&L of open trades at the last quote."),
    # caches
    _m("tickguard_cache_hits_total", C, ("cache",), "Lookups served from a fresh cache entry."),
    _m("tickguard_cache_misses_total", C, ("cache",), "Lookups that had to wait on a load."),
    _m("tickguard_cache_refreshes_total", C, ("cache",), "Background refreshes started."),
    _m("tickguard_cache_failures_total", C, ("cache",), "Loads that failed."),
    _m("tickguard_cache_entries", G, ("cache",), "Entries held."),
    # shadow orders
    _m("tickguard_shadow_snapshots", G, ("verdict",), "Open trades by the verdict of their exit's last what-if "
       "check (accepted, refused, error, none)."),
    _m("tickguard_shadow_snapshot_age_max_seconds", G, (), "Age of the oldest exit what-if check of an open trade."),
    _m("tickguard_shadow_checks_total", C, ("verdict",), "Exit what-if checks made, by verdict."),
    # market data
    _m("tickguard_last_tick_age_seconds", G, ("symbol",), "Age of the last quote of each symbol with an open trade "
       "(at most [metrics] max_symbol_labels symbols, the stalest first)."),
    _m("tickguard_blind_trades", G, (), "Open trades whose symbol has been silent in trading hours past "
       "[watchdog] stale_tick_s."),
    _m("tickguard_blind_symbols", G, (), "Symbols silent in trading hours with an open trade."),
    # broker connection
    _m("tickguard_broker_connected", G, (), "1 while connected to the broker and the feed is trusted."),
    _m("tickguard_broker_reconnects_total", C, (), "Reconnections to the broker."),
    # reconciliation with the broker
    _m("tickguard_reconciliation_passes_total", C, (), "Reconciliation passes completed."),
    _m("tickguard_reconciliation_differences", G, (), "Differences with the broker raised and still seen."),
    _m("tickguard_reconciliation_last_pass_age_seconds", G, (), "Time since the last complete reconciliation pass "
       "(broker clock); absent before the first."),
    _m("tickguard_reconciliation_incomplete", G, (), "1 while the broker's book could not be read in full "
       "(new entries wait)."),
    # journal
    _m("tickguard_journal_commit_seconds", H, (), "Time to commit one journal transaction (the step's batch)."),
    _m("tickguard_journal_rollbacks_total", C, (), "Journal transactions rolled back (a failed write or commit): "
       "nothing they recorded is sent."),
)

BY_NAME: dict[str, MetricSpec] = {m.name: m for m in CATALOG}


def sample_names(spec: MetricSpec) -> tuple[str, ...]:
    """The sample names Prometheus stores for a family: what a PromQL query may name."""
    if spec.kind is Kind.COUNTER:
        return (spec.name if spec.name.endswith("_total") else spec.name + "_total",)
    if spec.kind is Kind.HISTOGRAM:
        return (f"{spec.name}_bucket", f"{spec.name}_sum", f"{spec.name}_count")
    return (spec.name,)


EXPORTED_SAMPLES: frozenset[str] = frozenset(s for m in CATALOG for s in sample_names(m))
