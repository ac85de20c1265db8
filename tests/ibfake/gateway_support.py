"""Shared helpers for the fake-gateway server tests: a started gateway and a connected real ib_async client.

Why: every server test must go through the real ``ib_async.IB`` over a real socket, fail on any ERROR
the client logs (its decoder swallows exceptions), and never wait unboundedly. Time is driven
explicitly (``speed=0``) so outcomes depend only on the seed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from fg_support import IbErrorCapture
from ib_async import IB, Stock

from ibfake.server import FakeGateway
from tickguard.adapters.sim.exchange import ExchangeParams

TIMEOUT = 5.0
SYMBOLS = ["AAA", "BBB", "CCC"]


def make_gateway(**kwargs: Any) -> FakeGateway:
    params: dict[str, Any] = {
        "seed": 7,
        "symbols": SYMBOLS,
        "speed": 0.0,
        "exchange": ExchangeParams(partial_fill_prob=0.0, max_msgs_per_s=1_000_000_000),
    }
    params.update(kwargs)
    return FakeGateway(**params)


async def until(predicate: Callable[[], Any], timeout: float = TIMEOUT) -> None:
    """Poll ``predicate`` with a deadline (ib_async updates its objects from socket callbacks)."""

    async def loop() -> None:
        while not predicate():
            await asyncio.sleep(0.002)

    await asyncio.wait_for(loop(), timeout)


async def connect(gw: FakeGateway, client_id: int = 1, **kwargs: Any) -> IB:
    ib = IB()
    await asyncio.wait_for(
        ib.connectAsync("127.0.0.1", gw.port, clientId=client_id, timeout=TIMEOUT, raiseSyncErrors=True, **kwargs),
        TIMEOUT * 2,
    )
    return ib


async def advance_until(gw: FakeGateway, predicate: Callable[[], Any], step: float = 0.5, limit: float = 60.0) -> None:
    """Advance virtual time in steps until ``predicate()`` holds on the client side."""
    moved = 0.0
    while not predicate():
        if moved >= limit:
            raise AssertionError(f"condition not met after {limit}s of virtual time")
        await gw.advance(step)
        moved += step
        with contextlib.suppress(TimeoutError):
            await until(predicate, 0.05)


@contextlib.asynccontextmanager
async def session(
    client_id: int = 1, warm_up: float = 2.0, **gateway_kwargs: Any
) -> AsyncIterator[tuple[FakeGateway, IB, IbErrorCapture]]:
    """A started gateway with quotes already flowing and one connected client; checks clean logs on exit."""
    with IbErrorCapture.installed() as errors:
        gw = await make_gateway(**gateway_kwargs).start()
        ib: IB | None = None
        try:
            await gw.advance(warm_up)
            ib = await connect(gw, client_id)
            yield gw, ib, errors
        finally:
            if ib is not None:
                ib.disconnect()
            await gw.close()
        assert not gw.errors, gw.errors
        assert not errors.unexpected(), errors.unexpected()


def stock(symbol: str = "AAA") -> Stock:
    return Stock(symbol, "SMART", "USD")


async def qualified(ib: IB, symbol: str = "AAA") -> Stock:
    """A contract with its conId filled in (ib_async needs it for market data and orders)."""
    contract = stock(symbol)
    result = await asyncio.wait_for(ib.qualifyContractsAsync(contract), TIMEOUT)
    assert result == [contract]
    return contract
