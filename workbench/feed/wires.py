"""Wires: one websocket connection's frames, spoken by a library, for `WebSocketFeed`.

Two libraries behind one interface, picked by name (`WIRES`, the keys of `OPENERS`):

- `picows` (the default): a compiled (Cython) RFC 6455 client. Its frame parser costs a
  fraction of a pure-Python one (~4.5 µs a frame for `websockets` here): over loopback the
  whole feed path (frames, normalize, BookSync) takes ~4-6 µs of client CPU a message against
  ~11 µs with `websockets` and the same normalizer
  (`python -m workbench.bench run feed.ws_loopback`).
- `websockets`: the `websockets` library's Sans-I/O `ClientProtocol` on an asyncio transport
  (pure Python), the reference implementation and the benchmark's baseline.

Both do the same for the feed: every frame of one socket read is stamped with the
`time.perf_counter_ns()` of that read (the receive time; frames behind the first of a read
wait for it, which the latency figures show), fragmented messages are joined from their
CONTINUATION frames, pings are answered, a close from the server is answered, and a protocol
error (a data frame inside a fragmented message, a CONTINUATION without one, a masked or
malformed frame: RFC 6455 sections 5.1-5.4) fails the connection with close code 1002 and
delivers nothing of it or after it.

    wire = await open_wire("picows", url, deliver, timeout_s)   # after the opening handshake
    # wss://: open_wire(..., ca_file=PATH) trusts only that CA's certificates
    wire.send_text(b"...")       # FeedError once the connection is closing or closed
    await wire.wait_closed()     # the TCP connection ended; why: wire.closed_info
    wire.close("reason")         # close frame 1000, then the TCP close; wire.abort(): at once

deliver(message: bytes, recv_ns: int) -> None runs on the loop for each message in order;
an exception from it is kept in `wire.error` and drops the connection. `wire.last_read_ns`
is the stamp of the last read that completed a frame (the open time before any).
Opening raises OPEN_ERRORS (refused, timed out, failed handshake, bad URL).

Receive buffer (picows): its read buffer doubles whenever a socket read fills it and never
shrinks, and one read's frames are delivered in one callback. With the kernel's receive
autotuning a reader that falls behind (flat out, or a slow strategy) gets reads of up to
net.ipv4.tcp_rmem's max (32 MiB here): the buffer grew to that (RSS +32 MiB, the growth issue
14 found) and one read held the loop for up to ~9 s, long enough for the silence watchdog to
reconnect. So the picows socket's SO_RCVBUF is set to RCVBUF_BYTES (Linux doubles it for its
bookkeeping): reads, the buffer and a callback's work stay bounded (the engine on the simulator
flat out, a shared 2-core machine: RSS flat from ~0.2M events on instead of growing until
~1.5M, the feed loop's longest turn under ~0.7 s instead of 3-9 s, events/s the same within
noise). The cost: no autotuning, so one connection's throughput is
at most about RCVBUF_BYTES per round trip (~5 MB/s at 200 ms), far above a market-data
connection's.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from picows import (
    WSCloseCode,
    WSError,
    WSFrame,
    WSListener,
    WSMsgType,
    WSProtocolError,
    WSTransport,
    ws_connect,
)
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, InvalidState, InvalidURI
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import WebSocketURI, parse_uri

from workbench.errors import FeedError
from workbench.feed.tls import client_context

log = logging.getLogger("workbench.feed.wires")

Deliver = Callable[[bytes, int], None]

OPEN_ERRORS = (OSError, TimeoutError, WSError, InvalidHandshake, InvalidURI)
MAX_FRAME_BYTES = 64 * 1024 * 1024  # picows: larger frames fail the connection (code 1009)
CLOSE_TIMEOUT_S = 1.0  # websockets: TCP close this long after the closing handshake began
RCVBUF_BYTES = 1 << 20  # picows: the socket's SO_RCVBUF (see the module docstring)
TEXT, BINARY, CONTINUATION, CLOSE, PING = (
    WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION, WSMsgType.CLOSE, WSMsgType.PING)


class Wire(Protocol):
    """What WebSocketFeed uses of a connection (see the module docstring)."""

    error: BaseException | None
    closed_info: str
    last_read_ns: int

    def send_text(self, frame: bytes) -> None: ...

    async def wait_closed(self) -> None: ...

    def close(self, reason: str) -> None: ...

    def abort(self) -> None: ...


async def _open_picows(url: str, deliver: Deliver, timeout_s: float,
                       ca_file: str | None) -> PicowsWire:
    transport, wire = await ws_connect(
        lambda: PicowsWire(deliver), url, ssl_context=_ssl_context(url, ca_file),
        websocket_handshake_timeout=timeout_s, max_redirects=0, max_frame_size=MAX_FRAME_BYTES,
        logger_name=log.getChild("picows"), enable_auto_pong=False, use_aiofastnet=False)
    if wire is None:  # picows hands back no listener when the peer left mid-handshake
        raise ConnectionError("closed during the handshake")
    sock = transport.underlying_transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
    return wire


async def _open_websockets(url: str, deliver: Deliver, timeout_s: float,
                           ca_file: str | None) -> WebsocketsWire:
    loop = asyncio.get_running_loop()
    uri = parse_uri(url)
    _, wire = await loop.create_connection(lambda: WebsocketsWire(uri, deliver, loop), uri.host,
                                           uri.port, ssl=_ssl_context(url, ca_file))
    await wire.opened
    return wire


OPENERS: dict[str, Callable[[str, Deliver, float, str | None], Awaitable[Wire]]] = {
    "picows": _open_picows, "websockets": _open_websockets}
WIRES = tuple(OPENERS)


async def open_wire(kind: str, url: str, deliver: Deliver, timeout_s: float,
                    ca_file: str | None = None) -> Wire:
    """Connect to `url` (ws:// or wss://) with library `kind` (a key of OPENERS: KeyError
    otherwise) and complete the opening handshake within `timeout_s`; wss:// verifies the
    server against the system's CAs, or only those in `ca_file` (PEM). Raises OPEN_ERRORS when
    the connection cannot be opened (ssl.SSLCertVerificationError, an OSError, when the
    certificate does not verify)."""
    async with asyncio.timeout(timeout_s):
        return await OPENERS[kind](url, deliver, timeout_s, ca_file)


def _ssl_context(url: str, ca_file: str | None) -> ssl.SSLContext | None:
    """The client TLS context for wss:// (`tls.client_context`: made once per process and CA
    file), None for ws://."""
    return client_context(ca_file) if url.startswith("wss://") else None


class PicowsWire(WSListener):
    """The picows listener. picows calls `on_ws_frame` for each complete frame of a socket
    read, in order; the last of a read has `last_in_buffer` set, so the next frame starts a new
    read and takes a new stamp. Pings are answered here (so they count as frames for the
    feed's silence check); picows fails masked or malformed frames itself, and a
    WSProtocolError raised here makes it send that close code and disconnect."""

    def __init__(self, deliver: Deliver) -> None:
        self.deliver = deliver
        self.transport: WSTransport | None = None
        self.error: BaseException | None = None
        self.closed_info = ""
        self.last_read_ns = time.perf_counter_ns()
        self._parts: list[bytes] | None = None  # a fragmented message's frames so far
        self._new_read = True

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if self._new_read:
            self.last_read_ns = time.perf_counter_ns()
        self._new_read = frame.last_in_buffer
        if transport.is_close_frame_sent:  # failing or closing: nothing more is delivered
            return
        kind = frame.msg_type
        if kind is TEXT or kind is BINARY:
            if self._parts is not None:
                raise WSProtocolError(WSCloseCode.PROTOCOL_ERROR,
                                      "a data frame inside a fragmented message")
            if frame.fin:
                self._deliver(frame.get_payload_as_bytes())
            else:
                self._parts = [frame.get_payload_as_bytes()]
        elif kind is CONTINUATION:
            if self._parts is None:
                raise WSProtocolError(WSCloseCode.PROTOCOL_ERROR,
                                      "a continuation frame without a message to continue")
            self._parts.append(frame.get_payload_as_bytes())
            if frame.fin:
                message, self._parts = b"".join(self._parts), None
                self._deliver(message)
        elif kind is PING:
            transport.send_pong(frame.get_payload_as_bytes())
        elif kind is CLOSE:
            code = frame.get_close_code()
            self.closed_info = f"closed by the server: {int(code)} {frame.get_close_message()!r}"
            transport.send_close(code)
            transport.disconnect()

    def _deliver(self, message: bytes) -> None:
        try:
            self.deliver(message, self.last_read_ns)
        except Exception as exc:  # the sink failed: stop this connection with it
            self.error = exc
            self.abort()

    def send_text(self, frame: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_disconnected or transport.is_close_frame_sent:
            raise FeedError("websocket connection is closed")
        transport.send(TEXT, frame)

    async def wait_closed(self) -> None:
        try:
            await self.transport.wait_disconnected()
        except WSError as exc:  # a protocol error picows or this listener failed it with
            self.closed_info = f"protocol error: {exc}"
        if not self.closed_info:
            self.closed_info = "connection lost without a close frame"

    def close(self, reason: str) -> None:
        transport = self.transport
        if transport is not None and not transport.is_disconnected:
            if not transport.is_close_frame_sent:
                transport.send_close(WSCloseCode.OK, reason.encode())
            transport.disconnect()

    def abort(self) -> None:
        if self.transport is not None and not self.transport.is_disconnected:
            self.transport.disconnect(graceful=False)


class WebsocketsWire(asyncio.Protocol):
    """websockets' Sans-I/O ClientProtocol driven by an asyncio transport. `opened` resolves
    when the opening handshake succeeded (or fails with its error); the protocol answers pings
    and closes and fails protocol errors with 1002 itself."""

    def __init__(self, uri: WebSocketURI, deliver: Deliver,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.deliver = deliver
        self.loop = loop
        self.protocol = ClientProtocol(uri, max_size=None)
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.error: BaseException | None = None
        self.closed_info = ""
        self.last_read_ns = time.perf_counter_ns()
        self._parts: list[bytes] = []
        self._abort_later: asyncio.TimerHandle | None = None

    # ---- asyncio.Protocol --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.protocol.send_request(self.protocol.connect())
        self._write()

    def data_received(self, data: bytes) -> None:
        recv_ns = time.perf_counter_ns()
        protocol = self.protocol
        protocol.receive_data(data)
        deliver = self.deliver
        self.last_read_ns = recv_ns
        try:
            for event in protocol.events_received():
                if type(event) is not Frame:  # the handshake response
                    self._handshake_done()
                    continue
                opcode = event.opcode
                if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                    if event.fin:
                        deliver(bytes(event.data), recv_ns)
                    else:
                        self._parts = [bytes(event.data)]
                elif opcode is Opcode.CONT:
                    self._parts.append(bytes(event.data))
                    if event.fin:
                        message, self._parts = b"".join(self._parts), []
                        deliver(message, recv_ns)
        except Exception as exc:  # the sink failed: stop this connection with it
            self.error = exc
            self.abort()
            return
        self._write()
        self._close_if_expected()

    def eof_received(self) -> bool:
        self.protocol.receive_eof()
        self._write()
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        if self._abort_later is not None:
            self._abort_later.cancel()
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
            self.opened.exception()  # retrieved: a failed open is reported by open_wire
        if not self.lost.done():
            self.lost.set_result(None)

    # ---- actions -----------------------------------------------------------------------
    def _handshake_done(self) -> None:
        if self.opened.done():
            return
        if self.protocol.handshake_exc is not None:
            self.opened.set_exception(self.protocol.handshake_exc)
        else:
            self.opened.set_result(None)

    def _write(self) -> None:
        transport = self.transport
        for data in self.protocol.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                transport.write_eof()

    def _close_if_expected(self) -> None:
        if self.protocol.close_expected() and self._abort_later is None:
            self._abort_later = self.loop.call_later(CLOSE_TIMEOUT_S, self.abort)

    def send_text(self, frame: bytes) -> None:
        try:
            self.protocol.send_text(frame)
        except InvalidState as exc:
            raise FeedError(f"websocket connection is closed: {exc}") from exc
        self._write()

    async def wait_closed(self) -> None:
        await self.lost
        closed = self.protocol.state is State.CLOSED
        self.closed_info = (f"closed: {self.protocol.close_exc}" if closed
                            else "connection lost without a close frame")

    def close(self, reason: str) -> None:
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(1000, reason)
            self._write()
            self._close_if_expected()
        else:
            self.abort()

    def abort(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()
