"""The log: one record per event, on standard error or in a file, as text for people or JSON for machines, with a
level per component, and no database password ever written.

Why one record per event: an operator greps the log for a trade, an order key or an IB code and must find each
happening once.  Two sources used to repeat each other.  ib_async logs every error message IB sends ("Error 326,
reqId -1: ..."), and tickguard logs what the message means (the order it ends, the farm it breaks, the client id
already in use): ib_async's copy is dropped here (``_BrokerEcho``), the rest of ib_async's log is kept.  And the
start-up report of ``tickguard run`` was both printed and logged: it is only logged now.

Standard output is the view (the live table, the final tables and the summary); the log is the record.  They are
kept apart so ``tickguard run > view.txt 2> events.log`` (or ``[log] file``) separates them.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable

from pythonjsonlogger.json import JsonFormatter

from tickguard.config import LOG_LEVELS, LogConfig, mask_secrets

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# ib_async's copies of what tickguard reports itself: IB's error messages (wrapper.py, error()) and the end of a
# connection (client.py: connectAsync, _onSocketDisconnected) - reported as a refused connection or a 1100 notice
ECHOES = {"ib_async.wrapper": re.compile(r"(Error|Warning) -?\d+, reqId |Canceled order: |IBKR API validation "
                                         r"warning: "),
          "ib_async.client": re.compile(r"Peer closed connection|API connection failed|Make sure API port")}
# component names are module paths: "adapters.ib" is short for "tickguard.adapters.ib"; these roots are kept as is
ROOTS = ("tickguard", "ib_async", "ibfake", "sqlalchemy", "alembic", "asyncio")
DEFAULT_LEVELS = {"ib_async": "WARNING", "sqlalchemy": "WARNING", "alembic": "WARNING"}


class LogSetupError(ValueError):
    """The log cannot be set up as configured (an unwritable file, an unknown level)."""


class _BrokerEcho(logging.Filter):
    """Drops ib_async's copy of an IB error message: the adapter logs the same message once, with its meaning."""

    def filter(self, record: logging.LogRecord) -> bool:
        echoes = ECHOES.get(record.name)
        return echoes is None or not (isinstance(record.msg, str) and echoes.match(record.msg))


class _DecoderFault(logging.Filter):
    """ib_async logs a message it could not handle with the whole message's fields and a traceback (thousands of
    lines when a late answer arrives row by row); one line says which message and why, the traceback is kept for
    ``--log-level ib_async=DEBUG``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "ib_async.decoder" or not record.exc_info or record.exc_info[1] is None:
            return True
        if logging.getLogger("ib_async").isEnabledFor(logging.DEBUG):
            return True
        exc = record.exc_info[1]
        what = record.getMessage().split("(", 1)[0].removeprefix("Error for ").removesuffix(":")[:80]
        record.msg, record.args = "ib_async could not handle a message from IB (%s): %s: %s", (
            what, type(exc).__name__, str(exc)[:200])
        record.exc_info, record.exc_text = None, None
        return True


class _NoSecrets(logging.Filter):
    """Masks passwords in every record, whoever logs it (tickguard, SQLAlchemy, psycopg): a URL or a DSN can end up
    in an error message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = mask_secrets(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when the record comes: the live view (``rich.live.Live``) swaps it to
    print log lines above the table instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def component(name: str) -> str:
    """A component as a logger name: ``adapters.ib`` -> ``tickguard.adapters.ib``."""
    name = name.strip().strip(".")
    if not name:
        raise LogSetupError("a log component needs a name (e.g. adapters.ib=DEBUG)")
    return name if name.split(".")[0] in ROOTS else f"tickguard.{name}"


def parse_levels(options: Iterable[str]) -> tuple[str | None, dict[str, str]]:
    """``--log-level`` values: ``DEBUG`` (tickguard's level) or ``COMPONENT=LEVEL`` (one component's)."""
    level: str | None = None
    components: dict[str, str] = {}
    for option in options:
        name, sep, value = option.rpartition("=")
        value = value.strip().upper()
        if value not in LOG_LEVELS:
            raise LogSetupError(f"--log-level {option!r}: {value or '(empty)'!r} is not a level; use one of "
                                f"{', '.join(LOG_LEVELS)}, alone or as COMPONENT=LEVEL (e.g. adapters.ib=DEBUG)")
        if sep:
            components[component(name)] = value
        else:
            level = value
    return level, components


def setup(cfg: LogConfig, fmt: str | None = None, levels: Iterable[str] = ()) -> None:
    """Install the log as ``cfg`` says, the command line's ``--log-format`` / ``--log-level`` over it.  Called
    again (tests, several commands in one process), it replaces what it installed before."""
    level, from_cli = parse_levels(levels)
    fmt = fmt or cfg.format
    if fmt not in ("text", "json"):
        raise LogSetupError(f"--log-format {fmt!r}: use text or json")
    try:
        handler: logging.Handler = (logging.FileHandler(cfg.file, encoding="utf-8") if cfg.file
                                    else _CurrentStderr())
    except OSError as exc:
        raise LogSetupError(f"[log] file {cfg.file!r} cannot be written: {exc.strerror or exc}") from exc
    if fmt == "json":
        handler.setFormatter(JsonFormatter("{levelname}{name}{message}", style="{", timestamp="time",
                                           rename_fields={"levelname": "level", "name": "logger"}))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(_BrokerEcho())
    handler.addFilter(_DecoderFault())
    handler.addFilter(_NoSecrets())
    handler.set_name("tickguard")

    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "tickguard"]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)  # libraries tickguard does not name: warnings and errors only
    wanted = {**DEFAULT_LEVELS, "tickguard": level or cfg.level,
              **{component(n): lv for n, lv in cfg.components.items()}, **from_cli}
    for name, lv in wanted.items():
        logging.getLogger(name).setLevel(lv)
    logging.captureWarnings(True)
