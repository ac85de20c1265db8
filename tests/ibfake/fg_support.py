"""Test support for the fake-gateway codec tests: a scripted TCP peer and an ib_async error trap.

Why: the codec is only worth something if the *real* ib_async client accepts what it writes and
writes what it parses. These helpers run a real asyncio TCP server built only from the codec
(handshake, framing, parse_incoming) so tests can connect a real ``ib_async`` client to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from ibfake import outgoing
from ibfake.incoming import StartApi, UnknownMessage, parse_incoming
from ibfake.wire import (
    Field,
    FrameDecoder,
    encode_handshake_reply,
    encode_message,
    negotiate_version,
    parse_handshake,
)

ACCOUNT = "DU123456"
TIMEOUT = 5.0

Send = Callable[[list[Field]], None]
Responder = Callable[[Any, Send], None]


class IbErrorCapture(logging.Handler):
    """Collects ERROR records from ``ib_async`` loggers.

    ib_async's decoder swallows exceptions and only logs "Error handling fields", so a test that
    does not look at the log can pass while the client silently dropped our message.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self._allowed: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def allow(self, substring: str) -> None:
        """Expect ERROR records containing ``substring`` (e.g. ib_async logging an IB error code)."""
        self._allowed.append(substring)

    def unexpected(self) -> list[str]:
        messages = [r.getMessage() for r in self.records]
        return [m for m in messages if not any(a in m for a in self._allowed)]

    @classmethod
    @contextlib.contextmanager
    def installed(cls) -> Any:
        handler = cls()
        logger = logging.getLogger("ib_async")
        logger.addHandler(handler)
        try:
            yield handler
        finally:
            logger.removeHandler(handler)


def default_responder(msg: Any, send: Send) -> None:
    """Answer startApi the way IB does: managedAccounts then nextValidId (3 fields each)."""
    if isinstance(msg, StartApi):
        send(outgoing.managed_accounts([ACCOUNT]))
        send(outgoing.next_valid_id(1))


class ScriptedGateway:
    """A real TCP server speaking the wire protocol via the codec; records every client message."""

    def __init__(self, responder: Responder = default_responder) -> None:
        self.responder = responder
        self.frames: list[list[str]] = []
        self.messages: list[Any] = []
        self.unknown: list[UnknownMessage] = []
        self.errors: list[BaseException] = []
        self.handshake_versions: tuple[int, int] | None = None
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def start(self) -> ScriptedGateway:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        for w in self._writers:
            w.close()
        if self._server is not None:
            self._server.close()
            await asyncio.wait_for(self._server.wait_closed(), TIMEOUT)

    def _notify(self) -> None:
        self._changed.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        """Wait until ``predicate()`` holds, re-checking whenever a message arrives."""

        async def loop() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)

    async def wait_for_message(self, cls: type, timeout: float = TIMEOUT) -> Any:
        """Return the first recorded message of type ``cls`` (waiting for it if needed)."""
        await self.wait_for(lambda: any(isinstance(m, cls) for m in self.messages), timeout)
        return next(m for m in self.messages if isinstance(m, cls))

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)

        def send(fields: list[Field]) -> None:
            writer.write(encode_message(fields))

        try:
            buffer = b""
            parsed = None
            while parsed is None:
                chunk = await reader.read(4096)
                if not chunk:
                    return
                buffer += chunk
                parsed = parse_handshake(buffer)
            request, used = parsed
            self.handshake_versions = (request.min_version, request.max_version)
            writer.write(encode_handshake_reply("20250102 12:00:00 EST", negotiate_version(request)))
            decoder = FrameDecoder()
            pending = buffer[used:]
            while True:
                for fields in decoder.feed(pending):
                    self.frames.append(fields)
                    try:
                        msg = parse_incoming(fields)
                    except UnknownMessage as exc:
                        self.unknown.append(exc)
                        msg = exc
                    self.messages.append(msg)
                    self.responder(msg, send)
                    self._notify()
                await writer.drain()
                pending = await reader.read(65536)
                if not pending:
                    return
        except Exception as exc:  # surfaced by tests through .errors
            self.errors.append(exc)
            self._notify()
        finally:
            writer.close()
