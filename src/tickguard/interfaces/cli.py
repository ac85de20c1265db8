"""The ``tickguard`` command line."""

from __future__ import annotations

import asyncio
import json
import math
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from tickguard import config as config_mod
from tickguard.interfaces import report as report_mod
from tickguard.store.journal import JournalError

# rich_markup_mode=None: help texts name config sections such as [ib] and [journal], which rich markup would eat
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="tickguard: dynamic contingent exits for IB.")


def _fail(message: str) -> None:
    """One clear line on stderr and exit code 2; the message is printed as written (``[journal]`` is not markup)
    and not wrapped, so it can be read and grepped whole; a password in it (a database URL) is masked."""
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(config_mod.mask_secrets(message))}")
    raise typer.Exit(2)


LogFormat = Annotated[str | None, typer.Option(
    metavar="text|json", help="Log as text (people) or json (one object per line, machines); default [log] format.")]
LogLevel = Annotated[list[str] | None, typer.Option(
    metavar="[COMPONENT=]LEVEL", help="Log level (DEBUG, INFO, WARNING, ERROR), or COMPONENT=LEVEL for one "
    "component (adapters.ib=DEBUG, ib_async=INFO); repeatable.")]


def _logs(settings: config_mod.Settings, fmt: str | None, levels: list[str] | None) -> None:
    from tickguard.interfaces.logs import LogSetupError, setup

    try:
        setup(settings.log, fmt, levels or ())
    except LogSetupError as exc:
        _fail(str(exc))


def _number(option: str, value: float | None, low: float, high: float, low_open: bool = False) -> None:
    """A number option must be finite and within bounds (typer lets nan and inf through its own checks)."""
    if value is None:
        return
    if math.isnan(value) or not (low < value if low_open else low <= value) or value > high:
        _fail(f"{option} {value:g} is out of range: it takes a number {'>' if low_open else '>='} {low:g} and "
              f"<= {high:g}")


def _writable(option: str, name: str) -> None:
    """Checked before a run, not after it: a report that cannot be written would lose the whole run's result."""
    if not name.strip():
        _fail(f"{option} is empty: give a file name")
    path = Path(name)
    if path.is_dir():
        _fail(f"{option} {path} is a directory; give a file name")
    if not path.parent.is_dir():
        _fail(f"{option} {path}: directory {path.parent} does not exist")
    existed = path.exists()
    try:
        with path.open("a"):
            pass
    except OSError as exc:
        _fail(f"{option} {path} cannot be written: {exc.strerror or exc}")
    if not existed:
        path.unlink(missing_ok=True)


def _settings(config: str | None, overrides: dict[str, Any]) -> config_mod.Settings:
    """File names are taken as ``str`` (typer turns an empty ``Path`` into ".", so ``-c ''`` read as the current
    directory); an empty one is named as such."""
    if config is not None and not config.strip():
        _fail("--config is empty: give the TOML config file")
    try:
        return config_mod.load(Path(config) if config is not None else None, overrides)
    except config_mod.ConfigError as exc:
        _fail(str(exc))
        raise  # unreachable


def _terminal(live: bool | None) -> tuple[Console, Callable[[Any], Awaitable[None]] | None]:
    """The console (wide when piped) and, when the view is live, the task that redraws it."""
    from tickguard.interfaces import live_view

    show_live = sys.stdout.isatty() if live is None else live
    console = Console() if sys.stdout.isatty() else Console(width=160)

    async def watcher(engine: Any) -> None:
        await live_view.watch(engine, console)

    return console, watcher if show_live else None


@app.command()
def sim(
    seed: Annotated[int | None, typer.Option(help="Seed of the simulated market and demo trades.")] = None,
    duration: Annotated[float | None, typer.Option(help="Virtual seconds to simulate.")] = None,
    speed: Annotated[float | None, typer.Option(help="Virtual seconds per wall second; 0 = max.")] = None,
    symbols: Annotated[int | None, typer.Option(help="Number of simulated symbols.")] = None,
    trades: Annotated[int | None, typer.Option(help="Demo trades (unless the config lists trades).")] = None,
    config: Annotated[str | None, typer.Option("--config", "-c", metavar="FILE", help="TOML config file.")] = None,
    report: Annotated[str | None, typer.Option(metavar="FILE", help="Write trades, orders, fills and exits as "
                                               "JSON.")] = None,
    include_ticks: Annotated[bool, typer.Option(help="Put every received tick in the report (for replay).")] = False,
    journal: Annotated[str | None, typer.Option(metavar="FILE", help="SQLite journal file (default: none in the "
                                                "sim).")] = None,
    live: Annotated[bool | None, typer.Option(help="Live terminal view (default: when on a terminal).")] = None,
    log_format: LogFormat = None,
    log_level: LogLevel = None,
) -> None:
    """Run the engine on the built-in simulated market, with demo trades or the config's trades."""
    from tickguard.interfaces import live_view
    from tickguard.interfaces.market_time import fmt_ns
    from tickguard.interfaces.simulation import run_session

    given = {"seed": seed, "duration_s": duration, "speed": speed, "symbols": symbols, "trades": trades}
    overrides: dict[str, Any] = {"sim": {k: v for k, v in given.items() if v is not None}}
    if journal is not None:
        if not journal.strip() or Path(journal).is_dir():
            _fail(f"--journal {journal!r} is not a file name: give the SQLite journal file to use")
        overrides["journal"] = {"path": journal}
    settings = _settings(config, overrides)
    if report is not None:
        _writable("--report", report)
    _logs(settings, log_format, log_level)
    console, watcher = _terminal(live)
    try:
        engine, result = asyncio.run(run_session(settings, include_ticks, watcher))
    except JournalError as exc:
        _fail(str(exc))
    if watcher is None:
        console.print(live_view.trades_table(engine))
    stopped = result["meta"].get("stopped_early_ns")
    if stopped is not None:
        console.print(f"stopped early at {fmt_ns(stopped)} (virtual time): the summary and the report cover the "
                      "part that ran", markup=False)
    console.print(live_view.summary_table(result))
    if report is not None:
        try:
            report_mod.write(result, Path(report))
        except OSError as exc:
            _fail(f"--report {report} could not be written: {exc.strerror or exc}")
        console.print(f"report written to {report}")


@app.command()
def run(
    config: Annotated[str, typer.Option("--config", "-c", metavar="FILE", help="TOML config: [ib], [journal], "
                                        "[[trades]].")],
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds (default: run).")] = None,
    live: Annotated[bool | None, typer.Option(help="Live terminal view (default: when on a terminal).")] = None,
    log_format: LogFormat = None,
    log_level: LogLevel = None,
) -> None:
    """Run the engine against TWS / IB Gateway (paper or live), or tickguard's fake gateway.  Its events (start-up,
    recovery, trades opened, broker messages, the stop) are logged to standard error or [log] file; the live view
    and the final table are on standard output."""
    from tickguard.adapters.broker import BrokerError
    from tickguard.interfaces import live_view
    from tickguard.interfaces.ib_session import run_ib
    from tickguard.runtime.busy_poll import event_loop_factory

    _number("--duration", duration, 0, 366 * 86_400, low_open=True)
    settings = _settings(config, {})
    if not settings.journal.target:
        _fail(f"{config}: tickguard run needs a journal - set [journal] path = \"tickguard.db\" (SQLite) or url = "
              "\"postgresql://...\". Without one a restart forgets every open trade: its exits are no longer "
              "watched, and the same trades can be opened again")
    _logs(settings, log_format, log_level)
    console, watcher = _terminal(live)
    try:
        # the loop busy-polls its sockets while quotes come (runtime/busy_poll.py, [engine] busy_poll_us)
        factory = event_loop_factory(settings.engine.busy_poll_us)
        try:
            with asyncio.Runner(loop_factory=factory) as runner:
                engine = runner.run(run_ib(settings, duration, watcher))
        finally:
            if factory is not None:  # a factory's loop, closed, would stay the thread's current one (Runner's own
                asyncio.set_event_loop(None)  # is unset): as after asyncio.run (independent review)
    except (BrokerError, JournalError) as exc:
        _fail(str(exc))
    console.print(live_view.trades_table(engine))


@app.command()
def doctor(
    config: Annotated[str, typer.Option("--config", "-c", metavar="FILE", help="The TOML config tickguard run would "
                                        "use.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Check that tickguard run would start cleanly: TWS / IB Gateway reachable, server version, the account,
    market-data farms, each symbol (min tick, trading hours, a what-if for one share), the journal.  Places and
    writes nothing.  Exit code 0 only when every check passed."""
    from tickguard.interfaces.doctor import diagnose

    settings = _settings(config, {})
    _logs(settings, None, ["ERROR"])  # the checks say it all; the log only what breaks
    checks = asyncio.run(diagnose(settings))
    failed = [c for c in checks if not c.ok]
    if as_json:
        typer.echo(json.dumps({"ok": not failed, "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail}
                                                              for c in checks]}, indent=1))
    else:
        width = max(len(c.name) for c in checks)
        typer.echo(f"tickguard doctor: {config} - {settings.ib.host}:{settings.ib.port}, client id "
                   f"{settings.ib.client_id}")
        for c in checks:
            typer.echo(f"  {'ok  ' if c.ok else 'FAIL'}  {c.name:<{width}}  {config_mod.mask_secrets(c.detail)}")
        typer.echo(f"{len(failed)} check(s) failed: tickguard run would not start cleanly" if failed
                   else "every check passed: tickguard run would start cleanly")
    raise typer.Exit(1 if failed else 0)


@app.command("fake-gateway")
def fake_gateway(
    port: Annotated[int, typer.Option(help="TCP port to listen on (IB Gateway paper uses 4002).")] = 4002,
    seed: Annotated[int, typer.Option(help="Seed of the simulated market.")] = 0,
    symbols: Annotated[str, typer.Option(help="A number of symbols, or a comma-separated list.")] = "5",
    speed: Annotated[float, typer.Option(help="Virtual seconds per wall second.")] = 1.0,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    fill_delay: Annotated[float, typer.Option(help="Fault: orders reach the exchange this many virtual "
                                                   "seconds late.")] = 0.0,
    master_client_id: Annotated[int | None, typer.Option(help="TWS's Master API client id: that client sees every "
                                                              "client's orders and executions (others: their own).")]
    = None,
    partial_fill_prob: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="Fault: the share of orders "
                                                            "filled in two executions (default 0.15).")] = None,
    pacing_report: Annotated[str | None, typer.Option(metavar="FILE", help="At the stop (Ctrl-C, SIGTERM), write "
                                                      "each client's messages, pacing refusals and violations, and "
                                                      "the most messages in any 1 s window, as JSON.")] = None,
) -> None:
    """A fake IB Gateway speaking the TWS wire protocol over a simulated market: try the IB path
    without an account (connect TWS API clients, or `tickguard run`, to it)."""
    from ibfake.runner import run_forever

    _number("--port", port, 0, 65_535)
    _number("--seed", seed, 0, 2**63 - 1)
    _number("--speed", speed, 0, 1e6)
    _number("--fill-delay", fill_delay, 0, 3600)
    _number("--master-client-id", master_client_id, 0, 2_147_483_647)
    _number("--partial-fill-prob", partial_fill_prob, 0, 1)
    if not host.strip():
        _fail("--host is empty: give an address to listen on (127.0.0.1, or 0.0.0.0 for every interface)")
    names = _gateway_symbols(symbols)
    if pacing_report is not None:
        _writable("--pacing-report", pacing_report)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops it like Ctrl-C: the report is written
    try:
        run_forever(host=host, port=port, seed=seed, symbols=names, speed=speed, master_client_id=master_client_id,
                    partial_fill_prob=partial_fill_prob,
                    pacing_report=Path(pacing_report) if pacing_report is not None else None,
                    on_ready=(lambda gw: gw.delay_fills(fill_delay)) if fill_delay > 0 else None)
    except OSError as exc:  # the port in use, an unknown host, an address not on this machine
        _fail(f"the fake gateway cannot listen on {host}:{port}: {exc.strerror or exc}")


SYMBOL_NAME = re.compile(r"[A-Z0-9][A-Z0-9.]{0,11}")


def _gateway_symbols(text: str) -> int | list[str]:
    """``--symbols``: a count (1 to 2000) or a comma-separated list of distinct symbols."""
    text = text.strip()
    if text.isdigit():
        count = int(text)
        if not 1 <= count <= 2000:
            _fail(f"--symbols {count}: give 1 to 2000 symbols, or a comma-separated list such as AAPL,MSFT")
        return count
    names = [name.strip().upper() for name in text.split(",")]
    bad = [name for name in names if not SYMBOL_NAME.fullmatch(name)]
    if not text or bad:
        _fail(f"--symbols {text!r}: give a count (1 to 2000) or a comma-separated list of symbols such as "
              f"AAPL,MSFT{f' ({bad[0]!r} is not a symbol)' if text and bad else ''}")
    if len(set(names)) != len(names):
        _fail(f"--symbols {text!r} names a symbol twice")
    return names


@app.command()
def trades(
    journal: Annotated[str | None, typer.Option(help="Journal: SQLite file or database URL.")] = None,
    config: Annotated[str | None, typer.Option("--config", "-c", metavar="FILE", help="Take the journal from this "
                                               "config.")] = None,
    state: Annotated[str | None, typer.Option(help="Only trades in this state.")] = None,
    symbol: Annotated[str | None, typer.Option(help="Only trades of this symbol.")] = None,
    user: Annotated[str | None, typer.Option(help="Only trades of this user.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List trades with their legs, orders and events from the journal."""
    from tickguard.core.model import TradeState
    from tickguard.interfaces.journal_view import render, select

    if state is not None and state not in {s.value for s in TradeState}:
        _fail(f"--state {state!r} is not a trade state; use one of {', '.join(s.value for s in TradeState)}")
    if journal is not None:
        try:
            target = config_mod.journal_target(journal)
        except config_mod.ConfigError as exc:
            _fail(str(exc))
    else:
        target = _settings(config, {}).journal.target
    if not target:
        _fail("no journal given: use --journal FILE|URL or a --config with [journal]")
    try:
        data = select(str(target), state=state, symbol=symbol, user=user)
    except JournalError as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(data, indent=1))
    else:
        render(data, Console() if sys.stdout.isatty() else Console(width=160))


@app.command("config")
def show_config(
    config: Annotated[str | None, typer.Option("--config", "-c", metavar="FILE", help="TOML config file to check.")]
    = None,
    reference: Annotated[bool, typer.Option(help="Print the documented knobs as a markdown table.")] = False,
) -> None:
    """Check a config and print the effective settings (defaults, file and environment merged) as JSON."""
    if reference:
        typer.echo(config_mod.reference_markdown())
        return
    settings = _settings(config, {})
    data = json.loads(settings.model_dump_json())
    data["journal"] = json.loads(json.dumps(settings.journal.shown(), default=str))  # no password in clear
    typer.echo(json.dumps(data, indent=2))


def main() -> None:  # pragma: no cover - console entry point
    app()
