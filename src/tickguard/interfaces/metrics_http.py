"""``GET /metrics`` for Prometheus, served on the engine's own event loop while ``tickguard run`` / ``sim`` runs.

Why aiohttp on the engine's loop, not ``prometheus_client.start_http_server`` (a thread): the collector reads the
engine's live objects, and on the loop it reads them between two engine steps - never half-way through one - with
no lock on the tick path; a thread would race the loop or need one.  aiohttp is a maintained asyncio HTTP server
that parses hostile requests for us (a scrape port is often reachable from a whole network).

A metrics port that cannot be opened (in use, no permission) is an ERROR in the log, and the engine trades on
without metrics: an exit watched without a dashboard beats no exit watched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from tickguard.config import MetricsConfig
from tickguard.runtime.engine import Engine
from tickguard.runtime.telemetry import watch_loop_lag

if TYPE_CHECKING:
    from aiohttp import web

    from tickguard.runtime.metrics import EngineMetrics

log = logging.getLogger(__name__)


class _BadRequestLine(logging.Filter):
    """aiohttp logs a malformed request (garbage, a 100 kB header) as an ERROR with a traceback; it is a caller's
    mistake the server answered with a 400, so one WARNING line says so instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = "metrics: refused a malformed HTTP request (%s)", (
                str(exc).replace("\n", " ")[:200],)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


logging.getLogger("aiohttp.server").addFilter(_BadRequestLine())


class MetricsServer:
    """aiohttp and prometheus_client are imported when a server is made, not with the CLI: a third of a second
    that every ``tickguard`` command run without metrics (``[metrics] enabled = false``) does not pay."""

    def __init__(self, engine: Engine, cfg: MetricsConfig) -> None:
        from prometheus_client import CollectorRegistry

        from tickguard.runtime.metrics import EngineMetrics

        self.cfg = cfg
        self.collector: EngineMetrics = EngineMetrics(engine, cfg.max_symbol_labels)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _metrics(self, request: web.Request) -> web.Response:
        from aiohttp import web
        from prometheus_client.exposition import choose_encoder

        from tickguard.runtime.metrics import exposition

        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        try:
            body = await exposition(self.collector, self.registry, encoder)
        except Exception as exc:  # a bug in a figure must not take the engine (or the other figures' history) down
            log.error("metrics: the scrape failed: %s: %s", type(exc).__name__, exc, exc_info=log.isEnabledFor(
                logging.DEBUG))
            return web.Response(status=500, text=f"tickguard: the scrape failed: {type(exc).__name__}: {exc}\n")
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _index(self, request: web.Request) -> web.Response:
        from aiohttp import web

        return web.Response(text="tickguard: metrics at /metrics\n")

    async def start(self) -> bool:
        """Listen; False (logged as an error) when the address cannot be had."""
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/", self._index)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        host, port = self.cfg.host_port
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            await runner.cleanup()
            log.error("metrics NOT served: cannot listen on %s (%s); set [metrics] address to a free port, or "
                      "[metrics] enabled = false", self.cfg.address, exc.strerror or exc)
            return False
        self._runner = runner
        bound = runner.addresses[0] if runner.addresses else (host, port)
        self.url = f"http://{bound[0]}:{bound[1]}/metrics"
        log.info("metrics at %s", self.url)
        return True

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@contextlib.asynccontextmanager
async def serving_metrics(engine: Engine, cfg: MetricsConfig) -> AsyncIterator[MetricsServer | None]:
    """Serve the engine's metrics and sample its event-loop lag for as long as the block runs (nothing when
    ``[metrics] enabled`` is false)."""
    if not cfg.enabled:
        yield None
        return
    server = MetricsServer(engine, cfg)
    lag = asyncio.get_running_loop().create_task(watch_loop_lag(engine.telemetry, cfg.loop_lag_interval_s))
    try:
        yield server if await server.start() else None
    finally:
        lag.cancel()
        await asyncio.gather(lag, return_exceptions=True)
        await server.close()
