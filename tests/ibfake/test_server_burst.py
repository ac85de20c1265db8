"""FakeGateway.burst: several quotes of one symbol in ONE socket write, as TWS sends them under load.

Why: with one quote per read, a client that reads only the ticker's latest bid/ask looks correct; a burst is
what shows whether it reads every quote (``ticker.ticks``).  Checked on the wire (one write, tickPrice messages
exactly as ib_async's decoder unpacks them) and through the real ib_async client (one read, every tick kept).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from gateway_support import make_gateway, qualified, session, until

from ibfake.session import ClientSession
from ibfake.wire import FrameDecoder


class RecordingWriter:
    """Stands in for a StreamWriter: records each write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        pass


def subscribed_session(gw: Any, subs: dict[int, str]) -> tuple[ClientSession, RecordingWriter]:
    writer = RecordingWriter()
    s = ClientSession(gw, asyncio.StreamReader(), writer, 1)  # type: ignore[arg-type]
    s.client_id = 1
    s.mkt_subs.update(subs)
    gw.sessions.append(s)
    return s, writer


def decode(data: bytes) -> list[list[str]]:
    return FrameDecoder().feed(data)


async def test_burst_is_one_write_of_tick_price_messages_as_ib_async_decodes_them():
    gw = make_gateway()
    await gw.advance(1.0)
    _, writer = subscribed_session(gw, {7: "AAA", 8: "BBB"})
    cur = gw.venue.last_ticks["AAA"]
    low = round(cur.bid - 2, 2)
    assert gw.burst("AAA", [(low, low + 0.02), (cur.bid, cur.ask, cur.bid)], size=300) == 1
    assert len(writer.writes) == 1  # one write for the whole burst
    messages = decode(writer.writes[0])
    for fields in messages:  # Decoder.priceSizeTick: `_, _, reqId, tickType, price, size, _ = fields`
        assert len(fields) == 7 and fields[:3] == ["1", "6", "7"] and float(fields[5]) == 300
    # the dip: bid first (it does not cross); the recovery: ask first (its bid is above the dip's ask); then last
    assert [(f[3], float(f[4])) for f in messages] == [
        ("1", low), ("2", low + 0.02), ("2", cur.ask), ("1", cur.bid), ("4", cur.bid)]
    assert [f[6] for f in messages] == ["1", "1", "1", "1", "0"]  # attrMask as _send_tick sends it


async def test_burst_reaches_only_subscribers_and_checks_its_quotes():
    gw = make_gateway()
    await gw.advance(1.0)
    _, writer = subscribed_session(gw, {8: "BBB"})
    assert gw.burst("AAA", [(10.0, 10.1)]) == 0 and writer.writes == []
    for bad in [(10.2, 10.1), (0.0, 10.1), (10.0,)]:
        with pytest.raises(ValueError):
            gw.burst("BBB", [bad])
    assert writer.writes == []


async def test_a_stalled_gateway_delivers_a_burst_in_one_piece():
    gw = make_gateway()
    await gw.advance(1.0)
    _, writer = subscribed_session(gw, {7: "AAA"})
    gw.stall()
    gw.burst("AAA", [(10.0, 10.1), (9.0, 9.1)])
    assert writer.writes == []
    gw.resume()
    assert len(writer.writes) == 1 and len(decode(writer.writes[0])) == 4


async def test_ib_async_reads_the_burst_at_once_and_keeps_every_tick_in_ticker_ticks():
    async with session() as (gw, ib, _errors):
        ticker = ib.reqMktData(await qualified(ib, "AAA"))
        await until(lambda: ticker.bid > 0 and ticker.ask > 0)
        reads: list[list[tuple[int, float]]] = []
        ib.pendingTickersEvent += lambda tickers: reads.extend(
            [(t.tickType, t.price) for t in tk.ticks] for tk in tickers if tk is ticker)
        cur = gw.venue.last_ticks["AAA"]
        dip = round(cur.bid - 1, 2)
        gw.burst("AAA", [(dip, dip + 0.02), (cur.bid, cur.ask)])
        await until(lambda: reads)
        await asyncio.sleep(0.05)  # nothing else may follow: the burst is one read
        assert reads == [[(1, dip), (2, dip + 0.02), (2, cur.ask), (1, cur.bid)]]
        assert (ticker.bid, ticker.ask) == (cur.bid, cur.ask)  # the ticker itself shows only the last quote


async def test_burst_uses_the_delayed_tick_types_of_a_delayed_subscription():
    async with session() as (gw, ib, _errors):
        ib.reqMarketDataType(3)
        ticker = ib.reqMktData(await qualified(ib, "AAA"))
        await until(lambda: ticker.marketDataType == 3 and ticker.bid > 0)
        reads: list[list[int]] = []
        ib.pendingTickersEvent += lambda tickers: reads.extend([t.tickType for t in tk.ticks] for tk in tickers)
        cur = gw.venue.last_ticks["AAA"]
        gw.burst("AAA", [(cur.bid - 0.5, cur.ask - 0.5, cur.bid - 0.5)])
        await until(lambda: reads)
        assert reads == [[66, 67, 68]]
