"""How long does a routine reconciliation pass hold the event loop to read IB's order book?

``IBBroker.order_book(full=False)`` over ib_async's state after a day of N filled entries (N orders, N executions -
put straight into ib_async's wrapper, as its decoder leaves them), read at one instant: nothing else runs while it
does.  Baseline in the same run: the same read with every conversion done again (``BookReads`` emptied before each
pass, as the read was before the conversions were kept).  Run: ``python bench/order_book_read.py [--orders N]``.
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


async def timed(broker: IBBroker, passes: int, fresh: bool) -> list[float]:
    out = []
    for _ in range(passes):
        if fresh:
            broker._book_reads.start(broker._book_reads.connection - 1)
        t0 = time.perf_counter()
        await broker.order_book(full=False)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


async def both(broker: IBBroker, passes: int) -> tuple[list[float], list[float]]:
    await broker.order_book(full=False)  # the first pass adopts and converts everything
    gc.collect()
    gc.freeze()  # as the engine does after start-up (runtime/gc_policy.py): the orders out of the collector's sight
    fresh: list[float] = []
    kept: list[float] = []
    for _ in range(3):  # interleaved, so a slow patch of the machine hits both
        fresh += await timed(broker, passes, fresh=True)
        kept += await timed(broker, passes, fresh=False)
    return fresh, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=5000)
    parser.add_argument("--passes", type=int, default=15)
    args = parser.parse_args()
    fresh, kept = asyncio.run(both(broker_with(args.orders), args.passes))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    print(f"{args.orders} filled orders and their executions; order_book(full=False), ms (median / max):")
    print(f"  every conversion again (baseline): {statistics.median(fresh):.2f} / {max(fresh):.2f}")
    print(f"  conversions kept:                  {statistics.median(kept):.2f} / {max(kept):.2f}")
    print(f"  ratio kept / baseline: {statistics.median(kept) / statistics.median(fresh):.3f}")


if __name__ == "__main__":
    main()
