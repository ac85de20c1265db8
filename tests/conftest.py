"""Shared fixtures: an injected clock and a small market-data context for the pure core."""

from __future__ import annotations

import os

import pytest

from tickguard.core.model import Tick
from tickguard.core.price_grid import PriceGrid
from tickguard.core.volatility import VolSnapshot

T0 = 1_764_000_000_000_000_000

# Engines started by tests (in this process and in the processes they spawn) serve no metrics unless a test asks:
# two at once would contend for [metrics] address's one port.  Tests of the metrics set their own address.
os.environ.setdefault("TICKGUARD_METRICS__ENABLED", "false")


class FakeClock:
    """A clock the test moves by hand: no test waits on wall time."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> int:
        self.now += int(seconds * 1e9)
        return self.now


class Market:
    """Volatility, ticks sizes and last quotes the trade manager reads, set directly by tests.

    Tests speak in prices; ``tick`` converts them to the core's grid units the way an adapter does
    (``PriceGrid.units``), so a test reads like a feed and the core sees what it sees live."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.vol: dict[str, VolSnapshot] = {"AAA": VolSnapshot("AAA", 2.0, 3.0, T0)}
        self.quotes: dict[str, Tick] = {}
        self.tick_sizes: dict[str, str] = {}  # symbol -> minimum tick; 0.01 unless set
        self.seq = 0

    def grid(self, symbol: str) -> PriceGrid:
        return PriceGrid(self.tick_sizes.get(symbol, "0.01"))

    def tick(self, symbol: str, bid: float, ask: float | None = None, last: float | None = None) -> Tick:
        self.seq += 1
        self.clock.advance(0.001)
        grid = self.grid(symbol)
        bid_units = grid.units(bid)
        ask_units = bid_units + 4 if ask is None else grid.units(ask)  # two ticks wide by default
        t = Tick(symbol, bid_units, ask_units, grid.units(last), 100.0, self.clock.now, self.clock.now, self.seq)
        self.quotes[symbol] = t
        return t


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def market(clock: FakeClock) -> Market:
    return Market(clock)


# The fake-gateway test helpers (a gateway driven in virtual time, the ib_async ERROR-log trap) are shared
# with the IB adapter's tests, which live beside the module they test.
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "ibfake"))


# ----------------------------------------------------------------------------------------- PostgreSQL
import uuid  # noqa: E402

import psycopg  # noqa: E402

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


@pytest.fixture
def pg_url():
    """A fresh database on the machine's PostgreSQL (started by .ci/run), dropped afterwards."""
    name = f"tickguard_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at 127.0.0.1:5432 ({exc}); .ci/run starts it")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_target(request, tmp_path):
    """Each journal test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return str(tmp_path / "journal.db")
    return request.getfixturevalue("pg_url")


# --------------------------------------------------------------------------------------- scheduling
_LONG = ("tests/e2e/", "tests/test_readme.py", "tests/interfaces/test_cli.py", "tests/bench/")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The long process tests (kills, crash points, the README's walkthrough) first: the two workers take queued
    tests as they free up (``--dist worksteal``), so the suite ends on short tests rather than on a 75 s kill test
    that happened to start last.  Order within each group is kept."""
    items.sort(key=lambda item: not any(part in item.nodeid for part in _LONG))
