"""The dispatch log: one JSON line per delivery attempt, reopened on SIGHUP."""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

import orjson

FLUSH_S = 0.1  # how stale `relay tail -f` may be; one write a tick instead of one a line


_second: list = [-1, ""]  # the last whole second formatted, and its text up to the seconds


def iso_ms(ts: float | None) -> str | None:
    """ISO 8601 UTC with milliseconds: `2026-11-26T05:32:24.123Z` (one per log line, so the
    date part is formatted once a second)."""
    if ts is None:
        return None
    # Rounded to the microsecond first, then cut to the millisecond, as datetime does.
    frac, whole = math.modf(ts)
    us = round(frac * 1_000_000)
    if us >= 1_000_000:
        whole, us = whole + 1, us - 1_000_000
    if whole != _second[0]:
        _second[0] = whole
        _second[1] = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{_second[1]}.{us // 1000:03d}Z"


class DispatchLog:
    def __init__(self, path: str, node: str | None = None) -> None:
        self.path = path
        self.node = node
        self._file: IO[bytes] | None = None
        # Called with each batch of lines written (the deliveries metric counts them).
        self.on_write: Callable[[list[dict[str, Any]]], None] | None = None
        # Called with every batch of lines appended, audit lines too (the console's live tail).
        self.listeners: set[Callable[[list[dict[str, Any]]], None]] = set()
        self._flush_handle: asyncio.TimerHandle | None = None
        self.reopen()

    def reopen(self) -> None:
        """Close and open the file again: after logrotate moved it, we write to a new one."""
        if self.path == "-":
            self._file = sys.stdout.buffer
            return
        old, self._file = self._file, open(self.path, "ab")  # noqa: SIM115 - lives as long as we do
        if old is not None:
            old.close()  # flushes what was buffered for the old file

    def write_audit(self, entry: dict[str, Any]) -> None:
        """An operator's action (console, admin API): `{"ts", "audit": action, ...}`."""
        self._append([{"ts": entry["ts"], "audit": entry["action"], **entry}])

    def write(self, lines: list[dict[str, Any]]) -> None:
        """Buffer the lines; they reach the file within FLUSH_S (one write for many lines)."""
        if lines and self.on_write is not None:
            self.on_write(lines)
        self._append(lines)

    def _append(self, lines: list[dict[str, Any]]) -> None:
        if not lines or self._file is None:
            return
        if self.node is not None:
            for line in lines:
                line["node"] = self.node
        for listener in tuple(self.listeners):
            listener(lines)
        self._file.write(b"".join(orjson.dumps(line) + b"\n" for line in lines))
        if self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a CLI command): write through
                self.flush()
            else:
                self._flush_handle = loop.call_later(FLUSH_S, self.flush)

    def flush(self) -> None:
        self._flush_handle = None
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self.flush()
        if self._file is not None and self.path != "-":
            self._file.close()
        self._file = None


def attempt_line(
    ts: float,
    event_id: str,
    event_type: str,
    destination: str,
    attempt: int,
    outcome: str,
    status: int | None = None,
    ms: float | None = None,
    error: str | None = None,
    next_attempt: float | None = None,
) -> dict[str, Any]:
    return {
        "ts": iso_ms(ts),
        "event_id": event_id,
        "event_type": event_type,
        "destination": destination,
        "attempt": attempt,
        "outcome": outcome,
        "status": status,
        "ms": None if ms is None else round(ms, 1),
        "error": error,
        "next_attempt": iso_ms(next_attempt),
    }
