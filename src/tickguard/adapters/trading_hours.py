"""Regular trading hours of US stocks, the rule the market-data watchdog uses to know when silence is news.

A US stock trades in a regular session Monday to Friday, 09:30-16:00 America/New_York.  Outside it a quiet feed
is normal (pre- and post-market quotes are thin or absent), so no stale-tick alert is raised there.  Exchange
holidays and early closes are not known to this rule: on such a day a silent symbol with a live trade is
reported as blind (a false alarm, never a missed one).
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

NY = ZoneInfo("America/New_York")
NS = 1_000_000_000
REGULAR_OPEN, REGULAR_CLOSE = dt.time(9, 30), dt.time(16, 0)


def us_regular_session(ts_ns: int) -> tuple[int, int] | None:
    """(open_ns, close_ns) of the US regular session that ``ts_ns`` falls in, or None outside one."""
    when = dt.datetime.fromtimestamp(ts_ns / NS, tz=NY)
    if when.weekday() >= 5:
        return None
    open_ = int(dt.datetime.combine(when.date(), REGULAR_OPEN, tzinfo=NY).timestamp()) * NS
    close = int(dt.datetime.combine(when.date(), REGULAR_CLOSE, tzinfo=NY).timestamp()) * NS
    return (open_, close) if open_ <= ts_ns < close else None
