"""Connection limits on the listening socket: slow clients and too many of them.

aiohttp closes a connection that stays idle between requests (`server.idle_timeout`, its
keep-alive timeout), but not one that trickles a request head a byte at a time, nor one
that never sends its body, and it accepts every connection it is offered. So each
accepted socket's protocol is wrapped in `_Watched`, which sees the bytes go by:

- **head**: a request head (`…\\r\\n\\r\\n`) must be whole within `server.head_timeout` of
  the connection opening or of the request's first byte;
- **body**: a body of `Content-Length` bytes (or a chunked one, up to its last chunk) must be
  whole within `server.body_timeout` of its head;
- a late client gets `408 Request Timeout` (a silent one nothing) and the socket closes;
- **cap**: past `server.max_connections` open sockets, the oldest one that has not sent a
  byte since it connected is closed to make room (thousands of idle sockets cannot lock
  clients out); when none is silent, new sockets are still read but answered `503` (except
  `/healthz` and `/readyz`, so a monitor sees a live process); past the cap plus `RESERVE`
  they are closed at once. One log line per crowded spell (at most one per 10 s).

The bookkeeping per request is a `bytes.find` and a regex search of its head when the
request is whole in one read (the common case); one that is not also puts its connection
in a set until it is (the deadline). One sweep every 250 ms closes the late connections.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web

log = logging.getLogger("relay.limits")

RESERVE = 64  # sockets over the cap still read, to answer /healthz and a clear 503
MAX_HEAD = 64 * 1024  # past this aiohttp refuses the head itself; stop buffering
LOG_EVERY_S = 10.0
SWEEP_S = 0.25  # how often late connections are looked for (the timeouts' resolution)
TIMEOUT_ANSWER = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
IDLE, HEAD, BODY, CHUNKED = range(4)


class ConnectionLimits:
    """The counters and deadlines every watched connection shares (one per listener).

    A connection mid-request sits in `pending` with its deadline; one sweep every
    `SWEEP_S` closes the late ones, so a request costs a set add and discard, not a timer.
    """

    def __init__(self, head_timeout_s: float, body_timeout_s: float, max_connections: int) -> None:
        self.head_timeout_s = head_timeout_s
        self.body_timeout_s = body_timeout_s
        self.max_connections = max_connections
        self.open = 0
        self.timed_out = 0
        self.crowded: set[Any] = set()  # aiohttp protocols accepted over the cap
        self.silent: dict[_Watched, None] = {}  # no byte yet, oldest first: evicted first
        self.pending: set[_Watched] = set()  # a head or body on its way, with a deadline
        self.evicted = 0
        self.evicting = 0  # closed to make room, their connection_lost still to come
        self.clock: Callable[[], float] = time.monotonic  # the loop's, once it runs
        self._sweeper: asyncio.TimerHandle | None = None
        self._logged_at = 0.0

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _Watched(self, inner())

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.clock = loop.time
        self._sweeper = loop.call_later(SWEEP_S, self._sweep)

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _sweep(self) -> None:
        now = self.clock()
        for conn in [c for c in self.pending if c.deadline <= now]:
            conn.expired()
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_S, self._sweep)

    def over_cap(self, protocol: object) -> bool:
        """Whether a request on this connection is to be refused: it came in over the cap,
        and the listener is still crowded (once it is not, the connection is served)."""
        return bool(self.crowded) and self.open > self.max_connections and protocol in self.crowded

    def make_room(self) -> bool:
        """Close the oldest silent connection; False if every open one has sent something."""
        while self.silent:
            oldest = next(iter(self.silent))
            del self.silent[oldest]
            if oldest.close_silent():
                self.evicted += 1
                self._note("closing the oldest connections that have sent nothing")
                return True
        self._note("new connections get 503 except /healthz and /readyz")
        return False

    def _note(self, what: str) -> None:
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            self._logged_at = now
            log.warning(
                "connection cap reached: %d open (server.max_connections = %d); %s",
                self.open,
                self.max_connections,
                what,
            )


# Whether a head may declare a body; one regex search is cheaper here than four `in` tests.
_BODY_HINT = re.compile(rb"\r\n(?:content-length|transfer-encoding):", re.IGNORECASE)
_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r]*chunked", re.IGNORECASE)


def whole_request(data: bytes) -> bool:
    """Whether `data` is exactly one whole request (the read between requests)."""
    at = data.find(b"\r\n\r\n")
    if at < 0:
        return False
    if at == len(data) - 4:
        return _BODY_HINT.search(data) is None
    m = _LENGTH.search(data, 0, at + 2)
    return m is not None and len(data) == at + 4 + int(m.group(1))


def _body_of(head: bytes, start: int, end: int) -> tuple[int, bool]:
    """(Content-Length, chunked) of the request head in `head[start:end]`."""
    m = _LENGTH.search(head, start, end)
    return (int(m.group(1)) if m else 0), _CHUNKED.search(head, start, end) is not None


class _Watched(asyncio.Protocol):
    """aiohttp's protocol for one socket, with the head and body deadlines around it."""

    def __init__(self, limits: ConnectionLimits, inner: Any) -> None:
        self._limits = limits
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._state = IDLE
        self.deadline = 0.0
        self._buffer = b""  # the head so far, or the tail of a chunked body
        self._left = 0  # body bytes still to come
        self._closing = False  # closed by make_room, not yet gone
        self._quiet = True  # nothing received yet

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        limits = self._limits
        limits.open += 1
        self._transport = transport = cast(asyncio.Transport, transport)  # a socket's
        if limits.open - limits.evicting > limits.max_connections and not limits.make_room():
            if limits.open > limits.max_connections + RESERVE:
                transport.abort()
                self._inner = None
                return
            limits.crowded.add(self._inner)
        limits.silent[self] = None
        self._start(HEAD, limits.head_timeout_s)
        self._inner.connection_made(transport)

    def close_silent(self) -> bool:
        """Close this connection to make room; False if it is gone already."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return False
        self._closing = True
        self._limits.evicting += 1
        transport.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        limits = self._limits
        limits.open -= 1
        if self._closing:
            limits.evicting -= 1
        limits.silent.pop(self, None)
        limits.pending.discard(self)
        inner, self._inner = self._inner, None
        if inner is not None:
            limits.crowded.discard(inner)
            inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        inner = self._inner
        if inner is None:
            return
        if self._quiet:  # its first bytes: no longer evicted first
            self._quiet = False
            self._limits.silent.pop(self, None)
            self._stop()  # (a fresh request's clock starts in _scan)
        # The common cases, a whole request in one read between requests, need no
        # bookkeeping at all: a bodiless head (a pixel, a click, a GET), or a head and all of
        # the Content-Length body it declares (an API POST). A head that also says
        # Transfer-Encoding is refused by aiohttp's parser, so the length settles it.
        if self._state != IDLE or not whole_request(data):
            self._scan(data)
        inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self._inner is None else self._inner.eof_received()

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    # -- the deadlines -----------------------------------------------------------------------

    def _start(self, state: int, seconds: float) -> None:
        self._state = state
        self.deadline = self._limits.clock() + seconds
        self._limits.pending.add(self)

    def _stop(self) -> None:
        self._state = IDLE
        self._limits.pending.discard(self)

    def expired(self) -> None:
        """Past its deadline: 408 if a request had begun, and close."""
        self._limits.pending.discard(self)
        transport = self._transport
        if transport is not None and not transport.is_closing():
            self._limits.timed_out += 1
            if self._state != HEAD or self._buffer:  # it had started a request: say why
                transport.write(TIMEOUT_ANSWER)
            transport.close()

    def _scan(self, data: bytes) -> None:
        """Follow request boundaries through `data` (pipelined requests included)."""
        pos, end = 0, len(data)
        while pos < end:
            state = self._state
            if state == IDLE:  # the first byte of the next request starts its clock, which
                # is only registered if the head is not whole in this read (below)
                self._state = HEAD
                self._buffer = b""
            elif state == HEAD:
                if self._buffer:  # a head split across reads: rare, so copying is fine
                    seen = len(self._buffer)
                    buf = self._buffer + data[pos:]
                    at = buf.find(b"\r\n\r\n")
                    if at < 0:
                        self._buffer = buf[-MAX_HEAD:]
                        return
                    length, chunked = _body_of(buf, 0, at + 2)
                    pos += at + 4 - seen
                else:
                    at = data.find(b"\r\n\r\n", pos)
                    if at < 0:  # (an empty buffer: this read began the request)
                        self._start(HEAD, self._limits.head_timeout_s)
                        self._buffer = data[pos:][-MAX_HEAD:]
                        return
                    length, chunked = _body_of(data, pos, at + 2)
                    pos = at + 4
                self._buffer = b""
                if chunked:
                    self._start(CHUNKED, self._limits.body_timeout_s)
                elif length > end - pos:  # the body is still on its way: its clock starts
                    self._start(BODY, self._limits.body_timeout_s)
                    self._left = length
                else:  # no body, or all of it in this read (a small POST): nothing to time
                    pos += length
                    self._stop()
            elif state == BODY:
                take = min(self._left, end - pos)
                self._left -= take
                pos += take
                if not self._left:
                    self._stop()
            else:  # CHUNKED: until the last chunk (a rare false end only stops the clock early)
                buf = self._buffer + data[pos:]
                at = buf.find(b"0\r\n\r\n")
                if at < 0:
                    self._buffer = buf[-4:]
                    return
                pos += at + 5 - len(self._buffer)
                self._buffer = b""
                self._stop()


class ListenSite(web.BaseSite):
    """aiohttp's TCP site, with every accepted socket watched by `limits`."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, limits: ConnectionLimits
    ) -> None:
        super().__init__(runner)
        self._host, self._port, self._limits = host, port, limits

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._limits.factory(server),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
        )
        self._limits.start()

    async def stop(self) -> None:
        self._limits.stop()
        await super().stop()
