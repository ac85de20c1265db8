"""Run the fake IB Gateway as a standalone process (``tickguard fake-gateway --port 4002 --seed N``).

Why a runner separate from :mod:`.server`: tests embed :class:`~.server.FakeGateway` in their own event
loop and drive time by hand; a developer pointing the engine (or any ib_async script) at a local port
wants a process that runs in real time until Ctrl-C and says clearly where it listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import pathlib
import signal
import sys
import threading
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
    pacing_report: pathlib.Path | None = None,
) -> None:
    """Serve until ``stop`` is set (or the task is cancelled).

    ``port=0`` picks a free port; ``on_ready`` receives the started gateway (its ``port`` is then
    the real one), which is how an embedding caller learns the port or reaches the fault API.
    ``pacing_report``: when the gateway stops (stop, cancellation, Ctrl-C), write
    :meth:`FakeGateway.pacing_report` there as JSON - the only way a test that runs the gateway in
    another process can see how fast its client talked.
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
        try:
            await gateway.close()
        finally:  # the report matters most when something went wrong
            if pacing_report is not None:
                write_pacing_report(gateway, pacing_report)


def write_pacing_report(gateway: FakeGateway, path: pathlib.Path) -> None:
    """``{"<client id>": {client_id, received, refused, violations, max_in_window, drops}}``, written to a
    temporary file and renamed, so a reader polling for ``path`` never sees half a report."""
    report = {str(cid): dataclasses.asdict(r) for cid, r in gateway.pacing_report().items()}
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    log.info("pacing report written to %s", path)


def run_forever(
    host: str = "127.0.0.1",
    port: int = 4002,
    seed: int = 0,
    symbols: int | list[str] = 5,
    speed: float = 1.0,
    *,
    pacing_report: pathlib.Path | None = None,
    **kwargs: Any,
) -> None:
    """Blocking entry point for the CLI: serve until interrupted (Ctrl-C exits cleanly).

    On Ctrl-C (SIGINT) asyncio cancels :func:`serve`, whose cleanup still closes the gateway and writes
    ``pacing_report``. Other signals (SIGTERM, SIGKILL) end the process without a report (``tickguard
    fake-gateway`` makes SIGTERM a Ctrl-C too).

    SIGINT is handled whatever this process inherited: a process started in the background by a shell script,
    or from a test runner's worker, starts with SIGINT *ignored*, and asyncio only takes over SIGINT from its
    default handler - such a gateway would ignore Ctrl-C and never stop (seen under pytest-xdist)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(host, port, seed, symbols, speed, pacing_report=pacing_report, **kwargs))
