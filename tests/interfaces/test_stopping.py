"""Stopping a run on a signal (interfaces/stopping.py).

Why: Python 3.11's ``asyncio.wait_for`` can swallow a cancellation that races its inner future (CPython
gh-86296), and the engine's loop is built on it; an engine cancelled once could go on for ever and ignore
SIGTERM.  The stop must cancel until the work is really over.
"""

from __future__ import annotations

import asyncio
import os
import signal

from tickguard.interfaces.stopping import run_until_stopped


async def test_a_stop_ends_work_that_swallows_the_first_cancellation():
    swallowed = []

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed.append(True)  # as asyncio.wait_for does when the cancel races its result

    asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(run_until_stopped(stubborn()), 10) is True
    assert swallowed == [True]


async def test_work_that_ends_by_itself_is_not_a_stop():
    async def quick() -> None:
        await asyncio.sleep(0)

    assert await run_until_stopped(quick()) is False


async def test_sigusr1_dumps_what_every_task_is_waiting_on(capsys):
    async def waiting_here() -> None:
        await asyncio.sleep(3600)

    async def poke() -> None:
        await asyncio.sleep(0.05)
        os.kill(os.getpid(), signal.SIGUSR1)
        await asyncio.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    poker = asyncio.ensure_future(poke())
    assert await asyncio.wait_for(run_until_stopped(waiting_here()), 10) is True
    await poker
    err = capsys.readouterr().err
    assert "asyncio task(s)" in err and "waiting_here" in err
