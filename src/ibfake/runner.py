"""Run the fake IB Gateway as a standalone process (``tickguard fake-gateway --port 4002 --seed N``).

Why a runner separate from :mod:`.server`: tests embed :class:`~.server.FakeGateway` in their own event
loop and drive time by hand; a developer pointing the engine (or any ib_async script) at a local port
wants a process that runs in real time until Ctrl-C and says clearly where it listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import sys
from collections.abc import Callable
from typing import Any, TextIO

from tickguard.adapters.sim.exchange import ExchangeParams

from .server import DEFAULT_START, FakeGateway

log = logging.getLogger(__name__)


async def serve(
    host: str = "127.0.0.1",
    port: int = 4002,
    seed: int = 0,
    symbols: int | list[str] = 5,
    speed: float = 1.0,
    *,
    accounts: list[str] | None = None,
    start: dt.datetime = DEFAULT_START,
    master_client_id: int | None = None,
    partial_fill_prob: float | None = None,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[FakeGateway], Any] | None = None,
    out: TextIO | None = None,
) -> None:
    """Serve until ``stop`` is set (or the task is cancelled).

    ``port=0`` picks a free port; ``on_ready`` receives the started gateway (its ``port`` is then
    the real one), which is how an embedding caller learns the port or reaches the fault API.
    """
    stream = out or sys.stdout
    exchange = (None if partial_fill_prob is None  # None: the gateway's own exchange parameters
                else ExchangeParams(max_msgs_per_s=1_000_000_000, partial_fill_prob=partial_fill_prob))
    gateway = FakeGateway(seed, symbols, speed=speed, host=host, port=port, accounts=accounts, start=start,
                          master_client_id=master_client_id, exchange=exchange)
    await gateway.start()
    try:
        names = ", ".join(gateway.all_symbols())
        print(
            f"tickguard fake IB gateway listening on {gateway.host}:{gateway.port} "
            f"(server version 178, seed {seed}, speed {speed}x, accounts {','.join(gateway.accounts)}, "
            f"symbols {names}; virtual time starts {gateway.now:%Y-%m-%d %H:%M %Z})",
            file=stream,
            flush=True,
        )
        if on_ready is not None:
            on_ready(gateway)
        waiter = stop or asyncio.Event()
        await waiter.wait()
    finally:
        await gateway.close()


def run_forever(
    host: str = "127.0.0.1",
    port: int = 4002,
    seed: int = 0,
    symbols: int | list[str] = 5,
    speed: float = 1.0,
    **kwargs: Any,
) -> None:
    """Blocking entry point for the CLI: serve until interrupted (Ctrl-C exits cleanly)."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(host, port, seed, symbols, speed, **kwargs))
