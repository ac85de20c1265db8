"""``tickguard doctor``: would ``tickguard run`` start cleanly with this config?  Each check in plain words.

Why a command of its own: the first hour with a real account goes wrong in ways ``run`` only finds one at a time
(the API not enabled, a client id in use, an account IB does not manage, a symbol IB does not know, a journal of
the wrong kind) - and some of them only once money is at stake.  ``doctor`` connects the way ``run`` does (the same
adapter, so a client id in use is reported in a second, as ``run`` reports it), places nothing, writes nothing (the
journal is read, never created or migrated), and lists every problem at once.  Exit code 0 only when every check
passed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from decimal import Decimal

from tickguard.adapters.broker import BrokerError, BrokerOrder, UnknownSymbol
from tickguard.adapters.ib.ib_client import IBBroker
from tickguard.adapters.ib.values import account_problem
from tickguard.config import Settings
from tickguard.core.model import Action, OrderType
from tickguard.store.inspection import inspect_journal
from tickguard.store.journal import JournalError

FARM_WAIT_S = 2.0  # IB sends the farm messages (2104, 2106, 2158) just after the handshake


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


async def diagnose(settings: Settings) -> list[Check]:
    """Every check, in the order ``run`` meets them; a check that cannot be made (no connection) says why."""
    cfg = settings.ib
    checks = [await _reachable(cfg.host, cfg.port, cfg.connect_timeout_s)]
    if checks[0].ok:
        checks += await _at_ib(settings)
    checks.append(_journal(settings))
    return checks


async def _reachable(host: str, port: int, timeout_s: float) -> Check:
    name = f"reachable {host}:{port}"
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (OSError, TimeoutError) as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        return Check(name, False, f"nothing answers ({why}): start TWS or IB Gateway and log in, enable the API "
                                  "(Configure > API > Settings > Enable ActiveX and Socket Clients) and check "
                                  "[ib] host and port (TWS 7497 paper / 7496 live, Gateway 4002 / 4001)")
    writer.close()
    await writer.wait_closed()
    return Check(name, True, "a TCP connection is accepted")


async def _at_ib(settings: Settings) -> list[Check]:
    cfg = settings.ib
    # connect as run does, but without the account check: doctor reports the account as a check of its own
    broker = IBBroker(cfg.model_copy(update={"account": "", "connect_attempts": 1}))
    try:
        await broker.connect()
    except (BrokerError, OSError, TimeoutError, ConnectionError) as exc:
        return [Check("API connection", False, f"{exc} (client id {cfg.client_id}; is 127.0.0.1 among the "
                                               "trusted IPs, and 'Read-Only API' unticked?)")]
    try:
        checks = [Check("API connection", True, f"server version {broker.ib.client.serverVersion()}, "
                                                f"client id {cfg.client_id}")]
        managed = broker.ib.managedAccounts()
        problem = account_problem(cfg.account, managed)
        if not problem and not cfg.account and len(managed) != 1:
            problem = (f"[ib] account is empty and this login manages {', '.join(managed) or 'no account'}: set "
                       "[ib] account to the one to trade")
        account = cfg.account or (managed[0] if len(managed) == 1 else "")
        checks.append(Check("account", not problem, problem or f"{account} (managed: {', '.join(managed)})"))
        checks.append(await _farms(broker))
        symbols = sorted({t.symbol for t in settings.trades} | {s.upper() for s in cfg.symbols})
        if not symbols:
            checks.append(Check("symbols", True, "none configured ([ib] symbols or [[trades]]): nothing to check"))
        for symbol in symbols:
            checks += await _symbol(broker, symbol, "" if problem else account)
        return checks
    finally:
        await broker.close()


async def _farms(broker: IBBroker) -> Check:
    deadline = time.monotonic() + FARM_WAIT_S
    while not broker.farms.snapshot() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    broken = broker.farms.broken()
    line = broker.farms.describe(broker.now_ns())
    return Check("market-data farms", not broken, line + (" - quotes of those farms will not come" if broken else ""))


async def _symbol(broker: IBBroker, symbol: str, account: str) -> list[Check]:
    try:
        details = await broker.contract_cache.get(symbol)
    except UnknownSymbol as exc:
        return [Check(f"symbol {symbol}", False, f"{exc}: check the symbol, or [ib] exchange / currency")]
    except (BrokerError, TimeoutError, ConnectionError) as exc:
        return [Check(f"symbol {symbol}", False, f"not qualified: {exc or type(exc).__name__}")]
    contract = details.contract
    assert contract is not None
    hours = next_session(details.liquidHours or details.tradingHours or "")
    checks = [Check(f"symbol {symbol}", True,
                    f"conId {contract.conId}, {contract.exchange}/{contract.currency}, min tick "
                    f"{Decimal(str(details.minTick or 0))}, next session {hours} {details.timeZoneId or ''}".rstrip())]
    if not account:
        return [*checks, Check(f"what-if {symbol}", False, "not asked: no account to ask it for")]
    try:
        answer = await broker.what_if(BrokerOrder(ref="tg:doctor", account=account, symbol=symbol,
                                                  action=Action.BUY, qty=Decimal(1), order_type=OrderType.MARKET))
    except (BrokerError, TimeoutError, ConnectionError) as exc:
        return [*checks, Check(f"what-if {symbol}", False, f"no answer: {exc or type(exc).__name__}")]
    detail = (f"a 1-share buy would be accepted (initial margin change {answer.init_margin_change:g})"
              if answer.accepted else f"a 1-share buy would be REFUSED: {answer.warning or 'no reason given'}")
    return [*checks, Check(f"what-if {symbol}", answer.accepted, detail)]


def next_session(hours: str) -> str:
    """The first open session of IB's ``tradingHours`` / ``liquidHours``: ``20261130:0930-20261130:1600;...``
    (or the pre-970 ``20261130:0930-1600``) as ``2026-11-30 09:30-16:00``."""
    for part in filter(None, hours.split(";")):
        day, _, span = part.partition(":")
        if span.startswith("CLOSED") or "-" not in span:
            continue
        start, end = span.split(",")[0].split("-")[:2]
        end = end.rpartition(":")[2]
        return f"{day[:4]}-{day[4:6]}-{day[6:8]} {start[:2]}:{start[2:4]}-{end[:2]}:{end[2:4]}"
    return "unknown (IB gave no open session)"


def _journal(settings: Settings) -> Check:
    target = settings.journal.target
    if not target:
        return Check("journal", False, "none configured: run refuses to start without one - set [journal] path = "
                                       "\"tickguard.db\" or url = \"postgresql://...\"")
    try:
        state = inspect_journal(target)
    except JournalError as exc:
        return Check("journal", False, str(exc))
    if not state.exists:
        return Check("journal", True, f"{state.where} does not exist yet: run will create it (schema {state.head})")
    if not state.known:
        return Check("journal", False, f"{state.where} has schema {state.revision}, newer than this tickguard "
                                       f"({state.head}): upgrade tickguard")
    if state.kind == "simulated":
        return Check("journal", False, f"{state.where} holds simulated trades (tickguard sim): run refuses it - "
                                       "give run a journal of its own")
    schema = (f"schema {state.revision}" if state.current or state.revision is None
              else f"schema {state.revision}, migrated to {state.head} when run opens it (back it up first)")
    return Check("journal", True, f"{state.where}: {schema}, {state.open_trades} open trade(s)")
