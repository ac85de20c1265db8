"""Framing and field primitives of the TWS API wire protocol (server side, server version 178).

Why this module exists: the fake gateway must speak the exact byte format the real, unmodified
``ib_async`` client expects, and must fail *loudly* on anything it does not understand — ib_async's
own decoder swallows malformed messages and only logs them, which turns protocol bugs into silent
hangs. Every error raised here names the message and field that was wrong.

Wire format (verified against ib_async 2.1.0):

* Handshake, client → server: ``b"API\\0"`` + 4-byte big-endian length + ``b"v157..178"``
  (optionally followed by ``b" "`` and connect options such as ``+PACEAPI``).
* Handshake, server → client: one ordinary framed message with exactly two fields, the
  server version and a connection time string.
* Every message after that: 4-byte big-endian length, then UTF-8 fields each terminated by NUL
  (the last one too).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, TypeAlias

SERVER_VERSION: Final = 178
"""The server version the fake gateway claims: what a real gateway negotiates with ib_async 2.1.0."""

UNSET_DOUBLE: Final = 1.7976931348623157e308
"""IB's "no value" double (Java ``Double.MAX_VALUE``). Consumers must read it as "unknown"."""

UNSET_DOUBLE_WIRE: Final = "1.7976931348623157E308"
"""How real IB spells :data:`UNSET_DOUBLE` on the wire (Java ``Double.toString``)."""

UNSET_INTEGER: Final = 2**31 - 1
"""IB's "no value" integer (Java ``Integer.MAX_VALUE``)."""

API_PREFIX: Final = b"API\0"
MAX_MESSAGE_LENGTH: Final = 0xFFFFFF
"""Largest message body we accept (16 MiB, IB's own limit); anything bigger is a framing error."""

Field: TypeAlias = str | int | float | bool | Decimal | None
"""A value that :func:`encode_field` knows how to put on the wire."""


class ProtocolError(Exception):
    """The peer sent bytes that do not follow the TWS wire protocol."""


class VersionMismatch(ProtocolError):
    """The client's supported version range does not include the version the fake gateway speaks."""


class MalformedField(ProtocolError):
    """A field could not be read as the expected type (or was missing)."""


# --------------------------------------------------------------------------------------------------
# Handshake


@dataclass(frozen=True, slots=True)
class HandshakeRequest:
    """What the client offered in its opening ``API\\0`` message."""

    min_version: int
    max_version: int
    connect_options: str = ""


def parse_handshake(buffer: bytes) -> tuple[HandshakeRequest, int] | None:
    """Parse the client's opening handshake from the start of ``buffer``.

    Returns ``(request, bytes_consumed)`` once the whole handshake is present, or ``None`` when
    more bytes are needed; bytes after ``bytes_consumed`` are the first framed messages (feed them
    to a :class:`FrameDecoder`). Raises :class:`ProtocolError` as soon as the bytes cannot be a
    handshake, so a stray client is rejected instead of waited on forever.
    """
    head = buffer[: len(API_PREFIX)]
    if head != API_PREFIX[: len(head)]:
        raise ProtocolError(f"handshake must start with b'API\\x00', got {bytes(head)!r}")
    if len(buffer) < len(API_PREFIX) + 4:
        return None
    (length,) = struct.unpack(">I", buffer[4:8])
    if length == 0 or length > 1024:
        raise ProtocolError(f"implausible handshake version-string length {length}")
    end = 8 + length
    if len(buffer) < end:
        return None
    try:
        text = buffer[8:end].decode("ascii")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"handshake version string is not ASCII: {buffer[8:end]!r}") from exc
    version_part, _, options = text.partition(" ")
    if not version_part.startswith("v"):
        raise ProtocolError(f"handshake version string must start with 'v', got {text!r}")
    low, sep, high = version_part[1:].partition("..")
    try:
        min_version = int(low)
        max_version = int(high) if sep else min_version
    except ValueError as exc:
        raise ProtocolError(f"cannot parse client version range from {text!r}") from exc
    if min_version > max_version:
        raise ProtocolError(f"client version range is empty: {text!r}")
    return HandshakeRequest(min_version, max_version, options.strip()), end


def negotiate_version(request: HandshakeRequest, server_version: int = SERVER_VERSION) -> int:
    """Return ``server_version`` if the client supports it, else raise :class:`VersionMismatch`.

    The fake only speaks one dialect (178); silently answering with it to a client that cannot
    speak it would produce confusing field-count errors much later, so we refuse up front.
    """
    if not request.min_version <= server_version <= request.max_version:
        raise VersionMismatch(
            f"fake gateway speaks server version {server_version}, but the client only supports "
            f"v{request.min_version}..{request.max_version}"
        )
    return server_version


def encode_handshake_reply(connection_time: str, server_version: int = SERVER_VERSION) -> bytes:
    """The server's handshake answer: a framed message of exactly two fields (version, time).

    ``connection_time`` looks like ``"20250102 12:00:00 EST"``; ib_async ignores its content but
    treats any two-field first message as the end of the handshake.
    """
    return encode_message([server_version, connection_time])


# --------------------------------------------------------------------------------------------------
# Encoding


def format_float(value: float) -> str:
    """Format a float so that ``float()`` (ib_async's parser) reads back the identical value.

    ``repr`` is the shortest round-tripping form. The unset double is spelled the way real IB
    spells it, and infinities as ``Infinity`` (which Python's ``float`` accepts). NaN has no wire
    form in IB's protocol, so it is rejected rather than sent as a string ib_async cannot use.
    """
    if math.isnan(value):
        raise ValueError("NaN cannot be encoded; use None for 'no value' or UNSET_DOUBLE")
    if value == UNSET_DOUBLE:
        return UNSET_DOUBLE_WIRE
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(float(value))


def encode_field(value: Field) -> str:
    """Convert one Python value to its wire text (bool before int: ``True`` is ``"1"``, not ``"True"``)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"non-finite Decimal {value} cannot be encoded")
        return format(value, "f")
    if isinstance(value, str):
        if "\0" in value:
            raise ValueError(f"field text must not contain NUL: {value!r}")
        return value
    raise TypeError(f"cannot encode {type(value).__name__} value {value!r} as a wire field")


def encode_fields(fields: Iterable[Field]) -> bytes:
    """Encode the body of a message: every field NUL-terminated, the last one too."""
    return b"".join(encode_field(f).encode("utf-8") + b"\0" for f in fields)


def encode_message(fields: Iterable[Field]) -> bytes:
    """Frame ``fields`` as one message: 4-byte big-endian length prefix + NUL-terminated fields."""
    body = encode_fields(fields)
    if len(body) > MAX_MESSAGE_LENGTH:
        raise ValueError(f"message body of {len(body)} bytes exceeds the {MAX_MESSAGE_LENGTH} limit")
    return struct.pack(">I", len(body)) + body


# --------------------------------------------------------------------------------------------------
# Decoding


class FrameDecoder:
    """Incremental decoder of length-prefixed messages (after the handshake).

    Feed it whatever the socket delivers; it returns every message completed so far as a list of
    field strings and keeps any partial tail for the next call.
    """

    def __init__(self, max_length: int = MAX_MESSAGE_LENGTH) -> None:
        self._buffer = bytearray()
        self._max_length = max_length

    @property
    def pending(self) -> int:
        """Number of buffered bytes that do not yet form a complete message."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[list[str]]:
        """Append ``data`` and return all complete messages, in order, as field lists."""
        self._buffer += data
        messages: list[list[str]] = []
        while len(self._buffer) >= 4:
            (length,) = struct.unpack(">I", self._buffer[:4])
            if length == 0:
                raise ProtocolError("empty message (length prefix 0)")
            if length > self._max_length:
                raise ProtocolError(f"message length {length} exceeds limit {self._max_length}")
            if len(self._buffer) < 4 + length:
                break
            body = bytes(self._buffer[4 : 4 + length])
            del self._buffer[: 4 + length]
            messages.append(decode_body(body))
        return messages


def decode_body(body: bytes) -> list[str]:
    """Split one message body into its fields, insisting on the trailing NUL."""
    if not body.endswith(b"\0"):
        raise ProtocolError(f"message body does not end with NUL: {body[:80]!r}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"message body is not UTF-8: {body[:80]!r}") from exc
    return text.split("\0")[:-1]


_TRUE_FALSE: Final = {"1": True, "0": False, "": False, "true": True, "false": False}


class FieldReader:
    """Sequential, type-checking reader over one message's fields.

    Client messages are positional and contain optional blocks whose presence depends on earlier
    fields, so parsers must read them in order, exactly like the client wrote them. Every read is
    named, so a malformed message produces e.g. ``placeOrder field #19 'lmtPrice': expected a
    number, got 'abc'`` instead of an IndexError. Each raw value read is also kept in :attr:`raw`
    (name → text) so callers can inspect fields the typed parsers do not surface.
    """

    def __init__(self, fields: Sequence[str], message: str = "message", start: int = 0) -> None:
        self._fields = fields
        self._pos = start
        self.message = message
        self.raw: dict[str, str] = {}

    @property
    def position(self) -> int:
        """Index of the next field to be read."""
        return self._pos

    def remaining(self) -> int:
        """How many fields are left unread."""
        return len(self._fields) - self._pos

    def _next(self, name: str) -> str:
        if self._pos >= len(self._fields):
            raise MalformedField(
                f"{self.message} ended after {len(self._fields)} fields, before field "
                f"#{self._pos} {name!r}"
            )
        value = self._fields[self._pos]
        self._pos += 1
        self.raw[name] = value
        return value

    def _fail(self, name: str, expected: str, value: str) -> MalformedField:
        return MalformedField(
            f"{self.message} field #{self._pos - 1} {name!r}: expected {expected}, got {value!r}"
        )

    def read_str(self, name: str) -> str:
        """Read a text field verbatim."""
        return self._next(name)

    def read_int(self, name: str) -> int:
        """Read a required integer; an empty field is an error."""
        value = self._next(name)
        try:
            return int(value)
        except ValueError:
            raise self._fail(name, "an integer", value) from None

    def read_opt_int(self, name: str) -> int | None:
        """Read an integer that may be empty (ib_async sends unset integers as empty fields)."""
        value = self._next(name)
        if value == "":
            return None
        try:
            return int(value)
        except ValueError:
            raise self._fail(name, "an integer or empty", value) from None

    def _to_float(self, name: str, value: str) -> float:
        # ib_async writes math.inf as "Infinite", which Python's float() does not accept.
        if value in ("Infinite", "Infinity", "inf"):
            return math.inf
        if value in ("-Infinite", "-Infinity", "-inf"):
            return -math.inf
        try:
            result = float(value)
        except ValueError:
            raise self._fail(name, "a number", value) from None
        if math.isnan(result):
            raise self._fail(name, "a number", value)
        return result

    def read_float(self, name: str) -> float:
        """Read a required number; an empty field is an error."""
        value = self._next(name)
        if value == "":
            raise self._fail(name, "a number", value)
        return self._to_float(name, value)

    def read_opt_float(self, name: str) -> float | None:
        """Read a number that may be empty; empty and the unset double both become ``None``."""
        value = self._next(name)
        if value == "":
            return None
        result = self._to_float(name, value)
        return None if result == UNSET_DOUBLE else result

    def read_bool(self, name: str) -> bool:
        """Read a boolean sent as ``0``/``1`` (empty counts as false, as in IB's own readers)."""
        value = self._next(name)
        try:
            return _TRUE_FALSE[value.lower()]
        except KeyError:
            raise self._fail(name, "0 or 1", value) from None

    def expect_end(self) -> None:
        """Raise if fields are left over: a sign that our reading diverged from the writer."""
        if self._pos != len(self._fields):
            extra = list(self._fields[self._pos : self._pos + 8])
            raise MalformedField(
                f"{self.message} has {len(self._fields) - self._pos} unexpected trailing field(s) "
                f"from #{self._pos}: {extra!r}"
            )
