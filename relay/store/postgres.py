"""The PostgreSQL queue: several relay nodes share one database (SPEC §9).

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
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from .base import (
    Attempt,
    Claimed,
    DeadDelivery,
    DestinationStats,
    NewEvent,
    ReplayFilter,
    State,
    Stats,
    StorageUnavailable,
)
from .pg_sql import CLAIM, MIGRATIONS, NOW, PURGE

PENDING, LEASED, DELIVERED, DEAD = (int(s) for s in State)
MIGRATE_LOCK = 0x72656C6179  # "relay": the advisory lock key that serializes migrations
WAKE_CHANNEL = "relay_wake"  # NOTIFY payload: destination names, one per line
NOTIFY_EVERY_S = 0.1  # at most one NOTIFY per destination per node this often
LISTEN_CHECK_S = 5.0  # how often the listener proves its connection is alive

# Errors that mean "the database is not there right now": the caller answers 503.
_DOWN = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a query sent on a connection the server just dropped
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, crash recovery
    asyncpg.exceptions.InsufficientResourcesError,  # disk full, too many connections
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # a standby
)
_RETRY = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)

Key = tuple[str, str, str]


@contextlib.contextmanager
def _unavailable() -> Any:
    try:
        yield
    except _DOWN as exc:
        raise StorageUnavailable(f"postgres: {exc}") from exc


class PostgresStore:
    """`base.Store` on a PostgreSQL database shared by every node."""

    def __init__(self, dsn: str, *, pool_size: int = 8, node: str | None = None) -> None:
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
        self.on_commit: Callable[[int, int, float], None] | None = None
        # Called with destination names when another node (or this one) stored work for
        # them: the daemon wakes those dispatchers (LISTEN/NOTIFY).
        self.on_wake: Callable[[set[str]], None] | None = None
        self._notified: dict[str, float] = {}
        self._listener: asyncio.Task | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            with _unavailable():
                dsn, cache = _statement_cache(self.dsn)
                self._pool = await asyncpg.create_pool(
                    dsn, min_size=1, max_size=self.pool_size, timeout=10, statement_cache_size=cache
                )
                await self._migrate()
        except BaseException:
            await self._close_pool()
            raise
        self._closing = False
        self._writer = asyncio.create_task(self._write_loop(), name="store-writer")
        self._listener = asyncio.create_task(self._listen_loop(), name="store-listener")

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
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._writer is not None:
            self._closing = True
            self._wakeup.set()
            await self._writer
            self._writer = None
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

    # -- group commit ----------------------------------------------------------------------

    async def append(self, events: list[NewEvent]) -> int:
        if self._closing or self._writer is None:
            raise StorageUnavailable("store is closed")
        future = asyncio.get_running_loop().create_future()
        self._appends.append((events, future))
        self._wakeup.set()
        return await future

    async def _write_loop(self) -> None:
        while True:
            if not self._appends:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            group, self._appends = self._appends, []
            await self._commit_group(group)

    async def _commit_group(self, group: list[tuple[list[NewEvent], asyncio.Future]]) -> None:
        started = time.monotonic()
        events = [e for batch, _ in group for e in batch]
        try:
            stored = await self._insert_retrying(events)
        except Exception as exc:
            if len(group) > 1:  # don't let one bad batch fail its neighbours
                for one in group:
                    await self._commit_group([one])
                return
            error = StorageUnavailable(str(exc)) if isinstance(exc, _DOWN) else exc
            for _, future in group:
                if not future.done():
                    future.set_exception(error)
            return
        self.commits += 1
        self.last_commit_size = len(events)
        if self.on_commit is not None:
            self.on_commit(len(group), len(events), time.monotonic() - started)
        for batch, future in group:
            new = sum(1 for e in batch if stored.pop(e.id, False))
            if not future.done():
                future.set_result(new)

    async def _insert_retrying(self, events: list[NewEvent]) -> dict[str, bool]:
        for attempt in range(3):
            try:
                async with self._conn() as db, db.transaction():
                    stored = await _insert(db, events)
                    if wake := self._to_notify(events, stored):
                        # Inside the transaction: delivered to listeners at commit only.
                        await db.execute("SELECT pg_notify($1, $2)", WAKE_CHANNEL, wake)
                    return stored
            except _RETRY:  # two nodes inserting the same ids in another order
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _to_notify(self, events: list[NewEvent], stored: dict[str, bool]) -> str:
        """The destinations worth a NOTIFY: new work, not announced in the last 100 ms."""
        now = time.monotonic()
        names = {d for e in events if stored.get(e.id) for d, _ in e.deliveries}
        due = sorted(n for n in names if now - self._notified.get(n, 0.0) >= NOTIFY_EVERY_S)
        for name in due:
            self._notified[name] = now
        return "\n".join(due)

    async def _listen_loop(self) -> None:
        """One LISTEN connection per node; it checks itself and reconnects when lost."""
        dsn, cache = _statement_cache(self.dsn)
        while True:
            db: asyncpg.Connection | None = None
            try:
                db = await asyncpg.connect(dsn, timeout=10, statement_cache_size=cache)
                await db.add_listener(WAKE_CHANNEL, self._notified_cb)
                while True:
                    await asyncio.sleep(LISTEN_CHECK_S)
                    await asyncio.wait_for(db.fetchval("SELECT 1"), LISTEN_CHECK_S)
            except (*_DOWN, asyncpg.PostgresError):
                await asyncio.sleep(1.0)  # the database is away: the idle poll still works
            finally:
                if db is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(db.close(), 2)

    def _notified_cb(self, _db: object, _pid: int, _channel: str, payload: str) -> None:
        if self.on_wake is not None and payload:
            self.on_wake(set(payload.split("\n")))

    # -- the queue verbs -------------------------------------------------------------------

    async def claim(self, destination: str, limit: int, lease_s: float) -> list[Claimed]:
        rows = await self._rows(CLAIM, destination, limit, lease_s, self.node)
        return [Claimed(*r) for r in rows]

    async def _finish(self, sql: str, *columns: list[Any]) -> None:
        if columns[0]:
            await self._exec(sql, *columns)

    async def ack(self, claims: list[Claimed], attempt: Attempt | None = None) -> None:
        await self._finish(
            f"UPDATE deliveries d SET state = 2, lease = NULL, last_error = NULL, updated_at = {NOW}"
            " FROM unnest($1::bigint[], $2::bigint[]) AS c(id, lease)"
            " WHERE d.id = c.id AND d.lease = c.lease",
            [c.delivery_id for c in claims],
            [c.lease for c in claims],
        )

    async def retry(
        self, claims: list[tuple[Claimed, float]], error: str | None, attempt: Attempt | None = None
    ) -> None:
        await self._finish(
            "UPDATE deliveries d SET state = 0, due_at = c.due_at, lease = NULL,"
            f" last_error = $4, updated_at = {NOW}"
            " FROM unnest($1::bigint[], $2::bigint[], $3::float8[]) AS c(id, lease, due_at)"
            " WHERE d.id = c.id AND d.lease = c.lease",
            [c.delivery_id for c, _ in claims],
            [c.lease for c, _ in claims],
            [due for _, due in claims],
            error,
        )

    async def dead(
        self, claims: list[Claimed], error: str | None, attempt: Attempt | None = None
    ) -> None:
        await self._finish(
            f"UPDATE deliveries d SET state = 3, lease = NULL, last_error = $3, updated_at = {NOW}"
            " FROM unnest($1::bigint[], $2::bigint[]) AS c(id, lease)"
            " WHERE d.id = c.id AND d.lease = c.lease",
            [c.delivery_id for c in claims],
            [c.lease for c in claims],
            error,
        )

    async def release(self, claims: list[Claimed]) -> None:
        await self._finish(
            f"UPDATE deliveries d SET state = 0, due_at = {NOW}, attempts = d.attempts - 1,"
            f" lease = NULL, updated_at = {NOW}"
            " FROM unnest($1::bigint[], $2::bigint[]) AS c(id, lease)"
            " WHERE d.id = c.id AND d.lease = c.lease",
            [c.delivery_id for c in claims],
            [c.lease for c in claims],
        )

    async def ack_lease(self, destination: str, lease: int) -> list[str]:
        rows = await self._rows(
            f"UPDATE deliveries d SET state = 2, lease = NULL, updated_at = {NOW} FROM events e"
            " WHERE d.lease = $1 AND d.state = 1 AND d.destination = $2 AND e.seq = d.event_seq"
            " RETURNING e.id",
            lease,
            destination,
        )
        return [r[0] for r in rows]

    async def release_leases(self, keep: list[str]) -> int:
        # Only this node's claims: other nodes are running and still hold theirs.
        return await self._exec(
            f"UPDATE deliveries SET state = 0, due_at = {NOW}, lease = NULL"
            " WHERE state = 1 AND node = $1 AND destination <> ALL($2::text[])",
            self.node,
            keep,
        )

    async def replay(self, where: ReplayFilter, dry_run: bool = False) -> list[str]:
        clause, params = _replay_where(where)
        if dry_run:
            sql = (
                f"SELECT e.id FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE {clause}"
            )
        else:
            sql = (
                f"UPDATE deliveries d SET state = 0, attempts = 0, due_at = {NOW}, lease = NULL,"
                f" updated_at = {NOW} FROM events e WHERE e.seq = d.event_seq AND {clause}"
                " RETURNING e.id"
            )
        return [r[0] for r in await self._rows(sql, *params)]

    async def pause(self, destination: str, until: float | None) -> None:
        await self._exec(
            "INSERT INTO paused (destination, until) VALUES ($1, $2)"
            " ON CONFLICT (destination) DO UPDATE SET until = excluded.until",
            destination,
            until,
        )

    async def resume(self, destination: str) -> None:
        await self._exec("DELETE FROM paused WHERE destination = $1", destination)

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
            n = sum([await self._exec(sql, older_than) for sql in PURGE])
            if n == 0:
                return total
            total += n

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

    async def next_due(self, destination: str) -> float | None:
        return await self._val(
            "SELECT min(due_at) FROM deliveries WHERE destination = $1 AND state < 2", destination
        )

    async def stats(self) -> Stats:
        now = time.time()
        stats = Stats()
        counts = await self._rows(
            f"SELECT destination, state, due_at <= {NOW}, count(*), min(created_at)"
            " FROM deliveries GROUP BY 1, 2, 3"
        )
        for destination, state, due, count, oldest in counts:
            d = stats.destinations.setdefault(destination, DestinationStats())
            if state == PENDING or (state == LEASED and due):  # an expired lease is pending again
                d.pending += count
                age = round(now - oldest, 3)
                d.oldest_pending_s = max(d.oldest_pending_s or 0.0, age)
            elif state == LEASED:
                d.leased += count
            elif state == DELIVERED:
                d.delivered += count
            else:
                d.dead += count
        [row] = await self._rows("SELECT count(*), count(*) FILTER (WHERE routed = 0) FROM events")
        stats.events, stats.unrouted = row
        return stats

    async def dead_list(
        self, destination: str | None = None, after: int = 0, limit: int = 100
    ) -> list[DeadDelivery]:
        rows = await self._rows(
            "SELECT d.id, e.id, e.event_type, d.destination, d.attempts, d.last_error,"
            " d.created_at, d.updated_at FROM deliveries d JOIN events e ON e.seq = d.event_seq"
            " WHERE d.state = 3 AND d.id > $1 AND ($2::text IS NULL OR d.destination = $2)"
            " ORDER BY d.id LIMIT $3",
            after,
            destination,
            limit,
        )
        return [DeadDelivery(*r) for r in rows]

    async def paused(self) -> dict[str, float | None]:
        rows = await self._rows("SELECT destination, until FROM paused")
        return {name: until for name, until in rows}


async def _insert(db: asyncpg.Connection, events: list[NewEvent]) -> dict[str, bool]:
    """Insert events not stored before, with their deliveries; map each id to "was new".

    `ON CONFLICT (id) DO NOTHING` makes a re-sent id a no-op across nodes; a first-flag key
    is claimed with the same trick, so `first` holds across nodes as well.
    """
    first_of: dict[str, NewEvent] = {}
    for e in events:
        first_of.setdefault(e.id, e)
    unique = list(first_of.values())
    rows = await db.fetch("SELECT id FROM events WHERE id = ANY($1::text[])", list(first_of))
    known = {r[0] for r in rows}
    fresh = [e for e in unique if e.id not in known]
    firsts = await _new_firsts(db, [e.first_key for e in fresh if e.first_key])
    bodies = []
    for e in fresh:
        body = e.body
        if e.first_key is not None:
            first = e.first_key in firsts
            firsts.discard(e.first_key)  # only the first of a batch is first
            body = body[:-1] + (b',"first":true}' if first else b',"first":false}')
        bodies.append(body)
    rows = await db.fetch(
        "INSERT INTO events (id, event_type, received_at, routed, body)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::int[], $5::bytea[])"
        " ON CONFLICT (id) DO NOTHING RETURNING id, seq",
        [e.id for e in fresh],
        [e.event_type for e in fresh],
        [e.received_at for e in fresh],
        [len(e.deliveries) for e in fresh],
        bodies,
    )
    seqs = {r[0]: r[1] for r in rows}
    deliveries = [
        (seqs[e.id], dest, due_at, e.received_at)
        for e in fresh
        if e.id in seqs
        for dest, due_at in e.deliveries
    ]
    if deliveries:
        await db.execute(
            "INSERT INTO deliveries (event_seq, destination, state, due_at, attempts,"
            " created_at, updated_at)"
            " SELECT s, d, 0, due, 0, c, c FROM unnest($1::bigint[], $2::text[], $3::float8[],"
            " $4::float8[]) AS t(s, d, due, c)",
            *(list(col) for col in zip(*deliveries, strict=True)),
        )
    return {e.id: e.id in seqs for e in unique}


async def _new_firsts(db: asyncpg.Connection, keys: list[Key]) -> set[Key]:
    """Record these first-flag keys; return those never seen before."""
    unique = sorted(set(keys))  # one order for every node: no deadlocks between them
    if not unique:
        return set()
    rows = await db.fetch(
        f"INSERT INTO firsts (event_type, email, sendid, seen_at)"
        f" SELECT t, e, s, {NOW} FROM unnest($1::text[], $2::text[], $3::text[]) AS k(t, e, s)"
        " ON CONFLICT DO NOTHING RETURNING event_type, email, sendid",
        *(list(col) for col in zip(*unique, strict=True)),
    )
    return {tuple(r) for r in rows}  # type: ignore[misc]


def _statement_cache(dsn: str) -> tuple[str, int]:
    """Take `statement_cache_size=N` out of the DSN (asyncpg would send it as a server
    setting): `0` is what PgBouncer in transaction mode needs."""
    parts = urlsplit(dsn)
    query = parse_qsl(parts.query, keep_blank_values=True)
    sizes = [int(v) for k, v in query if k == "statement_cache_size"]
    if not sizes:
        return dsn, 100  # asyncpg's default
    rest = urlencode([(k, v) for k, v in query if k != "statement_cache_size"])
    return urlunsplit(parts._replace(query=rest)), sizes[-1]


def _replay_where(where: ReplayFilter) -> tuple[str, list[Any]]:
    clause, params = ["d.state = 3"], []
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
