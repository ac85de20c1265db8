"""Framing, field encoding, handshake and FieldReader of the fake gateway's wire layer."""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Iterator
from decimal import Decimal

import pytest
from fg_support import IbErrorCapture, ScriptedGateway
from ib_async import IB

from ibfake.wire import (
    UNSET_DOUBLE,
    FieldReader,
    FrameDecoder,
    HandshakeRequest,
    MalformedField,
    ProtocolError,
    VersionMismatch,
    encode_field,
    encode_handshake_reply,
    encode_message,
    negotiate_version,
    parse_handshake,
)


@pytest.fixture
def ib_errors() -> Iterator[IbErrorCapture]:
    with IbErrorCapture.installed() as cap:
        yield cap
        assert not cap.unexpected(), f"ib_async logged errors: {cap.unexpected()}"


def test_encode_message_exact_bytes() -> None:
    body = b"1\x00a\x00\x001\x000\x001.5\x00"
    assert encode_message([1, "a", None, True, False, 1.5]) == struct.pack(">I", len(body)) + body


def test_every_field_is_nul_terminated_including_last() -> None:
    assert encode_message([""]) == b"\x00\x00\x00\x01\x00"
    assert encode_message(["x", ""]).endswith(b"x\x00\x00")


@pytest.mark.parametrize("value", [0.1, 123.45, 1e-7, 1e16, -3.0, 0.0, 2.5e-300, 98765.4321])
def test_floats_round_trip_through_float(value: float) -> None:
    assert float(encode_field(value)) == value


def test_special_values() -> None:
    assert encode_field(UNSET_DOUBLE) == "1.7976931348623157E308"
    assert float(encode_field(UNSET_DOUBLE)) == UNSET_DOUBLE
    assert encode_field(math.inf) == "Infinity" and float("Infinity") == math.inf
    assert encode_field(Decimal("1.50")) == "1.50"
    assert encode_field(Decimal("1E+2")) == "100"
    assert encode_field(True) == "1" and encode_field(False) == "0"
    assert encode_field(2**31 - 1) == "2147483647"
    with pytest.raises(ValueError, match="NaN"):
        encode_field(math.nan)
    with pytest.raises(ValueError, match="NUL"):
        encode_field("a\0b")
    with pytest.raises(TypeError, match="list"):
        encode_field([1])  # type: ignore[arg-type]


def test_utf8_text_is_length_prefixed_in_bytes() -> None:
    msg = encode_message(["é"])
    assert struct.unpack(">I", msg[:4])[0] == 3  # 2 bytes of UTF-8 + NUL


def test_frame_decoder_byte_by_byte_and_batched() -> None:
    stream = encode_message([71, 2, 7, ""]) + encode_message([61, 1]) + encode_message(["é", "x"])
    expected = [["71", "2", "7", ""], ["61", "1"], ["é", "x"]]
    dec = FrameDecoder()
    got: list[list[str]] = []
    for i in range(len(stream)):
        got += dec.feed(stream[i : i + 1])
    assert got == expected and dec.pending == 0
    assert FrameDecoder().feed(stream) == expected
    partial = FrameDecoder()
    assert partial.feed(stream[:10]) == [] and partial.pending == 10


def test_frame_decoder_rejects_bad_frames() -> None:
    with pytest.raises(ProtocolError, match="empty message"):
        FrameDecoder().feed(b"\x00\x00\x00\x00")
    with pytest.raises(ProtocolError, match="exceeds limit"):
        FrameDecoder(max_length=10).feed(struct.pack(">I", 11))
    with pytest.raises(ProtocolError, match="does not end with NUL"):
        FrameDecoder().feed(b"\x00\x00\x00\x02ab")
    with pytest.raises(ProtocolError, match="not UTF-8"):
        FrameDecoder().feed(b"\x00\x00\x00\x02\xff\x00")


def test_parse_handshake_incremental() -> None:
    data = b"API\x00" + struct.pack(">I", 9) + b"v157..178" + encode_message([71, 2, 1, ""])
    for cut in range(13):
        assert parse_handshake(data[:cut]) is None
    parsed = parse_handshake(data)
    assert parsed is not None
    request, used = parsed
    assert request == HandshakeRequest(157, 178, "")
    assert FrameDecoder().feed(data[used:]) == [["71", "2", "1", ""]]


def test_parse_handshake_options_and_single_version() -> None:
    text = b"v100..178 +PACEAPI"
    parsed = parse_handshake(b"API\x00" + struct.pack(">I", len(text)) + text)
    assert parsed is not None and parsed[0] == HandshakeRequest(100, 178, "+PACEAPI")
    parsed = parse_handshake(b"API\x00" + struct.pack(">I", 4) + b"v176")
    assert parsed is not None and parsed[0] == HandshakeRequest(176, 176, "")


def test_parse_handshake_rejects_garbage() -> None:
    with pytest.raises(ProtocolError, match="must start with"):
        parse_handshake(b"GET / HTTP/1.1\r\n")
    with pytest.raises(ProtocolError, match="must start with"):
        parse_handshake(b"AP\x01")
    with pytest.raises(ProtocolError, match="version range"):
        parse_handshake(b"API\x00" + struct.pack(">I", 6) + b"vab..c")
    with pytest.raises(ProtocolError, match="empty"):
        parse_handshake(b"API\x00" + struct.pack(">I", 9) + b"v178..157")


def test_negotiate_version() -> None:
    assert negotiate_version(HandshakeRequest(157, 178)) == 178
    with pytest.raises(VersionMismatch, match=r"178.*v157\.\.176"):
        negotiate_version(HandshakeRequest(157, 176))
    with pytest.raises(VersionMismatch):
        negotiate_version(HandshakeRequest(179, 200))


def test_handshake_reply_is_exactly_two_fields() -> None:
    assert FrameDecoder().feed(encode_handshake_reply("20250102 12:00:00 EST")) == [
        ["178", "20250102 12:00:00 EST"]
    ]


def test_field_reader_types_and_errors() -> None:
    r = FieldReader(["3", "42", "", "1.5", "Infinite", "1", "", "x"], "demo", start=1)
    assert r.read_int("orderId") == 42
    assert r.read_opt_int("minQty") is None
    assert r.read_float("lmtPrice") == 1.5
    assert r.read_opt_float("offset") == math.inf
    assert r.read_bool("transmit") is True
    assert r.read_bool("hidden") is False
    with pytest.raises(MalformedField, match=r"demo field #7 'whatIf': expected 0 or 1, got 'x'"):
        r.read_bool("whatIf")
    with pytest.raises(MalformedField, match=r"demo ended after 8 fields, before field #8 'more'"):
        r.read_str("more")
    assert r.raw["orderId"] == "42" and r.raw["offset"] == "Infinite"
    r2 = FieldReader(["", "abc", "1.7976931348623157E308", "nan"], "m")
    with pytest.raises(MalformedField, match="'qty': expected a number, got ''"):
        r2.read_float("qty")
    with pytest.raises(MalformedField, match="'n': expected an integer or empty, got 'abc'"):
        r2.read_opt_int("n")
    assert r2.read_opt_float("unset") is None
    with pytest.raises(MalformedField, match="'p': expected a number"):
        r2.read_float("p")
    r3 = FieldReader(["1", "2"], "m")
    r3.read_int("a")
    assert r3.remaining() == 1
    with pytest.raises(MalformedField, match="1 unexpected trailing field"):
        r3.expect_end()


async def test_real_client_handshake_is_accepted(ib_errors: IbErrorCapture) -> None:
    gw = await ScriptedGateway().start()
    ib = IB()
    try:
        await asyncio.wait_for(ib.client.connectAsync("127.0.0.1", gw.port, 3, 5.0), 5.0)
        assert ib.client.serverVersion() == 178
        assert gw.handshake_versions == (157, 178)
    finally:
        ib.disconnect()
        await gw.close()
    assert not gw.errors


async def test_real_client_with_too_old_range_is_refused_loudly(ib_errors: IbErrorCapture) -> None:
    ib_errors.allow("Peer closed connection")
    ib_errors.allow("API connection failed")
    gw = await ScriptedGateway().start()
    ib = IB()
    ib.client.MaxClientVersion = 176  # instance attribute: the handshake now offers v157..176
    try:
        with pytest.raises((TimeoutError, ConnectionError)):
            await ib.client.connectAsync("127.0.0.1", gw.port, 3, 1.0)
        await gw.wait_for(lambda: bool(gw.errors))
    finally:
        ib.disconnect()
        await gw.close()
    assert isinstance(gw.errors[0], VersionMismatch)
    assert "v157..176" in str(gw.errors[0])
