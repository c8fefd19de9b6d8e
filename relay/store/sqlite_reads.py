"""The SQLite store's reads: counts, dead letters, one event's story, attempt history.

They run on the reader connection and never wait for the writer (WAL). Counts come from
the `counters` table the writer's triggers keep, so none of these scans the big tables.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import aiosqlite

from ..models import State
from .base import (
    AckHistory,
    AttemptFilter,
    AttemptRecord,
    AuditEntry,
    DeadDelivery,
    DeliveryDetail,
    DestinationStats,
    EventDetail,
    Stats,
    StorageUnavailable,
)

_ATTEMPT_COLUMNS = (
    "a.delivery_id, e.id, a.event_type, a.destination, a.attempt, a.ts, a.outcome, a.status,"
    " a.ms, a.error, a.response"
)
_ATTEMPT_FROM = " FROM attempts a JOIN deliveries d ON d.id = a.delivery_id JOIN events e ON e.seq = d.event_seq"


def conditions(*terms: tuple[str, tuple | None]) -> tuple[str, list[Any]]:
    """`a AND b …` of the terms whose parameters are not None (`()`: a term without any),
    and the parameters in order: the filters of dead lists, replays and attempt pages."""
    used = [(sql, params) for sql, params in terms if params is not None]
    return " AND ".join(sql for sql, _ in used) or "1", [p for _, ps in used for p in ps]


class SqliteReads:
    _read: aiosqlite.Connection | None

    async def _fetch(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        assert self._read is not None
        try:
            return list(await self._read.execute_fetchall(sql, params))
        except sqlite3.OperationalError as exc:
            raise StorageUnavailable(str(exc)) from exc

    async def stats(self) -> Stats:
        assert self._read is not None
        read = self._read
        try:
            # One hand-off to the reader's thread, one read transaction: a consistent snapshot.
            return await read._execute(lambda: _stats(read._conn, time.time()))
        except sqlite3.OperationalError as exc:
            raise StorageUnavailable(str(exc)) from exc

    async def dead_list(
        self,
        destination: str | None = None,
        after: int = 0,
        limit: int = 100,
        since: float | None = None,
        until: float | None = None,
    ) -> list[DeadDelivery]:
        where, params = conditions(
            (f"d.state = {State.DEAD:d}", ()),
            ("d.id > ?", (after,)),
            ("d.destination = ?", (destination,) if destination else None),
            ("d.created_at >= ?", None if since is None else (since,)),
            ("d.created_at < ?", None if until is None else (until,)),
        )
        rows = await self._fetch(
            "SELECT d.id, e.id, e.event_type, d.destination, d.attempts, d.last_error,"
            " d.created_at, d.updated_at FROM deliveries d JOIN events e ON e.seq = d.event_seq"
            f" WHERE {where} ORDER BY d.id LIMIT ?",
            (*params, limit),
        )
        return [DeadDelivery(*r) for r in rows]

    async def event(self, event_id: str) -> EventDetail | None:
        rows = await self._fetch(
            "SELECT seq, id, event_type, received_at, body FROM events WHERE id = ?", (event_id,)
        )
        if not rows:
            return None
        seq, eid, event_type, received_at, body = rows[0]
        deliveries = await self._fetch(
            "SELECT id, destination, state, due_at, attempts, last_error, updated_at"
            " FROM deliveries WHERE event_seq = ? ORDER BY destination",
            (seq,),
        )
        history: dict[int, list[AttemptRecord]] = {d[0]: [] for d in deliveries}
        if deliveries:
            marks = ",".join("?" * len(deliveries))
            for r in await self._fetch(
                f"SELECT {_ATTEMPT_COLUMNS}{_ATTEMPT_FROM}"
                f" WHERE a.delivery_id IN ({marks}) ORDER BY a.ts",
                [d[0] for d in deliveries],
            ):
                history[r[0]].append(AttemptRecord(*r))
        return EventDetail(
            eid,
            event_type,
            received_at,
            bytes(body),
            tuple(
                DeliveryDetail(
                    d[0], d[1], State(d[2]), d[3], d[4], d[5], d[6], tuple(history[d[0]])
                )
                for d in deliveries
            ),
        )

    async def attempts(self, where: AttemptFilter, limit: int = 100) -> list[AttemptRecord]:
        w = where
        before = None
        if w.before is not None:
            before = (w.before[0], w.before[0], w.before[1])
        clause, params = conditions(
            ("a.destination = ?", None if w.destination is None else (w.destination,)),
            ("a.outcome <> 'delivered'", () if w.outcome == "failed" else None),
            ("a.outcome = ?", (w.outcome,) if w.outcome not in (None, "failed") else None),
            ("a.event_type = ?", None if w.event_type is None else (w.event_type,)),
            ("a.ts >= ?", None if w.since is None else (w.since,)),
            ("a.ts < ?", None if w.until is None else (w.until,)),
            ("(a.ts < ? OR (a.ts = ? AND a.delivery_id < ?))", before),
        )
        rows = await self._fetch(
            f"SELECT {_ATTEMPT_COLUMNS}{_ATTEMPT_FROM} WHERE {clause}"
            " ORDER BY a.ts DESC, a.delivery_id DESC LIMIT ?",
            (*params, limit),
        )
        return [AttemptRecord(*r) for r in rows]

    async def attempt_minutes(self, destination: str, since: float) -> list[tuple[int, bool, int]]:
        rows = await self._fetch(
            "SELECT CAST(ts / 60 AS INTEGER), outcome = 'delivered', COUNT(*) FROM attempts"
            " WHERE destination = ? AND ts >= ? GROUP BY 1, 2",
            (destination, since),
        )
        return [(r[0], bool(r[1]), r[2]) for r in rows]

    async def ack_history(self, destination: str, since: float) -> AckHistory:
        minutes = await self._fetch(
            "SELECT minute, n FROM acks WHERE destination = ? AND minute >= ?",
            (destination, int(since // 60)),
        )
        last = await self._fetch(
            "SELECT last_ts, last_n, last_lease FROM acks WHERE destination = ?"
            " ORDER BY minute DESC LIMIT 1",
            (destination,),
        )
        return AckHistory([(r[0], r[1]) for r in minutes], tuple(last[0]) if last else None)

    async def oldest_pending(
        self, event_types: tuple[str, ...], older_than: float
    ) -> dict[str, tuple[int, float]]:
        # Per destination through deliveries_age: only live deliveries older than the
        # deadline are read (none, when all is well), never the whole backlog.
        marks = ",".join("?" * len(event_types))
        names = await self._fetch(
            f"SELECT DISTINCT destination FROM counters WHERE destination <> '' AND state < {State.DELIVERED:d}"
            " AND n > 0"
        )
        late = {}
        for (name,) in names:
            rows = await self._fetch(
                "SELECT COUNT(*), MIN(d.created_at) FROM deliveries d"
                f" JOIN events e ON e.seq = d.event_seq WHERE d.destination = ? AND d.state < {State.DELIVERED:d}"
                f" AND d.created_at < ? AND e.event_type IN ({marks})",
                (name, older_than, *event_types),
            )
            if rows[0][0]:
                late[name] = (rows[0][0], rows[0][1])
        return late

    async def audit_log(self, limit: int = 50) -> list[AuditEntry]:
        rows = await self._fetch(
            "SELECT ts, actor, action, target, count, detail FROM audit ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [AuditEntry(*r) for r in rows]


def _stats(conn: sqlite3.Connection, now: float) -> Stats:
    stats = Stats()
    live: dict[str, int] = {}
    conn.execute("BEGIN")
    try:
        for destination, state, n in conn.execute(
            "SELECT destination, state, n FROM counters WHERE n <> 0"
        ):
            if destination == "":
                if state == 0:
                    stats.events = n
                else:
                    stats.unrouted = n
                continue
            d = stats.destinations.setdefault(destination, DestinationStats())
            if state in (State.PENDING, State.LEASED):
                live[destination] = live.get(destination, 0) + n
            elif state == State.DELIVERED:
                d.delivered = n
            else:
                d.dead = n
        # Leases are few (a dispatcher's slots, open pull batches); an expired one is pending.
        for destination, n in conn.execute(
            f"SELECT destination, COUNT(*) FROM deliveries WHERE state = {State.LEASED:d} AND due_at > ?"
            " GROUP BY 1",
            (now,),
        ):
            stats.destinations.setdefault(destination, DestinationStats()).leased = n
        for destination, n in live.items():
            d = stats.destinations[destination]
            d.pending = n - d.leased
            if d.pending > 0:
                # Walks deliveries_age from the oldest; only leases in flight are skipped.
                row = conn.execute(
                    f"SELECT created_at FROM deliveries WHERE destination = ? AND state < {State.DELIVERED:d}"
                    f" AND (state = {State.PENDING:d} OR due_at <= ?) ORDER BY created_at LIMIT 1",
                    (destination, now),
                ).fetchone()
                if row is not None:
                    d.oldest_pending_s = round(max(0.0, now - row[0]), 3)
    finally:
        conn.execute("COMMIT")
    return stats
