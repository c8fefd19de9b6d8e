"""The PostgreSQL store's reads: counts, dead letters, one event's story, attempt history.

Counts come from the `counts` delta table (see migration 2 in `pg_sql.py`): a sum over a
few rows, never a count of the big tables. A delivered delivery has left the hot table
(ack = DELETE); `delivered` and `attempts` keep what `relay show` needs of it.
"""

from __future__ import annotations

import time
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg

from ..models import State
from .base import (
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
from .pg_sql import NOW

_ATTEMPT_COLUMNS = (
    "delivery_id, event_id, event_type, destination, attempt, ts, outcome, status, ms, error,"
    " response"
)


NEXT_DUE = (
    f"SELECT min(due_at) FROM deliveries WHERE destination = $1 AND state < {State.DELIVERED:d}"
)


class PostgresReads:
    def _conn(self) -> AbstractAsyncContextManager[asyncpg.Connection]:
        raise NotImplementedError

    async def _rows(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        raise NotImplementedError

    async def next_due(self, destination: str) -> float | None:
        """None also while the database is away: the dispatcher then sleeps its 1 s cap and
        tries again (an exception here would end its loop)."""
        try:
            rows = await self._rows(
                NEXT_DUE,
                destination,
            )
        except StorageUnavailable:
            return None
        return rows[0][0]

    async def stats(self) -> Stats:
        now = time.time()
        stats = Stats()
        live: dict[str, int] = {}
        async with self._conn() as db, db.transaction(isolation="repeatable_read", readonly=True):
            for destination, state, n in await db.fetch(
                "SELECT destination, state, sum(n)::bigint FROM counts GROUP BY 1, 2"
                " HAVING sum(n) <> 0"
            ):
                if destination == "":
                    if state == 0:
                        stats.events = n
                    else:
                        stats.unrouted = n
                    continue
                d = stats.destinations.setdefault(destination, DestinationStats())
                if state == State.PENDING:
                    live[destination] = n
                elif state == State.DELIVERED:
                    d.delivered = n
                else:
                    d.dead = n
            # Leases are few (a dispatcher's slots, open pull batches); an expired one is
            # pending again.
            for destination, n in await db.fetch(
                f"SELECT destination, count(*) FROM deliveries WHERE state = {State.LEASED:d} AND due_at > {NOW}"
                " GROUP BY 1"
            ):
                stats.destinations.setdefault(destination, DestinationStats()).leased = n
            waiting = []
            for destination, n in live.items():
                d = stats.destinations[destination]
                d.pending = n - d.leased
                if d.pending > 0:
                    waiting.append(destination)
            # Walks deliveries_age from the oldest of each; only leases in flight are skipped.
            for destination, oldest in await db.fetch(
                f"SELECT w, (SELECT created_at FROM deliveries WHERE destination = w AND state < {State.DELIVERED:d}"
                f" AND (state = {State.PENDING:d} OR due_at <= {NOW}) ORDER BY created_at LIMIT 1)"
                " FROM unnest($1::text[]) AS w",
                waiting,
            ):
                if oldest is not None:
                    stats.destinations[destination].oldest_pending_s = round(
                        max(0.0, now - oldest), 3
                    )
        return stats

    async def dead_list(
        self,
        destination: str | None = None,
        after: int = 0,
        limit: int = 100,
        since: float | None = None,
        until: float | None = None,
    ) -> list[DeadDelivery]:
        rows = await self._rows(
            "SELECT d.id, e.id, e.event_type, d.destination, d.attempts, d.last_error,"
            " d.created_at, d.updated_at FROM deliveries d JOIN events e ON e.seq = d.event_seq"
            f" WHERE d.state = {State.DEAD:d} AND d.id > $1 AND ($2::text IS NULL OR d.destination = $2)"
            " AND ($4::float8 IS NULL OR d.created_at >= $4)"
            " AND ($5::float8 IS NULL OR d.created_at < $5)"
            " ORDER BY d.id LIMIT $3",
            after,
            destination or None,
            limit,
            since,
            until,
        )
        return [DeadDelivery(*r) for r in rows]

    async def event(self, event_id: str) -> EventDetail | None:
        async with self._conn() as db, db.transaction(isolation="repeatable_read", readonly=True):
            row = await db.fetchrow(
                "SELECT seq, id, event_type, received_at, body FROM events WHERE id = $1", event_id
            )
            if row is None:
                return None
            seq = row[0]
            deliveries = list(
                await db.fetch(
                    "SELECT id, destination, state, due_at, attempts, last_error, updated_at"
                    " FROM deliveries WHERE event_seq = $1"
                    " UNION ALL SELECT delivery_id, destination, 2, done_at, attempts, NULL,"
                    " done_at FROM delivered WHERE event_seq = $1",
                    seq,
                )
            )
            deliveries.sort(key=lambda d: (d[1], d[0]))
            history: dict[int, list[AttemptRecord]] = {d[0]: [] for d in deliveries}
            for r in await db.fetch(
                f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = ANY($1::bigint[])"
                " ORDER BY ts",
                list(history),
            ):
                history[r[0]].append(AttemptRecord(*r))
        return EventDetail(
            row[1],
            row[2],
            row[3],
            bytes(row[4]),
            tuple(
                DeliveryDetail(
                    d[0], d[1], State(d[2]), d[3], d[4], d[5], d[6], tuple(history[d[0]])
                )
                for d in deliveries
            ),
        )

    async def attempts(self, where: AttemptFilter, limit: int = 100) -> list[AttemptRecord]:
        clause, params = ["true"], []

        def param(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        if where.destination is not None:
            clause.append(f"destination = {param(where.destination)}")
        if where.outcome == "failed":
            clause.append("outcome <> 'delivered'")
        elif where.outcome is not None:
            clause.append(f"outcome = {param(where.outcome)}")
        if where.event_type is not None:
            clause.append(f"event_type = {param(where.event_type)}")
        if where.since is not None:
            clause.append(f"ts >= {param(where.since)}")
        if where.until is not None:
            clause.append(f"ts < {param(where.until)}")
        if where.before is not None:
            ts, delivery_id, _ = where.before
            clause.append(f"(ts, delivery_id) < ({param(ts)}::float8, {param(delivery_id)})")
        rows = await self._rows(
            f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE {' AND '.join(clause)}"
            f" ORDER BY ts DESC, delivery_id DESC LIMIT {param(limit)}",
            *params,
        )
        return [AttemptRecord(*r) for r in rows]

    async def attempt_minutes(self, destination: str, since: float) -> list[tuple[int, bool, int]]:
        rows = await self._rows(
            "SELECT floor(ts / 60)::bigint, outcome = 'delivered', count(*) FROM attempts"
            " WHERE destination = $1 AND ts >= $2 GROUP BY 1, 2",
            destination,
            since,
        )
        return [(r[0], r[1], r[2]) for r in rows]

    async def oldest_pending(
        self, event_types: tuple[str, ...], older_than: float
    ) -> dict[str, tuple[int, float]]:
        rows = await self._rows(
            "SELECT d.destination, count(*), min(d.created_at) FROM deliveries d"
            " JOIN events e ON e.seq = d.event_seq"
            f" WHERE d.state < {State.DELIVERED:d} AND d.created_at < $1 AND e.event_type = ANY($2::text[])"
            " GROUP BY 1",
            older_than,
            list(event_types),
        )
        return {r[0]: (r[1], r[2]) for r in rows}

    async def audit_log(self, limit: int = 50) -> list[AuditEntry]:
        rows = await self._rows(
            "SELECT ts, actor, action, target, count, detail FROM audit ORDER BY id DESC LIMIT $1",
            limit,
        )
        return [AuditEntry(*r) for r in rows]

    async def paused(self) -> dict[str, float | None]:
        rows = await self._rows("SELECT destination, until FROM paused")
        return {name: until for name, until in rows}
