"""How a command stops: on Ctrl-C / SIGTERM, cleanly, so that it can still say what ran and what is left.

Shared by ``tickguard sim`` (summary and report of the part that ran) and ``tickguard run`` (the trades left
unguarded).  ``kill -USR1`` prints what every task is waiting on, without stopping anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable
from typing import TextIO


async def run_until_stopped(work: Awaitable[None]) -> bool:
    """Run ``work`` until it ends or the process is asked to stop (Ctrl-C, SIGTERM); returns whether it was
    stopped.  Why not let KeyboardInterrupt fly: a stop must still close the broker and the journal cleanly,
    and the caller must still say what ran (the sim's summary and report) and what is left unguarded (run)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig, handler in ((signal.SIGINT, stop.set), (signal.SIGTERM, stop.set), (signal.SIGUSR1, dump_tasks)):
        with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
            loop.add_signal_handler(sig, handler)
            installed.append(sig)
    runner = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        # Cancel until done, not once: on Python 3.11 ``asyncio.wait_for`` swallows a cancellation that races
        # its inner future's completion (CPython gh-86296), and a run loop built on it would go on for ever -
        # an engine that ignores SIGTERM.  Seen twice in the crash-point tests under load.
        while not (runner.done() and stopper.done()):
            for task in (runner, stopper):
                if not task.done():
                    task.cancel()
            await asyncio.wait({runner, stopper}, timeout=0.2)
        for sig in installed:
            loop.remove_signal_handler(sig)
    if runner.done() and not runner.cancelled() and runner.exception() is not None:
        raise runner.exception()  # type: ignore[misc]
    return stop.is_set()


def dump_tasks(out: TextIO | None = None) -> None:
    """What every task of the engine's loop is waiting on, to stderr (``kill -USR1 <pid>``): for an engine that
    seems stuck, the one look inside that needs no restart."""
    stream = out or sys.stderr
    tasks = asyncio.all_tasks()
    print(f"--- {len(tasks)} asyncio task(s) ---", file=stream, flush=True)
    for task in tasks:
        print(f"{task.get_name()}: {task.get_coro()!r}", file=stream)
        task.print_stack(limit=12, file=stream)
    stream.flush()
