"""An engine on ``IBBroker`` against a started fake gateway, for the adapter's end-to-end tests.

One home for the set-up every such test needs: the ib_async ERROR-log trap (with the errors a test expects
allowed), a gateway in driven virtual time, settings with fast reconnects, the engine started and running,
first quotes waited for with a deadline - and, on the way out, everything closed and no unexpected error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fg_support import IbErrorCapture
from gateway_support import make_gateway

from ibfake.server import FakeGateway
from tickguard.adapters.ib.ib_client import IBBroker
from tickguard.config import load
from tickguard.runtime.engine import Engine
from tickguard.runtime.engine_factory import open_journal

ACCOUNT = "DU0000001"  # the fake gateway's account


@dataclass
class Running:
    gw: FakeGateway
    engine: Engine
    broker: IBBroker
    errors: IbErrorCapture
    failed: dict[str, str]


async def until(pred: Callable[[], Any], gw: FakeGateway | None = None, step: float = 0.2,
                timeout: float = 20.0) -> None:
    """Poll with a deadline, advancing the gateway's virtual time while waiting when one is given."""
    async def loop() -> None:
        while not pred():
            if gw is not None:
                await gw.advance(step)
            await asyncio.sleep(0.01)
    await asyncio.wait_for(loop(), timeout)


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for section, values in extra.items():
        out[section] = {**out.get(section, {}), **values}
    return out


@contextlib.asynccontextmanager
async def engine_on_gateway(symbols: list[str], *, client_id: int, allowed: Iterable[str] = (),
                            gateway: dict[str, Any] | None = None, settings: dict[str, Any] | None = None,
                            virtual_clock: bool = False) -> AsyncIterator[Running]:
    """``symbols`` are started (those the gateway knows get quotes before the test body runs);
    ``virtual_clock``: the adapter reads the gateway's virtual time (for tests that measure waits)."""
    with IbErrorCapture.installed() as errors:
        for text in allowed:
            errors.allow(text)
        gw = await make_gateway(**(gateway or {})).start()
        await gw.advance(2.0)
        cfg = _merged({"ib": {"port": gw.port, "client_id": client_id, "account": ACCOUNT,
                              "reconnect_initial_s": 0.05, "reconnect_max_s": 0.5, "connect_timeout_s": 5,
                              "request_timeout_s": 5}}, settings or {})
        s = load(None, cfg)
        broker = IBBroker(s.ib, clock=(lambda: gw.now_ns) if virtual_clock else None)
        engine = Engine(s, broker, journal=open_journal(s, kind="live"))  # a journal if the settings name one
        failed = await asyncio.wait_for(engine.start(symbols), 20)
        task = asyncio.create_task(engine.run_until(2**62))
        try:
            known = [sym for sym in symbols if sym not in failed]
            await until(lambda: all(engine.ticks.quote(sym) is not None for sym in known), gw)
            yield Running(gw, engine, broker, errors, failed)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await broker.close()
            await gw.close()
            if engine.journal is not None:
                engine.journal.close()
        assert errors.unexpected() == []
        assert gw.errors == []
