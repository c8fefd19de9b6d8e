"""The PostgreSQL queue: several relay nodes share one database.

Appends are group-committed as on SQLite: one writer task takes every append queued since
its last commit and inserts them in one transaction, so a 2xx still means "committed".
Everything else runs as its own short statement on a pooled connection; no transaction is
ever held across network I/O. Times that decide who may claim what come from the
database (`now()`), never from a node's clock. A claim is one statement (`FOR UPDATE SKIP
LOCKED`), so two nodes never take the same delivery; its fencing token comes from a
sequence, and every ack, retry, dead and release checks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

import asyncpg

from ..models import Attempt, Claimed, NewEvent, State
from .base import AuditEntry, ReplayFilter, StorageUnavailable
from .pg_acks import PostgresAcks
from .pg_base import _DOWN, _RETRY, DURABLE, SingletonLeases, _statement_cache, _unavailable
from .pg_ingest import PostgresIngest
from .pg_reads import PostgresReads
from .pg_sql import ACK_LEASE, CLAIM, CLAIM_TYPES, FOLD, MIGRATIONS, NOW, PURGE, REPLAY, UNCLAIM

__all__ = ["PostgresStore", "_statement_cache"]

PENDING, LEASED, DELIVERED, DEAD = (int(s) for s in State)
MIGRATE_LOCK = 0x72656C6179  # "relay": the advisory lock key that serializes migrations
TOKEN_BLOCK = 1 << 20  # fencing tokens a node takes per round trip to `lease_blocks`
FOLD_EVERY_S = 5.0  # how often a node folds the counter deltas (see pg_sql.py)


class PostgresStore(PostgresIngest, PostgresAcks, SingletonLeases, PostgresReads):
    """`base.Store` on a PostgreSQL database shared by every node."""

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = 8,
        node: str | None = None,
        on_commit: Callable[[int, int, float], None] | None = None,
        on_wake: Callable[[set[str]], None] | None = None,
    ) -> None:
        self.dsn = dsn
        self.pool_size = pool_size
        # Which node's claims `release_leases` may free at start-up: only this node's own.
        self.node = node or os.environ.get("RELAY_NODE") or socket.gethostname()
        self._pool: asyncpg.Pool | None = None
        self._appends: list[tuple[list[NewEvent], asyncio.Future]] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task | None = None
        self._closing = False
        self.commits = 0
        self.last_commit_size = 0
        self.on_commit = on_commit  # after each group commit: (writes, events, seconds)
        # Called with destination names when another node (or this one) stored work for
        # them: the daemon wakes those dispatchers (LISTEN/NOTIFY).
        self.on_wake = on_wake
        self._notified: dict[str, float] = {}
        self._listener: asyncio.Task | None = None
        self._acks: list[tuple[list[Claimed], Attempt | None, asyncio.Future]] = []
        self._ack_wakeup = asyncio.Event()
        self._acker: asyncio.Task | None = None
        self._folder: asyncio.Task | None = None
        # Cluster-wide singletons this node holds, each with when (monotonic) it must stop
        # trusting its lease unless renewed; renewed by `_renew_loop`.
        self._held: dict[str, float] = {}
        self._renewer: asyncio.Task | None = None
        self._next_token = 0  # a multiple of TOKEN_BLOCK: take a new block first
        self._lost_claims: list[int] = []  # tokens of claims whose answer was lost

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            with _unavailable():
                dsn, cache = _statement_cache(self.dsn)
                # Commits are not waited for on disk by default: a claim, ack or retry lost
                # to a crash of the database server only means a delivery goes out again
                # (at-least-once), as on SQLite where only ingest commits are fsynced. An
                # ingest commit (a 2xx depends on it) and operator actions turn it back on.
                # Behind PgBouncer (statement_cache_size=0), which refuses unknown start-up
                # parameters, set it for relay's role instead (docs/how-to/postgresql.md, "Behind PgBouncer").
                settings = {"synchronous_commit": "off"} if cache else {}
                self._pool = await asyncpg.create_pool(
                    dsn,
                    min_size=1,
                    max_size=self.pool_size,
                    timeout=10,
                    statement_cache_size=cache,
                    server_settings=settings,
                )
                await self._migrate()
        except BaseException:
            await self._close_pool()
            raise
        self._closing = False
        self._writer = asyncio.create_task(self._write_loop(), name="store-writer")
        self._listener = asyncio.create_task(self._listen_loop(), name="store-listener")
        self._acker = asyncio.create_task(self._ack_loop(), name="store-acker")
        self._folder = asyncio.create_task(self._fold_loop(), name="store-folder")
        self._renewer = asyncio.create_task(self._renew_loop(), name="store-singletons")

    async def _migrate(self) -> None:
        async with self._conn() as db, db.transaction():
            # Transaction-scoped: released at commit, so a pooled connection never keeps it.
            await db.execute("SELECT pg_advisory_xact_lock($1)", MIGRATE_LOCK)
            await db.execute("CREATE TABLE IF NOT EXISTS relay_schema (version int NOT NULL)")
            version = await db.fetchval("SELECT max(version) FROM relay_schema")
            if version is None:
                version = 0
                await db.execute("INSERT INTO relay_schema (version) VALUES (0)")
            if version > len(MIGRATIONS):
                raise StorageUnavailable(
                    f"postgres: schema version {version} is newer than this relay "
                    f"(knows {len(MIGRATIONS)}); upgrade relay"
                )
            for number in range(version, len(MIGRATIONS)):
                await db.execute(MIGRATIONS[number])
                await db.execute("UPDATE relay_schema SET version = $1", number + 1)

    async def schema_version(self) -> int:
        return await self._val("SELECT max(version) FROM relay_schema")

    async def close(self) -> None:
        for task in (self._listener, self._folder, self._renewer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._listener = self._folder = self._renewer = None
        if self._held and self._pool is not None:  # hand them over now, not at expiry
            self._held = {}
            with contextlib.suppress(Exception):
                await self._exec("DELETE FROM singletons WHERE node = $1", self.node)
        self._closing = True
        self._wakeup.set()
        self._ack_wakeup.set()
        for task in (self._writer, self._acker):  # both finish what is queued, then end
            if task is not None:
                await task
        self._writer = self._acker = None
        await self._close_pool()

    async def _close_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(*_DOWN):
                await asyncio.wait_for(pool.close(), 10)

    @property
    def queued_events(self) -> int:
        """Events waiting for the next group commit (for back-pressure)."""
        return sum(len(events) for events, _ in self._appends)

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        if self._pool is None:
            raise StorageUnavailable("store is closed")
        with _unavailable():
            async with self._pool.acquire(timeout=10) as db:
                yield db

    async def _val(self, sql: str, *args: Any) -> Any:
        async with self._conn() as db:
            return await db.fetchval(sql, *args)

    async def _rows(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self._conn() as db:
            return await db.fetch(sql, *args)

    async def _exec(self, sql: str, *args: Any) -> int:
        """Run one statement; return how many rows it changed."""
        async with self._conn() as db:
            status = await db.execute(sql, *args)
        return int(status.rsplit(" ", 1)[-1]) if status[-1:].isdigit() else 0

    async def _durable(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """One statement whose commit is on disk before this returns (operator actions)."""
        async with self._conn() as db, db.transaction():
            await db.execute(DURABLE)
            return await db.fetch(sql, *args)

    # -- the queue verbs -------------------------------------------------------------------

    async def claim(
        self,
        destination: str,
        limit: int,
        lease_s: float,
        event_types: Collection[str] | None = None,
    ) -> list[Claimed]:
        if self._lost_claims:
            await self._exec(UNCLAIM, self._lost_claims)
            self._lost_claims = []
        token = await self._token()
        args = (destination, limit, lease_s, self.node, token)
        try:
            if event_types is None:
                rows = await self._rows(CLAIM, *args)
            else:
                rows = await self._rows(CLAIM_TYPES, *args, sorted(event_types))
        except StorageUnavailable:
            # The claim may have committed with its answer lost: hand its rows back as soon
            # as the database answers again (next claim), not when the lease runs out.
            self._lost_claims.append(token)
            raise
        return [Claimed(*r) for r in rows]

    async def _token(self) -> int:
        """A fencing token unique across nodes and restarts: block * TOKEN_BLOCK + n."""
        if self._next_token % TOKEN_BLOCK == 0:
            block = await self._val("SELECT nextval('lease_blocks')")
            self._next_token = block * TOKEN_BLOCK + 1
        token, self._next_token = self._next_token, self._next_token + 1
        return token

    async def release(self, claims: list[Claimed]) -> None:
        if not claims:
            return
        await self._exec(
            f"UPDATE deliveries d SET state = {State.PENDING:d}, due_at = {NOW}, attempts = d.attempts - 1,"
            f" lease = NULL, updated_at = {NOW}"
            " FROM unnest($1::bigint[], $2::bigint[]) AS c(id, lease)"
            " WHERE d.id = c.id AND d.lease = c.lease",
            [c.delivery_id for c in claims],
            [c.lease for c in claims],
        )

    async def ack_lease(self, destination: str, lease: int) -> list[str]:
        return [r[0] for r in await self._rows(ACK_LEASE, lease, destination)]

    async def release_leases(self, keep: list[str]) -> int:
        # Only this node's claims: other nodes are running and still hold theirs.
        return await self._exec(
            f"UPDATE deliveries SET state = {State.PENDING:d}, due_at = {NOW}, lease = NULL"
            f" WHERE state = {State.LEASED:d} AND node = $1 AND destination <> ALL($2::text[])",
            self.node,
            keep,
        )

    async def replay(
        self, where: ReplayFilter, dry_run: bool = False, rate: float | None = None
    ) -> list[str]:
        clause, params = _replay_where(where)
        if dry_run:
            sql = (
                f"SELECT e.id FROM deliveries d JOIN events e ON e.seq = d.event_seq"
                f" WHERE {clause} ORDER BY d.id"
            )
        else:
            params.append(rate)
            sql = REPLAY.replace("{where}", clause).replace("{rate}", f"${len(params)}")
        return [r[0] for r in await self._durable(sql, *params)]

    async def audit(self, entry: AuditEntry) -> None:
        await self._durable(
            "INSERT INTO audit (ts, actor, action, target, count, detail)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            entry.ts,
            entry.actor,
            entry.action,
            entry.target,
            entry.count,
            entry.detail,
        )

    async def pause(self, destination: str, until: float | None) -> None:
        await self._durable(
            "INSERT INTO paused (destination, until) VALUES ($1, $2)"
            " ON CONFLICT (destination) DO UPDATE SET until = excluded.until",
            destination,
            until,
        )

    async def resume(self, destination: str) -> None:
        await self._durable("DELETE FROM paused WHERE destination = $1", destination)

    async def request_flush(self, destination: str) -> None:
        await self._exec(
            f"INSERT INTO flushes (destination, requested_at) VALUES ($1, {NOW})"
            " ON CONFLICT (destination) DO UPDATE SET requested_at = excluded.requested_at",
            destination,
        )

    async def take_flushes(self) -> list[str]:
        # DELETE … RETURNING: each request is taken by exactly one node.
        rows = await self._rows("DELETE FROM flushes RETURNING destination")
        return [r[0] for r in rows]

    async def purge(self, older_than: float) -> int:
        """Delete in chunks, one short statement each, so ingestion never waits long."""
        total = 0
        while True:
            n = sum([await self._val(sql, older_than) for sql in PURGE])
            if n == 0:
                return total
            total += n

    async def fold_counts(self) -> None:
        """Fold the counter deltas into one row per key (any node, any time: see FOLD)."""
        with contextlib.suppress(*_RETRY):
            await self._exec(FOLD)

    async def _fold_loop(self) -> None:
        while True:
            await asyncio.sleep(FOLD_EVERY_S * (0.75 + random.random() / 2))
            with contextlib.suppress(StorageUnavailable, asyncpg.PostgresError):
                await self.fold_counts()

    async def backup(self, target: Any) -> None:
        raise StorageUnavailable(
            "the postgres backend is backed up with pg_dump, e.g."
            ' `pg_dump --format=custom --file=relay.dump "$RELAY_PG_DSN"`'
        )

    # -- reads -----------------------------------------------------------------------------

    async def check_writable(self) -> None:
        """Readiness: a write that commits and changes nothing (a row in and out again)."""
        async with self._conn() as db, db.transaction():
            await db.execute(
                "INSERT INTO paused (destination, until) VALUES ('#readyz', 0)"
                " ON CONFLICT (destination) DO NOTHING"
            )
            await db.execute("DELETE FROM paused WHERE destination = '#readyz'")


def _replay_where(where: ReplayFilter) -> tuple[str, list[Any]]:
    clause, params = [f"d.state = {State.DEAD:d}"], []
    if where.destination:
        params.append(where.destination)
        clause.append(f"d.destination = ${len(params)}")
    if where.since is not None:
        params.append(where.since)
        clause.append(f"d.created_at >= ${len(params)}")
    if where.until is not None:
        params.append(where.until)
        clause.append(f"d.created_at < ${len(params)}")
    if where.ids:
        params.append(list(where.ids))
        clause.append(f"e.id = ANY(${len(params)}::text[])")
    return " AND ".join(clause), params
