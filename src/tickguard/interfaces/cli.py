"""The ``tickguard`` command line."""

from __future__ import annotations

import asyncio
import json
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


def _settings(config: Path | None, overrides: dict[str, Any]) -> config_mod.Settings:
    try:
        return config_mod.load(config, overrides)
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
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file.")] = None,
    report: Annotated[Path | None, typer.Option(help="Write trades, orders, fills and exits as JSON.")] = None,
    include_ticks: Annotated[bool, typer.Option(help="Put every received tick in the report (for replay).")] = False,
    journal: Annotated[Path | None, typer.Option(help="SQLite journal file (default: none in the sim).")] = None,
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
        overrides["journal"] = {"path": str(journal)}
    settings = _settings(config, overrides)
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
        report_mod.write(result, report)
        console.print(f"report written to {report}")


@app.command()
def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="TOML config: [ib], [journal], [[trades]].")],
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

    settings = _settings(config, {})
    if not settings.journal.target:
        _fail(f"{config}: tickguard run needs a journal - set [journal] path = \"tickguard.db\" (SQLite) or url = "
              "\"postgresql://...\". Without one a restart forgets every open trade: its exits are no longer "
              "watched, and the same trades can be opened again")
    _logs(settings, log_format, log_level)
    console, watcher = _terminal(live)
    try:
        engine = asyncio.run(run_ib(settings, duration, watcher))
    except (BrokerError, JournalError) as exc:
        _fail(str(exc))
    console.print(live_view.trades_table(engine))


@app.command()
def doctor(
    config: Annotated[Path, typer.Option("--config", "-c", help="The TOML config tickguard run would use.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Check that tickguard run would start cleanly: TWS / IB Gateway reachable, server version, the account,
    market-data farms, each symbol (min tick, trading hours, a what-if for one share), the journal.  Places and
    writes nothing.  Exit code 0 only when every check passed."""
    from tickguard.interfaces.doctor import diagnose
    from tickguard.interfaces.logs import setup

    settings = _settings(config, {})
    setup(settings.log.model_copy(update={"level": "ERROR"}))  # the checks say it all; the log only what breaks
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
) -> None:
    """A fake IB Gateway speaking the TWS wire protocol over a simulated market: try the IB path
    without an account (connect TWS API clients, or `tickguard run`, to it)."""
    from ibfake.runner import run_forever

    names: int | list[str] = int(symbols) if symbols.isdigit() else [s.strip().upper() for s in symbols.split(",")]
    run_forever(host=host, port=port, seed=seed, symbols=names, speed=speed, master_client_id=master_client_id,
                partial_fill_prob=partial_fill_prob,
                on_ready=(lambda gw: gw.delay_fills(fill_delay)) if fill_delay > 0 else None)


@app.command()
def trades(
    journal: Annotated[str | None, typer.Option(help="Journal: SQLite file or database URL.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Take the journal from this config.")] = None,
    state: Annotated[str | None, typer.Option(help="Only trades in this state.")] = None,
    symbol: Annotated[str | None, typer.Option(help="Only trades of this symbol.")] = None,
    user: Annotated[str | None, typer.Option(help="Only trades of this user.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List trades with their legs, orders and events from the journal."""
    from tickguard.interfaces.journal_view import render, select

    target = journal or _settings(config, {}).journal.target
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
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file to check.")] = None,
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
