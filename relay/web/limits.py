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

The bookkeeping is a few integer updates and one `bytes.find` per chunk received.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

log = logging.getLogger("relay.limits")

RESERVE = 64  # sockets over the cap still read, to answer /healthz and a clear 503
MAX_HEAD = 64 * 1024  # past this aiohttp refuses the head itself; stop buffering
LOG_EVERY_S = 10.0
TIMEOUT_ANSWER = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
IDLE, HEAD, BODY, CHUNKED = range(4)


class ConnectionLimits:
    """The counters and timeouts every watched connection shares (one per listener)."""

    def __init__(self, head_timeout_s: float, body_timeout_s: float, max_connections: int) -> None:
        self.head_timeout_s = head_timeout_s
        self.body_timeout_s = body_timeout_s
        self.max_connections = max_connections
        self.open = 0
        self.timed_out = 0
        self.crowded: set[Any] = set()  # aiohttp protocols accepted over the cap
        self.silent: dict[_Watched, None] = {}  # no byte yet, oldest first: evicted first
        self.evicted = 0
        self.evicting = 0  # closed to make room, their connection_lost still to come
        self._logged_at = 0.0

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _Watched(self, inner())

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


def _body_of(head: bytes) -> tuple[int, bool]:
    """(Content-Length, chunked) of a request head."""
    lower = head.lower()
    at = lower.find(b"\ncontent-length:")
    length = 0
    if at >= 0:
        value = lower[at + 16 : lower.find(b"\r", at + 16) % (len(lower) + 1)].strip()
        length = int(value) if value.isdigit() else 0
    at = lower.find(b"\ntransfer-encoding:")
    chunked = at >= 0 and b"chunked" in lower[at : lower.find(b"\n", at + 1) % (len(lower) + 1)]
    return length, chunked


class _Watched(asyncio.Protocol):
    """aiohttp's protocol for one socket, with the head and body clocks around it."""

    def __init__(self, limits: ConnectionLimits, inner: Any) -> None:
        self._limits = limits
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._state = IDLE
        self._buffer = b""  # the head so far, or the tail of a chunked body
        self._left = 0  # body bytes still to come
        self._closing = False  # closed by make_room, not yet gone

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        limits = self._limits
        limits.open += 1
        self._transport = transport  # type: ignore[assignment]
        if limits.open - limits.evicting > limits.max_connections and not limits.make_room():
            if limits.open > limits.max_connections + RESERVE:
                transport.abort()  # type: ignore[attr-defined]
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
        self._stop()
        inner, self._inner = self._inner, None
        if inner is not None:
            self._limits.crowded.discard(inner)
            inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if self._state == HEAD and not self._buffer:
            self._limits.silent.pop(self, None)  # it spoke: no longer evicted first
        self._scan(data)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self._inner is None else self._inner.eof_received()

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    # -- the clocks --------------------------------------------------------------------------

    def _start(self, state: int, seconds: float) -> None:
        self._stop()
        self._state = state
        self._timer = asyncio.get_running_loop().call_later(seconds, self._expired)

    def _stop(self) -> None:
        self._state = IDLE
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
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
            if state == IDLE:  # the first byte of the next request starts its clock
                self._start(HEAD, self._limits.head_timeout_s)
                self._buffer = b""
            elif state == HEAD:
                buf = self._buffer + data[pos:]
                at = buf.find(b"\r\n\r\n")
                if at < 0:
                    self._buffer = buf[-MAX_HEAD:]
                    return
                pos += at + 4 - len(self._buffer)
                self._buffer = b""
                length, chunked = _body_of(buf[:at])
                if chunked:
                    self._start(CHUNKED, self._limits.body_timeout_s)
                elif length:
                    self._start(BODY, self._limits.body_timeout_s)
                    self._left = length
                else:
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
