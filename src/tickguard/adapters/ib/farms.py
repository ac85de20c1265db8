"""IB's farm and connectivity messages, tracked per farm: which data farm is ok, broken or inactive, since when.

TWS reports the health of its connections to IB's servers as error messages with reqId -1.  The farm is named
at the end of the text: after the last ``:`` ("Market data farm connection is broken:usfarm", "...is OK:usfarm.nj")
or, in the "inactive" messages, after "upon demand." ("...should be available upon demand.ushmds").

============  ==================  ===========================================================================
code          farm kind           meaning
============  ==================  ===========================================================================
1100          (connectivity)      connectivity between TWS and IB lost: every feed is suspect
1101          (connectivity)      restored, data lost: every subscription must be made again
1102          (connectivity)      restored, data kept
2103          market data         farm connection broken: quotes of the symbols it serves stop, often silently
2104          market data         farm connection OK
2105          HMDS                historical-data farm broken (bars fail)
2106          HMDS                historical-data farm OK
2107          HMDS                inactive, available on demand (not a fault: IB parks idle farms)
2108          market data         inactive, available on demand (not a fault)
2157          sec-def             security-definition farm broken (contract look-ups fail)
2158          sec-def             security-definition farm OK
============  ==================  ===========================================================================

Pure: no ib_async import; the adapter feeds it ``(code, message, now_ns)``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class FarmStatus(StrEnum):
    OK = "ok"
    BROKEN = "broken"
    INACTIVE = "inactive"


MARKET_DATA, HMDS, SECDEF = "market data", "HMDS", "sec-def"
CONNECTIVITY_LOST, RESTORED_DATA_LOST, RESTORED_DATA_KEPT = 1100, 1101, 1102

FARM_CODES: Mapping[int, tuple[str, FarmStatus]] = {
    2103: (MARKET_DATA, FarmStatus.BROKEN),
    2104: (MARKET_DATA, FarmStatus.OK),
    2105: (HMDS, FarmStatus.BROKEN),
    2106: (HMDS, FarmStatus.OK),
    2107: (HMDS, FarmStatus.INACTIVE),
    2108: (MARKET_DATA, FarmStatus.INACTIVE),
    2157: (SECDEF, FarmStatus.BROKEN),
    2158: (SECDEF, FarmStatus.OK),
}
CONNECTIVITY_CODES = frozenset({CONNECTIVITY_LOST, RESTORED_DATA_LOST, RESTORED_DATA_KEPT})

_NAME_AFTER_COLON = re.compile(r":\s*([A-Za-z0-9_.\-]+)\s*$")
_NAME_AFTER_DEMAND = re.compile(r"demand\.\s*([A-Za-z0-9_.\-]+)\s*$")


def farm_name(message: str, kind: str) -> str:
    """The farm a farm message is about; the kind ("market data farm") when the text names none."""
    text = message or ""
    found = _NAME_AFTER_COLON.search(text) or _NAME_AFTER_DEMAND.search(text)
    return found.group(1) if found else f"{kind} farm"


@dataclass(slots=True)
class FarmState:
    name: str
    kind: str
    status: FarmStatus
    since_ns: int
    code: int


def _clock(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).strftime("%H:%M:%SZ")


class FarmTable:
    """Per farm: ok / broken / inactive and since when; and the TWS-IB connectivity (1100 / 1101 / 1102)."""

    def __init__(self) -> None:
        self.farms: dict[str, FarmState] = {}
        self.connected = True  # TWS <-> IB, as the last connectivity code said
        self.connectivity_since_ns = 0

    def on_code(self, code: int, message: str, now_ns: int) -> FarmState | None:
        """Record one message; returns the farm it changed (None for connectivity and other codes)."""
        if code in CONNECTIVITY_CODES:
            connected = code != CONNECTIVITY_LOST
            if connected != self.connected:
                self.connected, self.connectivity_since_ns = connected, now_ns
            return None
        known = FARM_CODES.get(code)
        if known is None:
            return None
        kind, status = known
        name = farm_name(message, kind)
        state = self.farms.get(name)
        if state is None or state.status is not status:
            state = self.farms[name] = FarmState(name, kind, status, now_ns, code)
        return state

    def broken(self, kind: str | None = MARKET_DATA) -> list[str]:
        """Names of the broken farms of ``kind`` (every kind when None)."""
        return [f.name for f in self.farms.values() if f.status is FarmStatus.BROKEN and kind in (None, f.kind)]

    def snapshot(self) -> dict[str, tuple[str, int]]:
        """farm -> (status, since_ns)."""
        return {name: (f.status.value, f.since_ns) for name, f in self.farms.items()}

    def describe(self, now_ns: int) -> str:
        """One line for a log or an alert: connectivity, then every farm with its status and for how long."""
        link = ("IB connectivity ok" if self.connected else
                f"IB connectivity LOST for {(now_ns - self.connectivity_since_ns) / 1e9:.0f}s")
        farms = [f"{f.name} ({f.kind}) {f.status.value}"
                 + (f" for {(now_ns - f.since_ns) / 1e9:.0f}s since {_clock(f.since_ns)}"
                    if f.status is not FarmStatus.OK else "")
                 for f in sorted(self.farms.values(), key=lambda f: f.name)]
        return "; ".join([link, *farms]) if farms else f"{link}; no farm message yet"
