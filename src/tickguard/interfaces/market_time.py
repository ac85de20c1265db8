"""Formatting of engine timestamps (UTC nanoseconds) in exchange time, for people."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

NY = ZoneInfo("America/New_York")


def fmt_ns(ts_ns: int, tz: ZoneInfo = NY) -> str:
    return dt.datetime.fromtimestamp(ts_ns / 1e9, tz=tz).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
