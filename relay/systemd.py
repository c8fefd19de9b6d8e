"""systemd's notify protocol (sd_notify(3)) without libsystemd: one datagram per message.

Under `Type=notify` systemd passes `NOTIFY_SOCKET` (a path, or `@name` in the abstract
namespace) and, with `WatchdogSec=`, `WATCHDOG_USEC`. relay tells it:

- `READY=1` once storage, web and dispatchers are up (systemctl start returns then);
- `STATUS=...` with ingest and backlog counts, refreshed every STATUS_EVERY_S;
- `WATCHDOG=1` every WATCHDOG_USEC/2, sent by a task on the event loop itself, so a blocked
  loop stops the pings and systemd kills and restarts the process;
- `RELOADING=1` + `MONOTONIC_USEC=` then `READY=1` around a SIGHUP reload; `STOPPING=1`.

Without `NOTIFY_SOCKET` (not under systemd) every call does nothing. A failed send is
logged once and never raised: systemd trouble must not take the relay down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("relay.notify")

STATUS_EVERY_S = 5.0


def _address(value: str) -> str | None:
    """`@name` is the abstract namespace: a leading NUL byte on the wire."""
    if not value or value[0] not in "/@":
        return None  # e.g. vsock: addresses not used on a single box
    return "\0" + value[1:] if value[0] == "@" else value


class Notifier:
    def __init__(self, socket_path: str | None, watchdog_s: float | None = None) -> None:
        self.address = _address(socket_path) if socket_path else None
        self.watchdog_s = watchdog_s  # systemd's watchdog timeout; we ping at half of it
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Notifier:
        watchdog_s = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog_s = int(usec) / 1e6
        return cls(env.get("NOTIFY_SOCKET"), watchdog_s)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> None:
        """Send `KEY=value` lines as one datagram."""
        if self.address is None:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)  # a full queue drops a ping, never blocks the loop
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            if not self._warned:
                log.warning("cannot notify systemd at %r: %s", self.address, exc)
                self._warned = True

    def ready(self, status: str | None = None) -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> None:
        # MONOTONIC_USEC lets systemd match the READY=1 that follows (Type=notify-reload).
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Heartbeat:
    """The two background tasks that keep systemd informed: watchdog pings and STATUS.

    They are separate so a slow status query (it reads the database) can never delay a
    watchdog ping: only a blocked event loop may do that.
    """

    def __init__(self, notifier: Notifier, status: Callable[[], Awaitable[str]]) -> None:
        self.notifier = notifier
        self.status = status
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        if not self.notifier.enabled:
            return
        if self.notifier.watchdog_s:
            self._tasks.append(asyncio.create_task(self._watchdog(), name="notify:watchdog"))
        self._tasks.append(asyncio.create_task(self._status(), name="notify:status"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _watchdog(self) -> None:
        assert self.notifier.watchdog_s
        every = self.notifier.watchdog_s / 2
        while True:
            self.notifier.send("WATCHDOG=1")
            await asyncio.sleep(every)

    async def _status(self) -> None:
        """Best effort: a failed refresh is logged and tried again next time."""
        while True:
            try:
                self.notifier.status(await self.status())
            except Exception as exc:
                log.warning("status refresh failed: %s", exc)
            await asyncio.sleep(STATUS_EVERY_S)


async def status_line(runtime: Runtime) -> str:
    """What `systemctl status relay` shows: events in since start, backlog, dead, circuits."""
    stats = await runtime.metrics.stats(runtime.store)
    backlog = sum(d.pending + d.leased for d in stats.destinations.values())
    dead = sum(d.dead for d in stats.destinations.values())
    text = f"ingested {sum(runtime.ingested.values())}, backlog {backlog}, dead {dead}"
    tripped = [n for n, d in runtime.dispatchers.items() if d.state == "circuit_open"]
    return text + (f", circuit open: {', '.join(tripped)}" if tripped else "")
