"""A local spool for tracking events while the shared database is unreachable.

A tracking link must never break: with `backend = "postgres"`, a pixel, click,
unsubscribe or signup whose commit fails with `StorageUnavailable` is written here — a
small SQLite file beside the node (`storage.path` with `.spool.db`), fsynced before the
answer — and the daemon's upkeep moves it into PostgreSQL once the database is back.
Moving is idempotent: an event appended but not yet deleted from the spool when the
node dies is appended again, and the store skips an id it already has.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import orjson

from ..models import NewEvent

log = logging.getLogger("relay.spool")

MAX_EVENTS = 1_000_000  # ~300 MB; past it a tracking event is dropped (and logged)
DRAIN_BATCH = 1000


def _pack(e: NewEvent) -> bytes:
    return orjson.dumps(
        [e.id, e.event_type, e.received_at, e.body.decode(), e.deliveries, e.first_key]
    )


def _unpack(raw: bytes) -> NewEvent:
    eid, etype, received_at, body, deliveries, first_key = orjson.loads(raw)
    return NewEvent(
        eid,
        etype,
        received_at,
        body.encode(),
        tuple((d, due) for d, due in deliveries),
        True,  # it may have reached the store before a crash: let the store skip it
        tuple(first_key) if first_key else None,
    )


def _deleter(last: int):
    def delete(db: sqlite3.Connection) -> None:
        with db:
            db.execute("DELETE FROM spool WHERE seq <= ?", (last,))

    return delete


class Spool:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()  # one statement at a time on the one connection
        self.count = 0

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY, event BLOB)")
            self.count = db.execute("SELECT COUNT(*) FROM spool").fetchone()[0]
            self._db = db
        return self._db

    async def open(self) -> None:
        """Pick up what a previous run left (drained by the next `drain`)."""
        if self.path.exists():
            await self._run(lambda db: None)
            if self.count:
                log.warning("spool holds %d tracking events from before; draining", self.count)

    async def _run(self, fn):
        async with self._lock:
            return await asyncio.to_thread(lambda: fn(self._open()))

    async def put(self, events: list[NewEvent]) -> bool:
        """Keep events until the store is back; False when the spool is full."""
        if self.count + len(events) > MAX_EVENTS:
            return False

        def write(db: sqlite3.Connection) -> None:
            with db:
                db.executemany(
                    "INSERT INTO spool (event) VALUES (?)", [(_pack(e),) for e in events]
                )

        await self._run(write)
        self.count += len(events)
        return True

    async def drain(self, append) -> int:
        """Move spooled events into the store with `append(events)`, oldest first, in
        batches; stop at the first failure (the store is still away). Returns how many."""
        moved = 0
        while self.count > 0:
            rows = await self._run(
                lambda db: db.execute(
                    "SELECT seq, event FROM spool ORDER BY seq LIMIT ?", (DRAIN_BATCH,)
                ).fetchall()
            )
            if not rows:
                self.count = 0
                break
            await append([_unpack(raw) for _, raw in rows])  # raises while still away
            await self._run(_deleter(rows[-1][0]))
            self.count -= len(rows)
            moved += len(rows)
        return moved

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
