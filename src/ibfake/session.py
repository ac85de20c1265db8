"""One client connection: handshake, pacing, and the answer to every supported request.

Why the session owns pacing and subscriptions: IB counts messages per connection, and market-data,
account and position subscriptions die with the socket, while orders and executions outlive it (they
belong to the gateway's :class:`~.orders.OrderBook`, keyed by clientId, so a reconnecting client finds them).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import TYPE_CHECKING, Any, Protocol

from tickguard.adapters.sim.market import NY
from tickguard.adapters.sim.venue import Quote

from . import accounts as acc
from . import incoming as inc
from . import outgoing as out
from . import outgoing_orders as oo
from .clock import MessagePacer
from .history import HistoryRequestError, ib_time, parse_bar_size, parse_end
from .wire import (
    Field,
    FrameDecoder,
    ProtocolError,
    encode_handshake_reply,
    encode_message,
    negotiate_version,
    parse_handshake,
)

if TYPE_CHECKING:
    from tickguard.adapters.sim.venue import SimVenue

    from .clock import HistoryPacer, PacingLimits, WallClock
    from .history import HistoryBook
    from .orders import OrderBook

log = logging.getLogger(__name__)

NS = 1_000_000_000
PACING_MESSAGE = "Max rate of messages per second has been exceeded:max={limit} rec={count} (1)"
DUPLICATE_CLIENT = "Unable to connect as the client id is already in use. Retry with a unique client id."
HMDS_PACING = "Historical Market Data Service error message:Pacing violation"
# live and delayed tick types: bid, ask, last prices
_PRICE_TICKS = {1: (1, 2, 4), 2: (1, 2, 4), 3: (66, 67, 68), 4: (66, 67, 68)}


class GatewayPort(Protocol):
    """What a session needs from the gateway that accepted it (:class:`~.server.FakeGateway` is one).

    Why a protocol: the gateway creates sessions, so a session naming the gateway's class would make
    the two modules import each other; the session depends on this description instead.
    """

    venue: SimVenue
    book: OrderBook
    history: HistoryBook
    history_pacer: HistoryPacer
    pacing: PacingLimits
    wall: WallClock
    completed_orders_silent: bool  # fault: reqCompletedOrders goes unanswered
    accounts: list[str]
    errors: list[BaseException]
    unsupported: list[str]
    pacing_drops: int
    stalled: bool
    hmds_down: bool

    def register_client(self, session: ClientSession, client_id: int) -> bool: ...

    def unregister(self, session: ClientSession) -> None: ...

    def muted_symbols(self) -> set[str]: ...

    def farm_status(self) -> list[tuple[int, str]]: ...

    def notify(self) -> None: ...


class ClientSession:
    """Serves one socket until it closes; sends are queued while the gateway is stalled."""

    def __init__(
        self, gateway: GatewayPort, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn_id: int
    ) -> None:
        self.gateway = gateway
        self.reader = reader
        self.writer = writer
        self.conn_id = conn_id
        self.client_id: int | None = None
        self.pacer = MessagePacer(gateway.pacing, gateway.wall)
        self.market_data_type = 1
        self.mkt_subs: dict[int, str] = {}
        self.positions_sub = False
        self.account_subs: set[str] = set()
        self.multi_subs: dict[int, str] = {}
        self.summary_subs: dict[int, str] = {}
        self.messages_received = 0
        self.closed = False
        self._backlog: list[bytes] = []

    # ----------------------------------------------------------------------------------- sending

    def send(self, fields: list[Field]) -> None:
        if self.closed:
            return
        data = encode_message(fields)
        if self.gateway.stalled:
            self._backlog.append(data)
        else:
            self.writer.write(data)

    def send_all(self, messages: list[list[Field]]) -> None:
        for fields in messages:
            self.send(fields)

    def send_together(self, messages: list[list[Field]]) -> None:
        """Frame every message and hand them to the socket in ONE write (one chunk of a stall's backlog), so
        the client finds them in one read - as TWS batches messages under load."""
        if self.closed or not messages:
            return
        data = b"".join(encode_message(fields) for fields in messages)
        if self.gateway.stalled:
            self._backlog.append(data)
        else:
            self.writer.write(data)

    def flush_backlog(self) -> None:
        if self.closed:
            self._backlog.clear()
            return
        for data in self._backlog:
            self.writer.write(data)
        self._backlog.clear()

    async def drain(self) -> None:
        if not self.closed:
            with contextlib.suppress(ConnectionError):
                await self.writer.drain()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()

    # ----------------------------------------------------------------------------------- reading

    async def run(self) -> None:
        try:
            if await self._handshake():
                await self._read_loop()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except ProtocolError as exc:
            log.error("connection %s: protocol error: %s", self.conn_id, exc)
            self.gateway.errors.append(exc)
        finally:
            self.close()
            self.gateway.unregister(self)

    async def _handshake(self) -> bool:
        buffer = b""
        while True:
            chunk = await self.reader.read(4096)
            if not chunk:
                return False
            buffer += chunk
            parsed = parse_handshake(buffer)
            if parsed is not None:
                break
        request, used = parsed
        version = negotiate_version(request)
        stamp = dt.datetime.fromtimestamp(self.gateway.venue.now_ns / NS, tz=NY).strftime("%Y%m%d %H:%M:%S EST")
        self.writer.write(encode_handshake_reply(stamp, version))
        self._decoder = FrameDecoder()
        self._pending = buffer[used:]
        return True

    async def _read_loop(self) -> None:
        data = self._pending
        while not self.closed:
            for fields in self._decoder.feed(data):
                self._on_frame(fields)
                if self.closed:
                    return
            data = await self.reader.read(65536)
            if not data:
                return

    def _on_frame(self, fields: list[str]) -> None:
        self.messages_received += 1
        try:
            msg: Any = inc.parse_incoming(fields)
        except inc.UnknownMessage as exc:
            msg = exc
        except ProtocolError as exc:
            log.error("connection %s: cannot parse %s: %s", self.conn_id, fields[:6], exc)
            self.gateway.errors.append(exc)
            self.send(out.error(-1, 320, f"Server error when reading an API client request: {exc}"))
            return
        if self.client_id is None and not isinstance(msg, inc.StartApi):
            return  # nothing but startApi is valid before the API is started
        try:
            if not self.pacer.admit():
                self._refuse_paced(msg)
            else:
                self._dispatch(msg)
        except Exception as exc:  # a gateway bug must be loud, but must not take the socket down silently
            log.exception("connection %s: failed to handle %s", self.conn_id, type(msg).__name__)
            self.gateway.errors.append(exc)
            self.send(out.error(-1, 320, f"fake gateway failed to handle {type(msg).__name__}: {exc!r}"))
        self.gateway.notify()

    def _refuse_paced(self, msg: Any) -> None:
        limits = self.gateway.pacing
        text = PACING_MESSAGE.format(limit=limits.max_msgs_per_s, count=limits.max_msgs_per_s + 1)
        if isinstance(msg, inc.PlaceOrder) and self.client_id is not None:
            self.gateway.book.refuse(self.client_id, msg.order_id, 100, text)
        else:
            self.send(out.error(getattr(msg, "req_id", getattr(msg, "order_id", -1)), 100, text))
        if self.pacer.should_drop():
            log.warning("connection %s: pacing violations persist, dropping it", self.conn_id)
            self.gateway.pacing_drops += 1
            self.pacer.drops += 1  # the pacer outlives this session in the gateway's pacing report
            self.close()

    # ---------------------------------------------------------------------------------- requests

    def _dispatch(self, msg: Any) -> None:
        handler = getattr(self, "_on_" + type(msg).__name__, None)
        if handler is None:
            name = msg.name if isinstance(msg, inc.UnknownMessage) else type(msg).__name__
            label = name or f"message id {getattr(msg, 'msg_id', '?')}"
            log.warning("connection %s: unsupported request %s", self.conn_id, label)
            self.gateway.unsupported.append(label)
            self.send(out.error(-1, 321, f"Error validating request.-'{label}' : cause - "
                                "not supported by the tickguard fake gateway"))  # fmt: skip
            return
        handler(msg)

    @property
    def _cid(self) -> int:
        assert self.client_id is not None
        return self.client_id

    def _on_StartApi(self, msg: inc.StartApi) -> None:
        if self.client_id is not None:
            return
        if not self.gateway.register_client(self, msg.client_id):
            self.send(out.error(-1, 326, DUPLICATE_CLIENT))
            self.close()
            return
        self.client_id = msg.client_id
        self.send(out.managed_accounts(self.gateway.accounts))
        self.send(out.next_valid_id(self.gateway.book.next_order_id(msg.client_id)))
        for code, text in self.gateway.farm_status():  # IB's greeting: each farm's state (2104/2106/2158 when OK)
            self.send(out.error(-1, code, text))

    def _on_ReqIds(self, msg: inc.ReqIds) -> None:
        self.send(out.next_valid_id(self.gateway.book.next_order_id(self._cid)))

    def _on_ReqManagedAccts(self, msg: inc.ReqManagedAccts) -> None:
        self.send(out.managed_accounts(self.gateway.accounts))

    def _on_ReqCurrentTime(self, msg: inc.ReqCurrentTime) -> None:
        self.send(out.current_time(self.gateway.venue.now_ns // NS))

    def _on_ReqMarketDataType(self, msg: inc.ReqMarketDataType) -> None:
        self.market_data_type = msg.market_data_type if msg.market_data_type in _PRICE_TICKS else 1

    def _on_ReqContractDetails(self, msg: inc.ReqContractDetails) -> None:
        spec = acc.resolve(self.gateway.venue, msg.contract)
        if spec is None:
            self.send(out.error(msg.req_id, 200, "No security definition has been found for the request"))
            return
        self.send(out.contract_details(msg.req_id, acc.contract_details(spec, self.gateway.venue.now_ns)))
        self.send(out.contract_details_end(msg.req_id))

    # -------------------------------------------------------------------------------- market data

    def _on_ReqMktData(self, msg: inc.ReqMktData) -> None:
        spec = acc.resolve(self.gateway.venue, msg.contract)
        if spec is None:
            self.send(out.error(msg.req_id, 200, "No security definition has been found for the request"))
            return
        self.send(out.market_data_type(msg.req_id, self.market_data_type))
        tick = self.gateway.venue.last_ticks.get(spec.symbol)
        if tick is not None and spec.symbol not in self.gateway.muted_symbols():
            self._send_tick(msg.req_id, tick)
        if msg.snapshot or msg.regulatory_snapshot:
            self.send(out.tick_snapshot_end(msg.req_id))
        else:
            self.mkt_subs[msg.req_id] = spec.symbol

    def _on_CancelMktData(self, msg: inc.CancelMktData) -> None:
        self.mkt_subs.pop(msg.req_id, None)

    def on_tick(self, tick: Quote) -> None:
        for req_id, symbol in self.mkt_subs.items():
            if symbol == tick.symbol:
                self._send_tick(req_id, tick)

    def _send_tick(self, req_id: int, tick: Quote) -> None:
        bid_type, ask_type, last_type = _PRICE_TICKS[self.market_data_type]
        self.send(out.tick_price(req_id, bid_type, tick.bid, tick.size, 1))
        self.send(out.tick_price(req_id, ask_type, tick.ask, tick.size, 1))
        if tick.last == tick.last:  # not NaN
            self.send(out.tick_price(req_id, last_type, tick.last, tick.size, 0))

    def burst_messages(self, symbol: str, quotes: list[Quote], prev_ask: float) -> list[list[Field]]:
        """The tickPrice messages of ``quotes``, in order, for every subscription of ``symbol``.

        Each quote is its bid then its ask (then its last, if any) - the ask first when the new bid would
        cross the previous ask, so that no half-applied quote is crossed."""
        bid_type, ask_type, last_type = _PRICE_TICKS[self.market_data_type]
        messages: list[list[Field]] = []
        for req_id in [r for r, s in self.mkt_subs.items() if s == symbol]:
            ask_before = prev_ask
            for q in quotes:
                bid = out.tick_price(req_id, bid_type, q.bid, q.size, 1)
                ask = out.tick_price(req_id, ask_type, q.ask, q.size, 1)
                messages += [ask, bid] if q.bid >= ask_before else [bid, ask]
                if q.last == q.last:  # not NaN
                    messages.append(out.tick_price(req_id, last_type, q.last, q.size, 0))
                ask_before = q.ask
        return messages

    def _on_ReqHistoricalData(self, msg: inc.ReqHistoricalData) -> None:
        gw = self.gateway
        spec = acc.resolve(gw.venue, msg.contract)
        if spec is None:
            self.send(out.error(msg.req_id, 200, "No security definition has been found for the request"))
            return
        if gw.hmds_down:
            self.send(out.error(msg.req_id, 162, "Historical Market Data Service error message:"
                                "HMDS data farm connection is broken:ushmds"))  # fmt: skip
            return
        key = (spec.con_id, msg.end_date_time, msg.bar_size, msg.duration, msg.what_to_show, msg.use_rth)
        if not gw.history_pacer.admit(spec.con_id, key):
            self.send(out.error(msg.req_id, 162, HMDS_PACING))
            return
        try:
            end_ns = parse_end(msg.end_date_time, gw.venue.now_ns)
            bar_seconds = parse_bar_size(msg.bar_size)
            if bar_seconds >= 86400:
                bars = gw.history.daily(spec.symbol, gw.venue.daily_bars(spec.symbol, 10_000), msg.duration, end_ns)
            else:
                bars = gw.history.intraday(spec.symbol, bar_seconds, msg.duration, end_ns)
        except HistoryRequestError as exc:
            self.send(out.error(msg.req_id, 162, f"Historical Market Data Service error message:{exc}"))
            return
        if msg.format_date == 2:
            bars = [_epoch_dated(b) for b in bars]
        start = bars[0].date if bars else None
        start_text = ib_time(end_ns) if start is None else out.format_bar_date(start)
        self.send(out.historical_data(msg.req_id, start_text, ib_time(end_ns), bars))

    def _on_CancelHistoricalData(self, msg: inc.CancelHistoricalData) -> None:
        """Answers are complete when sent (no keepUpToDate stream), so there is nothing to stop."""

    # -------------------------------------------------------------------------------------- orders

    def _on_PlaceOrder(self, msg: inc.PlaceOrder) -> None:
        self.gateway.book.place(self._cid, msg)

    def _on_CancelOrder(self, msg: inc.CancelOrder) -> None:
        self.gateway.book.cancel(self._cid, msg.order_id)

    def _on_ReqGlobalCancel(self, msg: inc.ReqGlobalCancel) -> None:
        self.gateway.book.cancel_all()

    def _on_ReqOpenOrders(self, msg: inc.ReqOpenOrders) -> None:
        self._send_open_orders(self._cid)

    def _on_ReqAllOpenOrders(self, msg: inc.ReqAllOpenOrders) -> None:
        self._send_open_orders(None)

    def _on_ReqAutoOpenOrders(self, msg: inc.ReqAutoOpenOrders) -> None:
        """Binding manual TWS orders is meaningless here: there is no TWS user placing orders."""

    def _send_open_orders(self, client_id: int | None) -> None:
        book = self.gateway.book
        for order in book.working_orders(client_id):
            self.send_all(book.open_order_messages(order))
        self.send(oo.open_order_end())

    def _on_ReqCompletedOrders(self, msg: inc.ReqCompletedOrders) -> None:
        """Every client's orders that ended today, then the end: IB does not filter completed orders by client id
        (the message has no clientId), and apiOnly only drops manual TWS orders, of which there are none here.
        While ``completed_orders_silent`` is set (a fault) the request is not answered, as when TWS is too busy."""
        if self.gateway.completed_orders_silent:
            return
        self.send_all(self.gateway.book.completed_order_messages())
        self.send(oo.completed_orders_end())

    def _on_ReqExecutions(self, msg: inc.ReqExecutions) -> None:
        """The day's executions that match the filter - of this client id only, as IB answers, unless this is
        the master API client (``FakeGateway(master_client_id=...)``), which gets every client's."""
        f = msg.filter
        since = _filter_time(f.time)
        master = self.gateway.master_client_id is not None and self._cid == self.gateway.master_client_id
        for rec in self.gateway.book.executions_today():
            e = rec.execution
            if (not master and e.client_id != self._cid) or (f.client_id and e.client_id != f.client_id) or (
                f.account and e.account != f.account) or (f.symbol and rec.symbol != f.symbol) or (
                f.side and _side(f.side) != e.side) or (since is not None and rec.ts_ns < since):  # fmt: skip
                continue
            self.send(oo.exec_details(msg.req_id, rec.contract, e))
            self.send(oo.commission_report(e.exec_id, rec.commission, acc.CURRENCY))
        self.send(oo.exec_details_end(msg.req_id))

    # ----------------------------------------------------------------------------------- accounts

    def _on_ReqPositions(self, msg: inc.ReqPositions) -> None:
        self.positions_sub = True
        self.send_all(acc.position_messages(self.gateway.venue, self.gateway.accounts))
        self.send(out.position_end())

    def _on_CancelPositions(self, msg: inc.CancelPositions) -> None:
        self.positions_sub = False

    def _on_ReqAccountUpdates(self, msg: inc.ReqAccountUpdates) -> None:
        account = msg.account or self.gateway.accounts[0]
        if not msg.subscribe:
            self.account_subs.discard(account)
            return
        self.account_subs.add(account)
        self.send_account_snapshot(account)
        self.send(out.account_download_end(account))

    def send_account_snapshot(self, account: str) -> None:
        venue = self.gateway.venue
        self.send_all(acc.account_update_messages(venue, account))
        self.send_all(acc.portfolio_messages(venue, account))
        self.send(out.update_account_time(dt.datetime.fromtimestamp(venue.now_ns / NS, tz=NY).strftime("%H:%M")))

    def _on_ReqAccountUpdatesMulti(self, msg: inc.ReqAccountUpdatesMulti) -> None:
        self.multi_subs[msg.req_id] = msg.account
        self.send_multi(msg.req_id, msg.account)
        self.send(out.account_update_multi_end(msg.req_id))

    def send_multi(self, req_id: int, account: str) -> None:
        gw = self.gateway
        for name in gw.accounts if account in ("", "All") else [account]:
            for key, value, currency in acc.account_values(gw.venue, name):
                self.send(out.account_update_multi(req_id, name, "", key, value, currency))

    def _on_CancelAccountUpdatesMulti(self, msg: inc.CancelAccountUpdatesMulti) -> None:
        self.multi_subs.pop(msg.req_id, None)

    def _on_ReqAccountSummary(self, msg: inc.ReqAccountSummary) -> None:
        self.summary_subs[msg.req_id] = msg.tags
        self.send_all(acc.summary_messages(self.gateway.venue, msg.req_id, self.gateway.accounts, msg.tags))
        self.send(out.account_summary_end(msg.req_id))

    def _on_CancelAccountSummary(self, msg: inc.CancelAccountSummary) -> None:
        self.summary_subs.pop(msg.req_id, None)

    def on_fill(self, account: str, symbol: str) -> None:
        """Push what a fill changed to this client's subscriptions, as TWS does."""
        venue = self.gateway.venue
        if self.positions_sub:
            self.send(acc.position_message(venue, account, symbol))
        if account in self.account_subs:
            self.send(acc.portfolio_message(venue, account, symbol))
            self.send_all(acc.account_update_messages(venue, account))
        for req_id, multi_account in self.multi_subs.items():
            if multi_account in ("", "All", account):
                self.send_multi(req_id, account)
        for req_id, tags in self.summary_subs.items():
            self.send_all(acc.summary_messages(venue, req_id, [account], tags))


def _epoch_dated(bar: out.Bar) -> out.Bar:
    if isinstance(bar.date, dt.datetime):
        return out.Bar(str(int(bar.date.timestamp())), bar.open, bar.high, bar.low, bar.close, bar.volume,
                       bar.wap, bar.bar_count)  # fmt: skip
    return bar


def _side(side: str) -> str:
    return {"BUY": "BOT", "SELL": "SLD"}.get(side.upper(), side.upper())


def _filter_time(text: str) -> int | None:
    """ExecutionFilter.time: ``yyyymmdd hh:mm:ss`` (UTC, or with a zone); empty means no filter."""
    if not text.strip():
        return None
    try:
        return parse_end(text if len(text.split(" ")) > 2 else text + " UTC", 0)
    except HistoryRequestError:
        return None
