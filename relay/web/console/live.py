"""The live tail: the dispatch log's newest lines in a ring buffer, streamed as SSE.

`DispatchLog.listeners` hands every batch of lines to `LiveTail.feed` as it is written;
the buffer keeps the last `SIZE` with increasing ids, so an `EventSource` that reconnects
with `Last-Event-ID` resumes where it left off. Ids start at the start-up time in
microseconds, so they keep increasing across a restart (unless a run wrote
more than a million lines a second). `close()` (on shutdown) wakes
every open stream and ends it, so shutdown does not wait for them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterator
from itertools import islice
from typing import Any

import orjson

from ...admin import mask_email
from ...tail import matches, pretty

log = logging.getLogger("relay.console")

SIZE = 1000
KEEPALIVE_S = 15.0


class LiveTail:
    def __init__(self, size: int = SIZE) -> None:
        self.lines: deque[tuple[int, dict[str, Any]]] = deque(maxlen=size)
        self.next_id = int(time.time() * 1_000_000)  # above any id of an earlier run
        self.waiters: set[asyncio.Event] = set()
        self.closed = False

    def feed(self, lines: list[dict[str, Any]]) -> None:
        """The dispatch log's listener: must never raise into the writer."""
        try:
            for line in lines:
                self.next_id += 1
                self.lines.append((self.next_id, line))
            for waiter in self.waiters:
                waiter.set()
        except Exception:  # pragma: no cover - a bug here must not stop deliveries
            log.exception("live tail feed failed")

    @property
    def last_id(self) -> int:
        return self.next_id

    def after(self, last: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """Buffered lines with an id above `last`, oldest first."""
        if not self.lines or self.lines[-1][0] <= last:
            return iter(())
        start = max(0, len(self.lines) - (self.lines[-1][0] - last))  # ids are contiguous
        return iter([item for item in islice(self.lines, start, None) if item[0] > last])

    def recent(self, filters: dict[str, str | None], n: int, show_emails: bool) -> list[dict]:
        out = []
        for line_id, line in reversed(self.lines):
            if matches(line, **filters):
                out.append(render(line_id, line, show_emails))
                if len(out) == n:
                    break
        out.reverse()
        return out

    def close(self) -> None:
        self.closed = True
        for waiter in self.waiters:
            waiter.set()


def render(line_id: int, line: dict[str, Any], show_emails: bool) -> dict[str, Any]:
    body = pretty(line)  # as `relay tail` prints it
    return {
        "id": line_id,
        "text": body if show_emails else mask_email(body),
        "outcome": line.get("outcome") or ("audit" if "audit" in line else ""),
        "destination": line.get("destination") or line.get("target") or "",
        "event_id": line.get("event_id"),
    }


def sse(item: dict[str, Any]) -> bytes:
    return b"id: %d\ndata: %s\n\n" % (item["id"], orjson.dumps(item))
