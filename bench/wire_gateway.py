"""The wire-to-wire benchmark's gateway: tickguard's fake IB Gateway with a quote stream driven by the benchmark.

Run by ``bench/wire_to_wire.py`` in a process of its own (never in the engine's event loop)::

    python bench/wire_gateway.py --plan plan.json --out result.json

It reuses ``ibfake`` whole - handshake, start-up sync, contract details, daily bars, order handling (market
entries are filled by the simulated exchange) - and changes only two things, by subclassing:

* the simulated market's own price paths are silenced (``venue.stalled``); every quote the client sees comes
  from the plan, and the simulated exchange fills orders at those quotes;
* ``placeOrder`` is time-stamped with ``time.perf_counter_ns()`` the moment it is decoded, before it is handled.

Protocol with the parent (line based): the gateway prints ``LISTENING <port>`` when it accepts connections, then
waits for ``GO`` on stdin (the parent sends it once the client is ready: entries filled and journaled, or the
floor client subscribed); it then streams each rate phase of the plan, waits for each phase's exits (or a
deadline), writes ``--out`` (JSON) and prints ``DONE``.  Stream messages are single ``tickPrice`` wire messages
(``1,6,reqId,tickType,price,size,attrMask``), bid or ask of one symbol, each its own socket write; a *crossing*
is a bid message that takes one symbol's bid exactly onto the highest stop level not yet crossed (a touch
fires), so each crossing fires exactly one known stop.  ``perf_counter_ns`` is CLOCK_MONOTONIC on Linux: the
parent's samples share the clock.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ibfake import outgoing as out
from ibfake.clock import PacingLimits
from ibfake.server import FakeGateway
from ibfake.session import ClientSession
from ibfake.wire import encode_message
from tickguard.adapters.sim.market import MarketParams, SymbolSpec
from tickguard.adapters.sim.venue import Quote

CENTS = 100
BASE_PRICE_CENTS = 100_00  # the symbols' price: history, first quote, entries around 100.00
TOP_STOP_CENTS = 99_00  # trade j of a symbol has its stop at 99.00 - 0.01 j
BID_RANGE = (99_50, 99_80)  # background bids: above every stop
ASK_RANGE = (99_81, 100_10)  # background asks: above every background bid (no crossed quote)
BID, ASK = 1, 2  # IB tick types


# ------------------------------------------------------------------------------------------------ the plan


def build_plan(symbols: int, trades: int, crossings: int, rates: list[int], seed: int = 1,
               max_messages: int = 400_000) -> dict[str, Any]:
    """Symbols, each symbol's stop levels (cents, highest first) and each rate phase's crossings.

    ``rates``: messages per second, 0 = as fast as the gateway can write.  Crossings are spread evenly through
    each phase, about 20 a second at a set rate (``spacing`` messages apart), round-robin over the symbols; the
    k-th crossing of a symbol (over all phases) takes its bid onto its k-th stop."""
    names = [f"W{i:03d}" for i in range(symbols)]
    per_symbol = [trades // symbols + (1 if i < trades % symbols else 0) for i in range(symbols)]
    levels = {n: [TOP_STOP_CENTS - j for j in range(per_symbol[i])] for i, n in enumerate(names)}
    phases = []
    for rate in rates:
        spacing = max(10, rate // 20) if rate else max(10, min(2000, max_messages // max(crossings, 1)))
        phases.append({"rate": rate, "crossings": crossings, "spacing": spacing})
    used = [0] * symbols
    for _ in rates:
        for c in range(crossings):
            used[c % symbols] += 1
    for i, n in enumerate(names):
        if used[i] > len(levels[n]):
            raise SystemExit(f"{crossings} crossings per rate x {len(rates)} rates need {used[i]} trades on {n}, "
                             f"it has {len(levels[n])}: give more --trades")
    return {"symbols": names, "levels": levels, "phases": phases, "seed": seed, "trades": trades}


@dataclass(slots=True)
class Msg:
    symbol: str
    tick_type: int
    cents: int
    crossing: int  # index of the crossing in the whole run, -1 for a background message


def phase_messages(plan: dict[str, Any], phase_idx: int, next_level: dict[str, int]) -> list[Msg]:
    """The messages of one phase; ``next_level`` (symbol -> index of its next stop) is advanced."""
    names = plan["symbols"]
    phase = plan["phases"][phase_idx]
    rng = random.Random(plan["seed"] * 1000 + phase_idx)
    spacing, crossings = phase["spacing"], phase["crossings"]
    first = sum(p["crossings"] for p in plan["phases"][:phase_idx])
    msgs: list[Msg] = []
    counter = 0
    for c in range(crossings + 1):
        for _ in range(spacing if c < crossings else spacing // 2 + 5):
            sym = names[counter % len(names)]
            kind = BID if (counter // len(names)) % 2 == 0 else ASK
            lo, hi = BID_RANGE if kind == BID else ASK_RANGE
            msgs.append(Msg(sym, kind, rng.randint(lo, hi), -1))
            counter += 1
        if c < crossings:
            sym = names[c % len(names)]
            level = plan["levels"][sym][next_level[sym]]
            next_level[sym] += 1
            msgs.append(Msg(sym, BID, level, first + c))
    return msgs


# ------------------------------------------------------------------------------------------------ the gateway


@dataclass(slots=True)
class Crossing:
    idx: int
    phase: int
    symbol: str
    level_cents: int
    sent_ns: int = 0
    write_backlog: int = 0  # bytes in the transport's buffer right after the write (0: it went to the kernel)
    exit_ns: int | None = None
    exit_ref: str = ""
    exits: int = 0  # exits matched to it (must be 1)


@dataclass(slots=True)
class Placed:
    ts_ns: int
    symbol: str
    action: str
    ref: str
    order_type: str
    qty: float


@dataclass
class Recorder:
    placed: list[Placed] = field(default_factory=list)
    pending: dict[str, list[Crossing]] = field(default_factory=dict)  # symbol -> crossings waiting for an exit
    crossings: list[Crossing] = field(default_factory=list)
    unmatched_exits: list[Placed] = field(default_factory=list)
    changed: asyncio.Event | None = None

    def on_place(self, ts_ns: int, msg: Any) -> None:
        p = Placed(ts_ns, msg.contract.symbol, msg.action, msg.order_ref, msg.order_type, msg.total_qty)
        self.placed.append(p)
        if msg.action != "SELL" or msg.what_if:
            return
        waiting = self.pending.get(p.symbol)
        if waiting:
            c = waiting.pop(0)
            c.exit_ns, c.exit_ref = ts_ns, p.ref
            c.exits += 1
            if self.changed is not None:
                self.changed.set()
        else:
            self.unmatched_exits.append(p)


class BenchSession(ClientSession):
    recorder: Recorder

    def _on_PlaceOrder(self, msg: Any) -> None:
        self.recorder.on_place(time.perf_counter_ns(), msg)
        super()._on_PlaceOrder(msg)


class BenchGateway(FakeGateway):
    def __init__(self, plan: dict[str, Any], **kwargs: Any) -> None:
        specs = [SymbolSpec(n, 200_000 + i, BASE_PRICE_CENTS / CENTS, 0.02) for i, n in enumerate(plan["symbols"])]
        quiet = MarketParams(storms_per_hour=0.0, gaps_per_hour=0.0, base_tick_rate=0.5)
        super().__init__(seed=plan["seed"], symbols=specs, market=quiet,
                         pacing=PacingLimits(max_msgs_per_s=1_000_000), **kwargs)
        self.plan = plan
        self.recorder = Recorder()
        self.venue.stalled = set(plan["symbols"])  # the market's own paths are silent: the plan is the feed
        ex = self.venue.exchange
        for i, name in enumerate(plan["symbols"]):
            bid, ask = BID_RANGE[1] / CENTS, ASK_RANGE[0] / CENTS
            self.venue.last_ticks[name] = Quote(name, bid, ask, float("nan"), 100.0, self.venue.now_ns,
                                                self.venue.now_ns, i)
            ex.on_quote(name, bid, ask, self.venue.now_ns)

    def new_session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn_id: int) -> BenchSession:
        session = BenchSession(self, reader, writer, conn_id)
        session.recorder = self.recorder
        return session

    def client(self) -> BenchSession | None:
        live = [s for s in self.sessions if s.client_id is not None and not s.closed]
        return live[0] if live else None  # type: ignore[return-value]


async def run_phase(gw: BenchGateway, session: BenchSession, phase_idx: int, msgs: list[Msg],
                    exit_timeout_s: float) -> dict[str, Any]:
    rate = gw.plan["phases"][phase_idx]["rate"]
    reqs: dict[str, list[int]] = {}
    for req_id, sym in session.mkt_subs.items():
        reqs.setdefault(sym, []).append(req_id)
    missing = [s for s in gw.plan["symbols"] if s not in reqs]
    if missing:
        raise RuntimeError(f"the client is not subscribed to {missing}")
    encoded = [b"".join(encode_message(out.tick_price(r, m.tick_type, m.cents / CENTS, 100, 1))
                        for r in reqs[m.symbol]) for m in msgs]
    crossings = {m.crossing: Crossing(m.crossing, phase_idx, m.symbol, m.cents) for m in msgs if m.crossing >= 0}
    gw.recorder.crossings.extend(crossings.values())
    ex = gw.venue.exchange
    bid = {s: BID_RANGE[1] / CENTS for s in gw.plan["symbols"]}
    ask = {s: ASK_RANGE[0] / CENTS for s in gw.plan["symbols"]}
    transport = session.writer.transport
    if not rate:
        transport.set_write_buffer_limits(high=256 * 1024)
    pending = gw.recorder.pending
    max_backlog = 0
    n = len(msgs)
    gc.collect()
    gc.disable()  # no collector pause inside the gateway while it streams (its own garbage is tiny)
    try:
        t0 = time.perf_counter_ns()
        i = 0
        while i < n:
            now = time.perf_counter_ns()
            due = min(n, (now - t0) * rate // 1_000_000_000 + 1) if rate else min(n, i + 256)
            while i < due:
                m = msgs[i]
                transport.write(encoded[i])
                if m.crossing >= 0:
                    c = crossings[m.crossing]
                    c.sent_ns = time.perf_counter_ns()
                    c.write_backlog = transport.get_write_buffer_size()
                    pending.setdefault(m.symbol, []).append(c)
                if m.tick_type == BID:
                    bid[m.symbol] = m.cents / CENTS
                else:
                    ask[m.symbol] = m.cents / CENTS
                ex.on_quote(m.symbol, bid[m.symbol], ask[m.symbol], gw.venue.now_ns)
                i += 1
            backlog = transport.get_write_buffer_size()
            max_backlog = max(max_backlog, backlog)
            if rate:
                wait_ns = t0 + i * 1_000_000_000 // rate - time.perf_counter_ns()
                await asyncio.sleep(max(0.0, wait_ns / 1e9))
            elif backlog > 256 * 1024:
                await session.writer.drain()
            else:
                await asyncio.sleep(0)
        t_end = time.perf_counter_ns()
    finally:
        gc.enable()
    deadline = time.monotonic() + exit_timeout_s
    changed = gw.recorder.changed
    assert changed is not None
    while any(c.exit_ns is None for c in crossings.values()) and time.monotonic() < deadline:
        changed.clear()
        try:
            await asyncio.wait_for(changed.wait(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            break
    await asyncio.sleep(0.3)  # an extra (duplicate) exit would arrive now
    return {"rate": rate, "messages": n, "t0_ns": t0, "t_end_ns": t_end,
            "sent_per_s": n / ((t_end - t0) / 1e9), "max_write_buffer": max_backlog,
            "crossings": len(crossings)}


async def heartbeat(gw: BenchGateway, every_s: float = 0.5) -> None:
    """One background bid per subscribed symbol every ``every_s``, until cancelled."""
    rng = random.Random(7)
    while True:
        for session in list(gw.sessions):
            if session.client_id is None:
                continue
            for req_id in list(session.mkt_subs):
                session.send(out.tick_price(req_id, BID, rng.randint(*BID_RANGE) / CENTS, 100, 1))
        await asyncio.sleep(every_s)


async def main_async(args: argparse.Namespace) -> None:
    plan = json.loads(Path(args.plan).read_text())
    gw = BenchGateway(plan, speed=1.0, port=args.port)
    gw.recorder.changed = asyncio.Event()
    await gw.start()
    print(f"LISTENING {gw.port}", flush=True)
    loop = asyncio.get_running_loop()
    beat = asyncio.create_task(heartbeat(gw))  # quotes keep coming while the client gets ready (no stale feed)
    line = await loop.run_in_executor(None, sys.stdin.readline)
    beat.cancel()
    result: dict[str, Any] = {"phases": [], "error": None}
    try:
        if line.strip() != "GO":
            raise RuntimeError(f"expected GO, got {line!r}")
        session = gw.client()
        if session is None:
            raise RuntimeError("no client connected")
        await asyncio.sleep(0.5)  # let the client's start-up traffic settle
        next_level = dict.fromkeys(plan["symbols"], 0)
        for idx in range(len(plan["phases"])):
            msgs = phase_messages(plan, idx, next_level)
            result["phases"].append(await run_phase(gw, session, idx, msgs, args.exit_timeout))
            await asyncio.sleep(args.pause)
    except Exception as exc:  # reported to the parent in the result
        result["error"] = f"{type(exc).__name__}: {exc}"
    rec = gw.recorder
    result["crossings"] = [
        {"idx": c.idx, "phase": c.phase, "symbol": c.symbol, "level": c.level_cents / CENTS, "sent_ns": c.sent_ns,
         "write_backlog": c.write_backlog, "exit_ns": c.exit_ns, "exit_ref": c.exit_ref, "exits": c.exits}
        for c in rec.crossings]
    result["unmatched_exits"] = [vars(p) if not hasattr(p, "__slots__") else
                                 {k: getattr(p, k) for k in p.__slots__} for p in rec.unmatched_exits]
    result["placed"] = [[p.ts_ns, p.symbol, p.action, p.ref, p.order_type, p.qty] for p in rec.placed]
    result["gateway_errors"] = [repr(e) for e in gw.errors]
    result["unsupported"] = list(gw.unsupported)
    tmp = Path(args.out).with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(args.out)
    print("DONE", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # QUIT or EOF: the parent has stopped the client first
    await gw.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plan", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--exit-timeout", type=float, default=10.0, help="seconds to wait for a phase's last exits")
    p.add_argument("--pause", type=float, default=1.0, help="seconds between two phases")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
