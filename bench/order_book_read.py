"""How long does a routine reconciliation pass hold the event loop to read IB's order book?

``IBBroker.order_book(full=False)`` over ib_async's state after a day of N filled entries (N orders, N executions -
put straight into ib_async's wrapper, as its decoder leaves them).  The read gives the loop a turn every
``BOOK_SLICE`` objects (adapters/ib/recovery.py); a task that does nothing but take turns measures the *hold* - the
longest stretch the loop was not its own - next to the read's total time.  Baselines in the same run: the same read
with every conversion done again (``BookReads`` emptied before each pass, as the read was before the conversions were
kept), and the same read in one piece (``sliced=False``: as every read was before it gave turns).
Run: ``python bench/order_book_read.py [--orders N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "adapters" / "ib")]

from test_book_reads import broker_with  # noqa: E402

from tickguard.adapters.ib.ib_client import IBBroker  # noqa: E402


async def timed(broker: IBBroker, passes: int, fresh: bool, sliced: bool = True) -> list[tuple[float, float]]:
    """(total ms, longest hold ms) of each pass."""
    out = []
    for _ in range(passes):
        if fresh:
            broker._book_reads.start(broker._book_reads.connection - 1)
        task = asyncio.ensure_future(broker.order_book(full=False) if sliced
                                     else broker._read_book([], True, sliced=False))
        t0 = last = time.perf_counter()
        hold = 0.0
        while not task.done():
            await asyncio.sleep(0)
            now = time.perf_counter()
            hold, last = max(hold, now - last), now
        out.append(((last - t0) * 1e3, hold * 1e3))
    return out


async def runs(broker: IBBroker, passes: int) -> dict[str, list[tuple[float, float]]]:
    await broker.order_book(full=False)  # the first pass adopts and converts everything
    gc.collect()
    gc.freeze()  # as the engine does after start-up (runtime/gc_policy.py): the orders out of the collector's sight
    out: dict[str, list[tuple[float, float]]] = {"fresh": [], "whole": [], "kept": []}
    for _ in range(3):  # interleaved, so a slow patch of the machine hits all
        out["fresh"] += await timed(broker, passes, fresh=True)
        out["whole"] += await timed(broker, passes, fresh=False, sliced=False)
        out["kept"] += await timed(broker, passes, fresh=False)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=5000)
    parser.add_argument("--passes", type=int, default=15)
    args = parser.parse_args()
    res = asyncio.run(runs(broker_with(args.orders), args.passes))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    print(f"{args.orders} filled orders and their executions; order_book(full=False), ms, median (max) of "
          f"{3 * args.passes} passes:")
    med = {k: (statistics.median(t for t, _ in v), statistics.median(h for _, h in v), max(h for _, h in v))
           for k, v in res.items()}
    for key, label in (("fresh", "every conversion again, in slices"), ("whole", "kept, in one piece (baseline)"),
                       ("kept", "kept, in slices")):
        total, hold, worst = med[key]
        print(f"  {label:34s} total {total:6.2f}   longest hold {hold:6.2f} ({worst:.2f})")
    print(f"  ratio of the longest hold, slices / one piece: {med['kept'][1] / med['whole'][1]:.3f}")


if __name__ == "__main__":
    main()
