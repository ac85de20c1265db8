"""What a socket read of quotes costs tickguard, against ib_async alone - the streaming load under every exit.

At 10k quotes/s an engine reads its socket ~800 times a second, a dozen quotes each, and almost none of them
crosses anything.  What tickguard spends on such a read on top of ib_async's own decoding (turning the quotes
into ``Tick`` values, the engine step that scans them, its timers and commits) is CPU the exit path later waits
for: on 2 cores ``bench/wire_to_wire.py``'s tail is mostly a crossing that arrives while the engine is still busy
with an earlier read, or waits for a CPU (its ``cpu at`` line).  This bench measures that per-read cost in one
process, on one clock, alternating read by read so that the machine's drift cancels: the fake gateway
(``bench/wire_gateway.py``'s), the real engine (``IBBroker`` on ib_async, the SQLite journal, ``--trades`` open
trades whose stops the quotes never reach) and a bare ib_async client (``bench/exit_path.py``'s ``BareClient``,
the floor) share an event loop.  A read is ``--quotes`` background quotes (bids and asks in the gateway's
ranges, round-robin over the symbols) written in one piece.

Engine: from ib_async's ``Connection.data_received`` of the read to the end of the engine step that consumed its
ticks.  Floor: ``data_received`` to its end (the bare client's handler runs inside it).  Reported: mean and p50
per read, and the engine's excess over the floor in microseconds and as a ratio.

    python bench/read_cost.py [--trades 5000] [--reads 2000] [--quotes 12] [--gap 0.001]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ib_async import Stock, connection  # noqa: E402

from exit_path import BareClient, started, until  # noqa: E402
from ibfake import outgoing as out  # noqa: E402
from ibfake.wire import encode_message  # noqa: E402
from tickguard.runtime.engine import Engine  # noqa: E402
from wire_gateway import ASK, ASK_RANGE, BID, BID_RANGE, CENTS  # noqa: E402


class ReadClock:
    """Time-stamps the read being measured: its ``data_received``, and its end (``data_received`` returning, or
    the end of the engine step that follows it)."""

    def __init__(self) -> None:
        self.conn: Any = None
        self.engine = False
        self.began: int | None = None
        self.ended: int | None = None

    def watch(self, conn: Any, engine: bool) -> None:
        self.conn, self.engine, self.began, self.ended = conn, engine, None, None

    def install(self) -> None:
        received, step = connection.Connection.data_received, Engine.step
        clock = self

        def data_received(conn: Any, data: bytes) -> None:
            mine = conn is clock.conn and clock.began is None
            if mine:
                clock.began = time.perf_counter_ns()
            received(conn, data)
            if mine and not clock.engine:
                clock.ended = time.perf_counter_ns()

        def stepped(engine: Engine, events: list) -> None:
            step(engine, events)
            if clock.engine and clock.began is not None and clock.ended is None and events:
                clock.ended = time.perf_counter_ns()

        connection.Connection.data_received = data_received  # type: ignore[method-assign]
        Engine.step = stepped  # type: ignore[method-assign]


LAST: dict[tuple[int, str, int], int] = {}  # (session, symbol, bid or ask) -> the cents last written


def background(session: Any, symbols: list[str], n: int, start: int, rng: random.Random) -> bytes:
    """``n`` quotes as the wire-to-wire gateway streams them between crossings: one bid or ask each, above every
    stop, round-robin over the symbols from ``start``; each one a new price for its side (a repeated price is no
    new quote for the engine, and a read of one such quote would wake no step to time)."""
    subs: dict[str, list[int]] = {}
    for req_id, sym in session.mkt_subs.items():
        subs.setdefault(sym, []).append(req_id)
    parts = []
    for k in range(start, start + n):
        sym = symbols[k % len(symbols)]
        kind = BID if (k // len(symbols)) % 2 == 0 else ASK
        lo, hi = BID_RANGE if kind == BID else ASK_RANGE
        side = (id(session), sym, kind)
        last = LAST.get(side, hi if kind == BID else lo)  # the gateway starts each symbol at these (wire_gateway)
        cents = rng.randint(lo, hi)
        while cents == last:
            cents = rng.randint(lo, hi)
        LAST[side] = cents
        price = cents / CENTS
        parts.extend(encode_message(out.tick_price(r, kind, price, 100, 1)) for r in subs[sym])
    return b"".join(parts)


async def one_read(clock: ReadClock, conn: Any, transport: Any, data: bytes, engine: bool) -> int:
    clock.watch(conn, engine)
    transport.write(data)
    await until(lambda: clock.ended is not None,
                lambda: f"a read of {'the engine' if engine else 'the floor'} was not consumed within 10 s")
    assert clock.began is not None and clock.ended is not None
    return clock.ended - clock.began


async def run(args: argparse.Namespace) -> dict[str, list[int]]:
    args.crossings, args.burst = 1, 1  # exit_path.started's plan: one crossing's worth of levels, never used here
    plan, gw, broker, loop_task, _ = await started(args)
    contracts = {s: Stock(s, "SMART", "USD") for s in plan["symbols"]}
    floor = await BareClient.connected(gw, 99, contracts)
    await asyncio.sleep(3)  # the start-up's background work (shadow checks, first reconciliation) settles
    sessions = {s.client_id: s for s in gw.sessions if s.client_id is not None and not s.closed}
    clock = ReadClock()
    clock.install()
    rng = random.Random(7)
    symbols = plan["symbols"]
    times: dict[str, list[int]] = {"tickguard": [], "floor": []}
    for k in range(args.reads):
        start = k * args.quotes
        for name, conn, session in (("tickguard", broker.ib.client.conn, sessions[17]),
                                    ("floor", floor.ib.client.conn, sessions[99])):
            await asyncio.sleep(args.gap)
            data = background(session, symbols, args.quotes, start, rng)
            times[name].append(await one_read(clock, conn, session.writer.transport, data, name == "tickguard"))
    loop_task.cancel()
    await asyncio.gather(loop_task, return_exceptions=True)
    floor.close()
    await broker.close()
    await gw.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=5000)
    parser.add_argument("--reads", type=int, default=2000, help="reads per client")
    parser.add_argument("--quotes", type=int, default=12, help="quotes per read")
    parser.add_argument("--gap", type=float, default=0.001, help="seconds between two reads")
    args = parser.parse_args()
    logging.getLogger("tickguard").setLevel(logging.ERROR)  # the start-up's refused what-ifs (see exit_path.py)
    times = asyncio.run(run(args))
    tg, fl = times["tickguard"], times["floor"]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; {args.trades} open trades, {args.reads} reads of {args.quotes} quotes each")
    for name, v in times.items():
        print(f"  {name:<10} per read, us: mean {statistics.fmean(v) / 1e3:7.1f}  p50 {statistics.median(v) / 1e3:7.1f}"
              f"  p90 {sorted(v)[int(0.9 * (len(v) - 1))] / 1e3:7.1f}  max {max(v) / 1e3:9.1f}")
    print(f"  tickguard's own per read: mean {(statistics.fmean(tg) - statistics.fmean(fl)) / 1e3:.1f} us, "
          f"p50 {(statistics.median(tg) - statistics.median(fl)) / 1e3:.1f} us")
    print(f"  ratio tickguard / floor: mean {statistics.fmean(tg) / statistics.fmean(fl):.2f}, "
          f"p50 {statistics.median(tg) / statistics.median(fl):.2f}")


if __name__ == "__main__":
    main()
