"""The wire-to-wire benchmark's floor: a bare ``ib_async`` client that does the least an exit engine must do.

It connects, subscribes every symbol of the plan with ``reqMktData`` and, the moment ``pendingTickersEvent``
shows a bid at or below a symbol's next stop level (every bid tick of the batch is looked at, not only the
ticker's last bid), places a market SELL for 1 share with ``orderRef = floor:<symbol>:<k>``; then that symbol
waits for its next level.  No journal, no budget, no risk ordering: what is left is ib_async's decode, its event
and ``placeOrder``.  Prints ``READY`` once every symbol has a bid.  Run by ``bench/wire_to_wire.py``::

    python bench/wire_floor_client.py --plan plan.json --port N [--client-id 99]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path

from ib_async import IB, MarketOrder, Stock

ACCOUNT = "DU0000001"


async def main_async(args: argparse.Namespace) -> None:
    plan = json.loads(Path(args.plan).read_text())
    levels: dict[str, list[float]] = {s: [c / 100 for c in v] for s, v in plan["levels"].items()}
    nxt = dict.fromkeys(levels, 0)
    ib = IB()
    await ib.connectAsync("127.0.0.1", args.port, clientId=args.client_id, timeout=20)
    contracts = {s: Stock(s, "SMART", "USD") for s in plan["symbols"]}
    await ib.qualifyContractsAsync(*contracts.values())
    by_id = {}
    for sym, contract in contracts.items():
        by_id[id(ib.reqMktData(contract, "", False, False))] = sym
    placed = 0

    def on_pending(tickers: set) -> None:
        nonlocal placed
        for t in tickers:
            sym = t.contract.symbol
            lv = levels[sym]
            for tick in t.ticks:
                k = nxt[sym]
                if tick.tickType == 1 and k < len(lv) and 0 < tick.price <= lv[k] + 1e-9:
                    nxt[sym] = k + 1
                    ib.placeOrder(contracts[sym], MarketOrder("SELL", 1, orderRef=f"floor:{sym}:{k}",
                                                              account=ACCOUNT))
                    placed += 1

    ib.pendingTickersEvent += on_pending
    while not all(t.bid > 0 for t in ib.tickers()) or len(ib.tickers()) < len(contracts):
        await asyncio.sleep(0.05)
    print("READY", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    print(f"placed {placed}", flush=True)
    ib.disconnect()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plan", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--client-id", type=int, default=99)
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
