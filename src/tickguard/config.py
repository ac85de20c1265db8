"""Every knob of tickguard, in one place: validated with pydantic, read from one TOML file, and
overridable by environment variables (``TICKGUARD_<SECTION>__<KEY>``, e.g. ``TICKGUARD_SIM__SEED=3``).

Precedence, highest first: explicit overrides (CLI options), environment, the TOML file, defaults.
A bad config is refused with the dotted name of the field and what is wrong with it.

Size: one section class per concern, each field with its bounds and its user-facing description; kept in one module
because it is the one home of every knob (the README's reference table is generated from it).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from tickguard.adapters.sim.exchange import ExchangeParams
from tickguard.adapters.sim.market import MarketParams
from tickguard.core.entry_breaker import BreakerLimits
from tickguard.core.model import OrderType
from tickguard.core.throttle import Lane, ThrottleLimits
from tickguard.core.trades import TradeRequest
from tickguard.core.volatility import IntradayRule


class ConfigError(ValueError):
    """A config that cannot be used; the message names every offending field."""


class _Section(BaseModel):
    # allow_inf_nan=False: "inf" and "nan" pass a gt=0 bound (nan compares false both ways) and then overflow or
    # hang deep inside the engine; every number is finite, and bounded above where a huge one would do the same
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class EngineConfig(_Section):
    tick_mode: str = Field("batch", pattern="^(batch|per_tick)$", description="batch: evaluate only ticks "
                           "that cross a guard, most at-risk symbol first; per_tick: every tick (baseline).")
    batch_window_ms: float = Field(100.0, gt=0, le=60_000, description="Upper bound of arrival time gathered into one "
                                   "batch under load (an idle engine evaluates at once).")
    exit_order_type: OrderType = Field(OrderType.MARKET, description="Order type of exits: MKT or LMT.")
    exit_limit_offset: float = Field(
        0.0, ge=0, description="For LMT exits: price offset beyond the touch, making the limit marketable."
    )
    exit_retry_backoff_ms: float = Field(
        500.0, gt=0, le=3_600_000, description="Pause before an exit that failed at the broker is sent again (doubles)."
    )
    order_retry_backoff_ms: float = Field(
        250.0, gt=0, le=3_600_000,
        description="Pause before an order refused for pacing/connectivity is re-sent (doubles)."
    )
    max_order_attempts: int = Field(5, ge=1, le=1000, description="Attempts per order for retryable refusals.")
    ack_timeout_s: float = Field(5.0, ge=0.001, le=86_400,
                                 description="An order sent and not acknowledged for this long is "
                                 "checked against the broker's order book (adopted, closed, or re-sent if unknown).")
    reconcile_interval_s: float = Field(30.0, ge=0.001, le=86_400,
                                        description="Positions, open orders and executions are "
                                        "compared with the journal this often, and after every reconnect.")
    gc_freeze_interval_s: float = Field(10.0, ge=0, le=86_400,
                                        description="Every this many seconds the objects alive are moved out of "
                                        "the garbage collector's full passes (their pauses grow with open "
                                        "trades), which it makes only when asked while the engine runs; 0 = "
                                        "only after start-up, and full passes as CPython decides.")
    exit_rehearsal_ms: float = Field(2.0, ge=0, le=60_000,
                                     description="Every this many milliseconds (real time), between engine "
                                     "steps, an exit's code runs on a stop near the market and acts on nothing - "
                                     "nothing written or sent - so that it is warm in the CPU's caches when a stop "
                                     "fires (runtime/exit_rehearsal.py); 0 = never.")
    busy_poll_us: float = Field(0.0, ge=0, le=100_000,
                                description="tickguard run: once idle after a socket event, the event loop polls its "
                                "sockets for up to this many microseconds before it sleeps, so the next quote finds "
                                "the engine awake (no wake-up of the process, or on a virtual machine of its CPU). "
                                "Costs CPU only while quotes come: all of a core when the quiet between them is "
                                "shorter than this, nothing when the market is quiet (runtime/busy_poll.py). For an "
                                "engine with a CPU of its own; its gain is not established yet (README, Performance, "
                                "fifteenth pass). Off on a single CPU; 0 = never (the default).")
    reconcile_full_every: int = Field(10, ge=1, le=10_000,
                                      description="One routine reconciliation pass in this many also reads the "
                                      "broker's completed orders of the day (it grows with the day's orders); "
                                      "passes after a reconnect or an incomplete book always do.")
    reconcile_retry_s: float = Field(5.0, ge=0.001, le=86_400,
                                     description="Pause before asking again after an incomplete "
                                     "order book, and before confirming a new difference.")


class VolatilityConfig(_Section):
    atr_period: int = Field(14, ge=1, le=1000, description="ATR period in daily bars (Wilder's smoothing).")
    adr_period: int = Field(20, ge=1, le=1000, description="ADR period in daily bars (simple mean of high - low).")
    history_days: int = Field(60, ge=2, le=5000,
                              description="Daily bars (trading sessions) fetched per symbol at start; "
                              "IB is asked for the calendar span that holds them.")
    intraday: bool = Field(True, description="Blend a rolling intraday ATR from 1-minute bars into the daily one.")
    refresh_interval_s: float = Field(300.0, ge=0.001, le=86_400,
                                      description="How often the intraday blend is refreshed.")
    intraday_period: int = Field(30, ge=2, le=1000, description="1-minute bars in the rolling intraday ATR.")
    intraday_weight: float = Field(0.5, ge=0, le=1, description="Largest weight of the intraday ATR in the blend.")
    session_minutes: float = Field(390.0, ge=0.001, le=1440,
                                   description="Minutes per session: scales a 1-minute ATR to a day.")
    regime_bars: int = Field(5, ge=1, le=1000, description="Bars whose range is checked for a regime change.")
    regime_k: float = Field(0.5, gt=0, le=1000, description="A range above k x the ATR in force is a regime change: "
                            "refresh at once.")

    def rule(self) -> IntradayRule:
        return IntradayRule(self.intraday_period, self.intraday_weight, self.session_minutes, self.regime_bars,
                            self.regime_k)


class SimMarketConfig(_Section):
    vol_multiplier: float = Field(4.0, gt=0, le=100, description="Scales intraday volatility (1 = daily sigma).")
    base_tick_rate: float = Field(8.0, gt=0, le=10_000, description="Ticks per second per symbol in a calm regime.")
    volatile_rate_factor: float = Field(4.0, ge=1, le=100, description="Tick-rate multiplier in a volatile regime.")
    volatile_sigma_factor: float = Field(2.5, ge=1, le=100, description="Volatility multiplier in a volatile regime.")
    mean_calm_s: float = Field(900.0, ge=0.001, le=1e7, description="Mean length of a calm regime, seconds.")
    mean_volatile_s: float = Field(180.0, ge=0.001, le=1e7, description="Mean length of a volatile regime, seconds.")
    storms_per_hour: float = Field(2.0, ge=0, le=60, description="Tick storms per symbol per hour.")
    storm_rate: float = Field(3000.0, gt=0, le=100_000, description="Ticks per second during a storm.")
    storm_seconds: float = Field(1.5, gt=0, le=3600, description="Length of a storm, seconds.")
    gaps_per_hour: float = Field(0.5, ge=0, le=60, description="Intraday price gaps per symbol per hour.")
    gap_atr: float = Field(1.5, ge=0, le=100, description="Typical gap size in daily ATRs.")
    spread_bps: float = Field(2.0, gt=0, le=10_000, description="Quoted spread in basis points.")
    locked_prob: float = Field(0.002, ge=0, le=1, description="Share of quotes that are locked (bid = ask).")
    bad_tick_prob: float = Field(0.0005, ge=0, le=1, description="Share of crossed (bad) quotes.")

    def params(self) -> MarketParams:
        return MarketParams(**self.model_dump())


class SimExchangeConfig(_Section):
    latency_ms: float = Field(5.0, ge=0, le=60_000, description="Order latency to the simulated exchange.")
    latency_jitter_ms: float = Field(3.0, ge=0, le=60_000, description="Uniform extra latency, 0..this.")
    slippage_ticks: int = Field(1, ge=0, le=10_000, description="Market orders fill up to this many ticks through.")
    partial_fill_prob: float = Field(0.15, ge=0, le=1, description="Share of orders filled in two pieces.")
    commission_per_share: float = Field(0.005, ge=0, le=1000, description="Commission per share.")
    min_commission: float = Field(1.0, ge=0, le=1e6, description="Minimum commission per fill.")
    reject_prob: float = Field(0.0, ge=0, le=1, description="Share of orders rejected at random.")
    initial_cash: float = Field(1_000_000.0, gt=0, le=1e15, description="Cash per simulated account.")
    leverage: float = Field(4.0, gt=0, le=100, description="Buying power = equity x leverage - gross positions.")
    margin_rate: float = Field(0.25, gt=0, le=1, description="Initial margin per notional (what-if).")
    max_msgs_per_s: int = Field(50, ge=1, le=1_000_000_000,
                                description="IB's pacing limit: client messages per second.")

    def params(self) -> ExchangeParams:
        return ExchangeParams(**self.model_dump())


class SimConfig(_Section):
    seed: int = Field(7, ge=0, le=2**63 - 1, description="Seed of every random draw: the same seed gives the "
                      "same run.")
    symbols: int = Field(5, ge=1, le=2000, description="Number of simulated symbols (SIM001...).")
    trades: int = Field(12, ge=0, le=10_000, description="Demo trades to open when the config lists none.")
    start: dt.datetime = Field(
        dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        description="Virtual start time (a session open).",
    )
    duration_s: float = Field(7200.0, gt=0, le=31_622_400, description="Virtual seconds to run.")
    speed: float = Field(120.0, ge=0, le=1e6, description="Virtual seconds per wall second; 0 = as fast as possible.")
    warmup_s: float = Field(5.0, ge=0, le=86_400, description="Virtual seconds of quotes before the demo trades open.")
    entry_interval_s: float = Field(30.0, ge=0, le=86_400,
                                    description="Virtual seconds between two demo trades' entries. "
                                    "Fixed, not spread over the duration, so a longer run with the same seed "
                                    "extends a shorter one.")
    market: SimMarketConfig = SimMarketConfig()
    exchange: SimExchangeConfig = SimExchangeConfig()


class JournalConfig(_Section):
    path: str = Field("", description="SQLite journal file; empty = no journal (simulation only).")
    url: str = Field("", description="Database URL (postgresql+psycopg://user@host/db); overrides path.")
    sqlite_synchronous: str = Field(
        "NORMAL", pattern="^(NORMAL|FULL|EXTRA)$",
        description="SQLite durability: NORMAL survives any process crash (kill -9); FULL also a power cut.",
    )
    exit_log: bool = Field(True, description="SQLite with NORMAL: an exit is made durable by one append to the "
                           "engine's exit log beside the journal and committed to SQLite after the send, not before "
                           "it (the same durability; ~0.3 ms less per exit at p50, bench/wire_to_wire.py). false: "
                           "every exit waits for SQLite's COMMIT.")
    snapshot_interval_ms: float = Field(250.0, ge=0.001, le=3_600_000,
                                        description="Most frequent journal snapshot of a trade "
                                        "whose stop only moved (trailing / break-even).")

    @field_validator("url")
    @classmethod
    def _driver(cls, v: str) -> str:
        """URLs as users write them (``postgres://``, ``postgresql://``) use the psycopg 3 driver tickguard ships;
        another scheme is refused here, by name, rather than deep in SQLAlchemy."""
        v = v.strip()
        if not v:
            return v
        scheme, sep, rest = v.partition("://")
        if not sep:
            raise ValueError(f"{v!r} is not a database URL (expected postgresql://user@host/db)")
        if scheme in ("postgres", "postgresql", "postgresql+psycopg"):
            if not rest.strip("/ "):
                raise ValueError(f"{v!r} names no database server (expected postgresql://user@host/db)")
            return f"postgresql+psycopg://{rest}"
        raise ValueError(f"database URL scheme {scheme!r} is not supported: use postgresql://user@host/db "
                         "(PostgreSQL), or [journal] path for SQLite")

    @property
    def target(self) -> str:
        return self.url or self.path


    def shown(self) -> dict[str, Any]:
        """The section as ``tickguard config`` prints it: a database password is never shown."""
        data = self.model_dump()
        data["url"] = mask_secrets(self.url)
        return data


def journal_target(value: str) -> str:
    """A ``--journal FILE|URL`` as the journal opens it: a URL goes through [journal] url's checks (``postgres://``
    accepted, another scheme refused by name), a file name is kept."""
    if not value.strip():
        raise ConfigError("--journal needs a file name or a database URL")
    if "://" not in value:
        return value
    try:
        return JournalConfig(url=value).url
    except ValidationError as exc:
        raise ConfigError(f"--journal {mask_secrets(value)!r}: {exc.errors()[0]['msg'].removeprefix('Value error, ')}"
                          ) from exc


# user:password@ in any URL, and password=... in a key/value DSN
SECRETS = ((re.compile(r"(\b[a-zA-Z][\w+.-]*://[^:/@\s]+:)[^@\s]+@"), r"\1***@"),
           (re.compile(r"(\bpassword\s*=\s*)[^\s&;,'\"]+", re.IGNORECASE), r"\1***"))


def mask_secrets(text: str) -> str:
    """``text`` with every password replaced by ``***`` (``postgresql+psycopg://user:***@host/db``): for
    ``tickguard config``, error messages and every log record."""
    for pattern, replacement in SECRETS:
        text = pattern.sub(replacement, text)
    return text


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _level(value: str) -> str:
    level = value.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"log level {value!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


class LogConfig(_Section):
    level: str = Field("INFO", description="Level of tickguard's log: DEBUG, INFO (every event), WARNING, ERROR.")
    format: str = Field("text", pattern="^(text|json)$", description="text: one line per event, for people; json: "
                        "one JSON object per line, for machines (also --log-format).")
    file: str = Field("", description="File the log is appended to; empty = standard error.  The tables and the "
                      "live view are on standard output, apart from the log.")
    components: dict[str, str] = Field(default_factory=dict, description="Level per component, e.g. "
                                       "{\"adapters.ib\" = \"DEBUG\", \"ib_async\" = \"INFO\"}: a module path "
                                       "under tickguard (runtime.order_executor, store.journal, ...) or ib_async.")

    @field_validator("level")
    @classmethod
    def _known_level(cls, v: str) -> str:
        return _level(v)

    @field_validator("components")
    @classmethod
    def _known_levels(cls, v: dict[str, str]) -> dict[str, str]:
        return {name.strip(): _level(level) for name, level in v.items()}


class ThrottleConfig(_Section):
    rate: int = Field(45, ge=1, le=100_000, description="Messages per second to the broker, every kind counted "
                      "(orders, cancels, what-ifs, data requests); IB allows about 50.")
    burst: int = Field(10, ge=1, le=100_000, description="Most messages sent back to back (at most rate); the "
                       "rest go evenly spaced, so a gateway that reads late still never counts two bursts in a "
                       "second.")
    window_margin_s: float = Field(0.1, ge=0, le=10, description="The budget counts rate messages per 1 s plus "
                                   "this: the gateway stamps messages when it reads them, and a late read packs "
                                   "messages sent over a little more than a second into one of its seconds.")
    entry_queue_max: int = Field(500, ge=1, le=1_000_000, description="Entries waiting for the budget beyond "
                                 "this are refused with the reason (exits are never refused).")
    entry_wait_max_s: float = Field(30.0, ge=0.001, le=86_400, description="An entry that waited this long for "
                                    "the budget is refused with the reason.")
    what_if_queue_max: int = Field(200, ge=1, le=1_000_000, description="What-if requests waiting beyond this "
                                   "are refused.")
    what_if_wait_max_s: float = Field(10.0, ge=0.001, le=86_400, description="Longest wait of a what-if request.")
    data_queue_max: int = Field(1000, ge=1, le=1_000_000, description="Data requests (quotes, bars, contracts, "
                                "the order book) waiting beyond this are refused.")
    data_wait_max_s: float = Field(60.0, ge=0.001, le=86_400, description="Longest wait of a data request.")

    breaker_rejections: int = Field(5, ge=1, le=10_000, description="This many orders of one account refused "
                                    "for the same reason within breaker_window_s pause its new entries (exits "
                                    "still go).")
    breaker_window_s: float = Field(60.0, ge=0.001, le=86_400, description="Window of the entry breaker.")
    breaker_cool_down_s: float = Field(300.0, ge=0.001, le=86_400, description="How long a tripped account's new "
                                       "entries stay paused.")

    efficiency_max: float = Field(20.0, ge=1, le=1e6, description="Bound of an account's wasted messages "
                                  "(orders ended unfilled, and cancels) per execution in the day, IB's "
                                  "order-efficiency guideline being 20: above it, the account's new entries are "
                                  "refused until executions bring it down.")
    efficiency_min_orders: int = Field(20, ge=1, le=1_000_000, description="Orders and cancels of the day below "
                                       "which the ratio is not applied.")

    @model_validator(mode="after")
    def _burst_within_rate(self) -> ThrottleConfig:
        if self.burst > self.rate:
            raise ValueError(f"throttle.burst {self.burst} is above throttle.rate {self.rate}")
        return self

    def breaker(self) -> BreakerLimits:
        return BreakerLimits(self.breaker_rejections, int(self.breaker_window_s * 1e9),
                             int(self.breaker_cool_down_s * 1e9))

    def limits(self) -> ThrottleLimits:
        return ThrottleLimits(
            rate=self.rate, burst=self.burst, window_ns=int((1 + self.window_margin_s) * 1e9),
            queue_max={Lane.ENTRY: self.entry_queue_max, Lane.WHAT_IF: self.what_if_queue_max,
                       Lane.DATA: self.data_queue_max},
            wait_max_ns={Lane.ENTRY: int(self.entry_wait_max_s * 1e9), Lane.WHAT_IF: int(self.what_if_wait_max_s * 1e9),
                         Lane.DATA: int(self.data_wait_max_s * 1e9)})


class WatchdogConfig(_Section):
    stale_tick_s: float = Field(10.0, ge=0.001, le=86_400,
                                description="A symbol with a live trade (open or exiting) and no valid "
                                "tick this long in its regular session is resubscribed; still silent after as "
                                "long again, its trades are reported blind (ERROR, journaled).")
    enabled: bool = Field(True, description="Watch live trades' symbols for silent market data.")


class ShadowConfig(_Section):
    enabled: bool = Field(True, description="Ask the broker's what-if, ahead of time, about the exit each open "
                          "trade's stop would send: a refusal (margin, a precautionary limit) is an ERROR before the "
                          "stop fires.")
    interval_s: float = Field(300.0, ge=1, le=86_400, description="Each open trade's exit is checked at least this "
                              "often.")
    max_in_flight: int = Field(4, ge=1, le=100, description="Most what-if checks awaiting an answer at once.")
    max_per_s: float = Field(10.0, gt=0, le=1_000, description="Most what-if checks started per second: a first look "
                             "at N open trades takes N / max_per_s seconds, and the checks never crowd the tick path "
                             "or the message budget (IB's ~50/s), however fast the gateway answers.")
    scan_s: float = Field(2.0, ge=0.1, le=3_600, description="How often new trades and changed exits are looked for.")
    min_gap_s: float = Field(30.0, ge=0, le=86_400, description="Shortest time between two checks of one trade whose "
                             "exit changed (a trailing stop moves on every new high) or whose check got no answer.")
    timeout_s: float = Field(30.0, gt=0, le=3_600, description="A check with no answer this long is an error "
                             "verdict.")


class MetricsConfig(_Section):
    enabled: bool = Field(True, description="Serve Prometheus metrics over HTTP (GET /metrics) while the engine "
                          "runs (tickguard run and tickguard sim).")
    address: str = Field("127.0.0.1:9464", description="host:port the metrics are served on; port 0 = any free "
                         "port (logged). An address in use is logged as an error; trading goes on without metrics.")
    max_symbol_labels: int = Field(200, ge=0, le=100_000, description="At most this many symbols get a last-tick "
                                   "age series (the stalest first): label values stay bounded.")
    loop_lag_interval_s: float = Field(0.1, ge=0.001, le=60, description="How often the event-loop lag is "
                                       "sampled.")

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        host, sep, port = v.strip().rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{v!r} is not host:port (e.g. 127.0.0.1:9464, or 0.0.0.0:9464 to serve every "
                             "interface)")
        return f"{host or '127.0.0.1'}:{int(port)}"

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.address.rpartition(":")
        return host.strip("[]"), int(port)


class IBConfig(_Section):
    host: str = Field("127.0.0.1", description="TWS / IB Gateway host.")
    port: int = Field(4002, ge=1, le=65535, description="API port: 7497/7496 TWS paper/live, 4002/4001 Gateway.")
    client_id: int = Field(17, ge=0, le=2_147_483_647,
                           description="API client id; must be unique among connected clients.")
    account: str = Field("", description="Account to trade; empty = the only managed account.")
    connect_timeout_s: float = Field(10.0, gt=0, le=3600,
                                     description="Timeout of the connection and its start-up sync.")
    connect_attempts: int = Field(5, ge=1, le=1000, description="Attempts of the first connection (backoff between).")
    request_timeout_s: float = Field(10.0, gt=0, le=3600,
                                     description="Timeout of one request (contract, bars, what-if).")
    reconnect_initial_s: float = Field(1.0, ge=0.001, le=3600,
                                       description="First reconnect delay; doubles per failure.")
    reconnect_max_s: float = Field(60.0, ge=0.001, le=86_400, description="Cap of the reconnect delay.")
    reconnect_jitter: float = Field(0.2, ge=0, le=1, description="Random +/- share added to each delay.")
    exchange: str = Field("SMART", description="Exchange of the stock contracts.")
    currency: str = Field("USD", description="Currency of the stock contracts.")
    contract_ttl_s: float = Field(86_400.0, ge=0.001, le=1e8, description="TTL of cached contract details.")
    volatility_ttl_s: float = Field(3_600.0, ge=0.001, le=1e8, description="TTL of cached daily volatility.")
    cache_max_stale_s: float = Field(900.0, ge=0, le=1e8, description="How long a stale entry may be served while "
                                     "its refresh fails.")
    qualify_attempts: int = Field(3, ge=1, le=100, description="Attempts to qualify a symbol at start.")
    history_pacing_wait_s: float = Field(16.0, ge=0, le=600, description="How long a daily-bars request IB refused "
                                         "with 162 (the same request within 15 s, e.g. a restart) is asked "
                                         "again, every quarter of it, before the symbol goes without.")
    stale_feed_s: float = Field(30.0, ge=0.001, le=86_400,
                                description="A subscription silent this long after a recovery "
                                "message (1102, 2104) is renewed.")
    symbols: list[str] = Field(default_factory=list, description="Symbols to watch besides the trades'.")
    first_quote_timeout_s: float = Field(10.0, gt=0, le=3600, description="At start, how long to wait for every "
                                         "symbol's first quote before opening the config's trades.")


class Settings(BaseSettings):
    """The whole configuration.  ``trades`` lists trades to open (instead of the demo trades)."""

    model_config = SettingsConfigDict(
        env_prefix="TICKGUARD_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    engine: EngineConfig = EngineConfig()
    volatility: VolatilityConfig = VolatilityConfig()
    sim: SimConfig = SimConfig()
    ib: IBConfig = IBConfig()
    watchdog: WatchdogConfig = WatchdogConfig()
    journal: JournalConfig = JournalConfig()
    log: LogConfig = LogConfig()
    throttle: ThrottleConfig = ThrottleConfig()
    metrics: MetricsConfig = MetricsConfig()
    shadow: ShadowConfig = ShadowConfig()
    trades: list[TradeRequest] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings)


def format_errors(exc: ValidationError, where: str) -> str:
    lines = [f"invalid config ({where}):"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        lines.append(f"  {loc}: {err['msg']}" + (f" (got {err['input']!r})" if err["type"] != "missing"
                                                  and not isinstance(err["input"], dict) else ""))
    return "\n".join(lines)


def load(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Defaults, then the TOML file, then ``TICKGUARD_*`` environment variables, then ``overrides``."""
    where = "defaults and environment"
    if path is not None:
        where = f"{path} and environment"
        if not str(path).strip():
            raise ConfigError("--config needs a file name (a TOML config)")
        try:
            tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except IsADirectoryError as exc:
            raise ConfigError(f"config file {path} is a directory, not a TOML file") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {path} is not text (UTF-8): is it the right file?") from exc
        except OSError as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=path)

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
            if path is not None:
                sources += (TomlConfigSettingsSource(settings_cls),)
            return sources

    try:
        return _FromFile(**(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, where)) from exc
    except SettingsError as exc:  # an environment variable that is not what its field takes (JSON for a section)
        field = re.search(r'field "(\w+)"', str(exc))
        prefix = f"TICKGUARD_{field.group(1)}".upper() if field else "TICKGUARD_"
        named = sorted(k for k in os.environ if k.upper() == prefix or k.upper().startswith(prefix + "__"))
        variable = " or ".join(named) or "a TICKGUARD_ variable"
        cause = f" ({exc.__cause__})" if exc.__cause__ else ""
        raise ConfigError(f"invalid config ({where}): {variable} cannot be read{cause} - a variable for a section or a "
                          "list takes JSON "
                          "(TICKGUARD_IB__SYMBOLS='[\"AAPL\", \"MSFT\"]', TICKGUARD_SIM='{\"seed\": 3}')") from exc


def reference_markdown() -> str:
    """The config reference table for the README, generated from the models so it cannot drift."""
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name}.")
                continue
            default = field.get_default(call_default_factory=True)
            if isinstance(default, dt.datetime):
                default = default.isoformat()
            elif hasattr(default, "value"):
                default = default.value
            rows.append(f"| `{prefix}{name}` | `{default}` | {field.description or ''} |")

    walk(EngineConfig, "engine.")
    walk(VolatilityConfig, "volatility.")
    walk(SimConfig, "sim.")
    walk(IBConfig, "ib.")
    walk(WatchdogConfig, "watchdog.")
    walk(JournalConfig, "journal.")
    walk(LogConfig, "log.")
    walk(ThrottleConfig, "throttle.")
    walk(MetricsConfig, "metrics.")
    walk(ShadowConfig, "shadow.")
    return "\n".join(rows)
