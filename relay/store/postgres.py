"""The PostgreSQL queue: several relay nodes share one database.

Appends are group-committed as on SQLite: one writer task takes every append queued since
its last commit and inserts them in one transaction, so a 2xx still means "committed".
Everything else runs as its own short statement on a pooled connection; no transaction is
ever held across network I/O. Times that decide who may claim what come from the
database (`now()`), never from a node's clock. A claim is one statement (`FOR UPDATE SKIP
LOCKED`), so two nodes never take the same delivery; its fencing token comes from a
sequence, and every ack, retry, dead and release checks it.

Outcomes (ack = DELETE, retry, dead) are one statement each, fenced on the lease token,
recording the attempt and the counter deltas with the move; acks from every dispatcher of
this node are queued and flushed together, one DELETE per flush. Counts come from the
`counts` delta table (migration 2): a sum over a few rows, never a count of the big
tables. Ingestion wakes the other nodes with a NOTIFY sent inside the ingest transaction
(one LISTEN connection per node). Cluster-wide singletons are lease rows (see `lead`).

Every statement is in `pg_queries.py`; the stateless helpers are in `pg_support.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

import asyncpg

from ..models import Attempt, Claimed, NewEvent, State
from .base import (
    AckHistory,
    AttemptFilter,
    AttemptRecord,
    AuditEntry,
    DeadDelivery,
    DeliveryDetail,
    DestinationStats,
    EventDetail,
    ReplayFilter,
    Stats,
    StorageUnavailable,
)
from .pg_queries import (
    ACK,
    ACK_LAST,
    ACK_LEASE,
    ACK_MINUTES,
    ATTEMPT_MINUTES,
    AUDIT,
    AUDIT_LOG,
    CLAIM,
    CLAIM_TYPES,
    DEAD,
    DEAD_LIST,
    DROP_SINGLETONS,
    DURABLE,
    EVENT,
    EVENT_ATTEMPTS,
    EVENT_DELIVERIES,
    FOLD,
    HOLD,
    INGEST,
    MIGRATE_LOCK_SQL,
    MIGRATIONS,
    NEXT_BLOCK,
    NEXT_DUE,
    NOTIFY,
    OLDEST_PENDING,
    PAUSE,
    PAUSED,
    PING,
    PURGE,
    READY_IN,
    READY_OUT,
    RELEASE,
    RELEASE_LEASES,
    REPLAY,
    REPLAY_DRY_RUN,
    REQUEST_FLUSH,
    RESUME,
    RETRY,
    SCHEMA_SET,
    SCHEMA_START,
    SCHEMA_TABLE,
    SCHEMA_VERSION,
    STATS_COUNTS,
    STATS_LEASED,
    STATS_OLDEST,
    TAKE_FLUSHES,
    UNCLAIM,
    WAKE_CHANNEL,
    attempts_query,
    replay_where,
)
from .pg_support import (
    _DOWN,
    _RETRY,
    _insert,
    _outcome_columns,
    _statement_cache,
    _unavailable,
)

__all__ = ["PostgresStore", "_statement_cache"]

MIGRATE_LOCK = 0x72656C6179  # "relay": the advisory lock key that serializes migrations
TOKEN_BLOCK = 1 << 20  # fencing tokens a node takes per round trip to `lease_blocks`
FOLD_EVERY_S = 5.0  # how often a node folds the counter deltas (see pg_queries.py)
NOTIFY_EVERY_S = 0.1  # at most one NOTIFY per destination per node this often
LISTEN_CHECK_S = 5.0  # how often the listener proves its connection is alive
ACK_BATCH = 500  # at most this many acks in one DELETE
ACK_RETRY_S = 30.0  # how long a flush of acks keeps trying while the database is away
SINGLETON_TTL_S = 15.0  # a singleton's lease: another node takes over this long after a crash
SINGLETON_RENEW_S = 3.0  # the holder renews it this often


class PostgresStore:
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
            await db.execute(MIGRATE_LOCK_SQL, MIGRATE_LOCK)
            await db.execute(SCHEMA_TABLE)
            version = await db.fetchval(SCHEMA_VERSION)
            if version is None:
                version = 0
                await db.execute(SCHEMA_START)
            if version > len(MIGRATIONS):
                raise StorageUnavailable(
                    f"postgres: schema version {version} is newer than this relay "
                    f"(knows {len(MIGRATIONS)}); upgrade relay"
                )
            for number in range(version, len(MIGRATIONS)):
                await db.execute(MIGRATIONS[number])
                await db.execute(SCHEMA_SET, number + 1)

    async def schema_version(self) -> int:
        return await self._val(SCHEMA_VERSION)

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
                await self._exec(DROP_SINGLETONS, self.node)
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
            block = await self._val(NEXT_BLOCK)
            self._next_token = block * TOKEN_BLOCK + 1
        token, self._next_token = self._next_token, self._next_token + 1
        return token

    async def release(self, claims: list[Claimed]) -> None:
        if not claims:
            return
        await self._exec(
            RELEASE,
            [c.delivery_id for c in claims],
            [c.lease for c in claims],
        )

    async def ack_lease(self, destination: str, lease: int) -> list[str]:
        return [r[0] for r in await self._rows(ACK_LEASE, lease, destination)]

    async def release_leases(self, keep: list[str]) -> int:
        # Only this node's claims: other nodes are running and still hold theirs.
        return await self._exec(RELEASE_LEASES, self.node, keep)

    async def replay(
        self, where: ReplayFilter, dry_run: bool = False, rate: float | None = None
    ) -> list[str]:
        clause, params = replay_where(where)
        if dry_run:
            sql = REPLAY_DRY_RUN.replace("{where}", clause)
        else:
            params.append(rate)
            sql = REPLAY.replace("{where}", clause).replace("{rate}", f"${len(params)}")
        return [r[0] for r in await self._durable(sql, *params)]

    async def audit(self, entry: AuditEntry) -> None:
        await self._durable(
            AUDIT,
            entry.ts,
            entry.actor,
            entry.action,
            entry.target,
            entry.count,
            entry.detail,
        )

    async def pause(self, destination: str, until: float | None) -> None:
        await self._durable(PAUSE, destination, until)

    async def resume(self, destination: str) -> None:
        await self._durable(RESUME, destination)

    async def request_flush(self, destination: str) -> None:
        await self._exec(REQUEST_FLUSH, destination)

    async def take_flushes(self) -> list[str]:
        rows = await self._rows(TAKE_FLUSHES)
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

    # -- outcomes --------------------------------------------------------------------------

    async def ack(self, claims: list[Claimed], attempt: Attempt | None = None) -> None:
        """Queued for the ack flusher: one DELETE for every ack of this node since its last
        flush (group commit, as for appends); returns after that commit."""
        if not claims:
            return
        if self._closing or self._acker is None:
            raise StorageUnavailable("store is closed")
        future = asyncio.get_running_loop().create_future()
        self._acks.append((claims, attempt, future))
        self._ack_wakeup.set()
        await future

    async def _ack_loop(self) -> None:
        """Flush queued acks: as soon as the previous flush is done, at most ACK_BATCH ids
        per statement (so under load a flush follows the last within one round trip, well
        inside 50 ms), and whatever is left at close."""
        while True:
            if not self._acks:
                if self._closing:
                    return
                self._ack_wakeup.clear()
                await self._ack_wakeup.wait()
                continue
            taken, size = 0, 0
            while taken < len(self._acks) and size < ACK_BATCH:
                size += len(self._acks[taken][0])
                taken += 1
            batch, self._acks = self._acks[:taken], self._acks[taken:]
            rows = [(c, None, a) for claims, a, _ in batch for c in claims]
            error = await self._flush_acks(rows)
            if error is not None:
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for _, _, future in batch:
                if not future.done():
                    future.set_result(None)

    async def _flush_acks(
        self, rows: list[tuple[Claimed, float | None, Attempt | None]]
    ) -> Exception | None:
        """One DELETE for the batch. While the database is away, try again every 0.5 s for
        up to ACK_RETRY_S (the dispatcher's slots wait meanwhile): the sends happened, and
        a lost ack would send them again when their leases run out."""
        give_up = time.monotonic() + ACK_RETRY_S
        while True:
            try:
                await self._outcome(ACK, rows, None)
                return None
            except StorageUnavailable as exc:
                if self._closing or time.monotonic() > give_up:
                    return exc
                await asyncio.sleep(0.5)
            except Exception as exc:
                return exc

    async def _outcome(
        self,
        sql: str,
        rows: list[tuple[Claimed, float | None, Attempt | None]],
        error: str | None,
    ) -> None:
        """Run ACK, RETRY or DEAD (pg_queries.py) for (claim, due_at, attempt) rows."""
        if not rows:
            return
        columns = _outcome_columns(rows)
        for attempt in range(3):
            try:
                await self._val(sql, *columns, *([] if sql is ACK else [error]))
                return
            except _RETRY:
                if attempt == 2:
                    raise

    async def retry(
        self, claims: list[tuple[Claimed, float]], error: str | None, attempt: Attempt | None = None
    ) -> None:
        await self._outcome(RETRY, [(c, due, attempt) for c, due in claims], error)

    async def dead(
        self, claims: list[Claimed], error: str | None, attempt: Attempt | None = None
    ) -> None:
        await self._outcome(DEAD, [(c, None, attempt) for c in claims], error)

    # -- ingestion -------------------------------------------------------------------------

    async def append(self, events: list[NewEvent]) -> list[bool]:
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
            new = [stored.pop(e.id, False) for e in batch]  # an id twice: only the first
            if not future.done():
                future.set_result(new)

    async def _insert_retrying(self, events: list[NewEvent]) -> dict[str, bool]:
        if not any(e.first_key for e in events):
            return await self._insert_one_statement(events)
        for attempt in range(3):
            try:
                async with self._conn() as db, db.transaction():
                    await db.execute(DURABLE)  # a 2xx means committed, on disk
                    stored = await _insert(db, events)
                    if wake := self._to_notify(events, stored):
                        # Inside the transaction: delivered to listeners at commit only.
                        await db.execute(NOTIFY, WAKE_CHANNEL, wake)
                    return stored
            except _RETRY:  # two nodes inserting the same ids in another order
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _insert_one_statement(self, events: list[NewEvent]) -> dict[str, bool]:
        """The common case, one round trip: see INGEST."""
        first_of: dict[str, NewEvent] = {}
        for e in events:
            first_of.setdefault(e.id, e)
        unique = list(first_of.values())
        deliveries = [(e.id, d, due, e.received_at) for e in unique for d, due in e.deliveries]
        columns = [list(c) for c in zip(*deliveries, strict=True)] if deliveries else [[]] * 4
        wake = self._to_notify(events, None)
        for attempt in range(3):
            try:
                async with self._conn() as db:
                    new = await db.fetchval(
                        INGEST,
                        [e.id for e in unique],
                        [e.event_type for e in unique],
                        [e.received_at for e in unique],
                        [len(e.deliveries) for e in unique],
                        [e.body for e in unique],
                        *columns,
                        wake,
                    )
                new = set(new or ())
                return {e.id: e.id in new for e in unique}
            except _RETRY:  # two nodes inserting the same ids in another order
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _to_notify(self, events: list[NewEvent], stored: dict[str, bool] | None) -> str:
        """The destinations worth a NOTIFY: new work, not announced in the last 100 ms."""
        now = time.monotonic()
        names = {d for e in events if stored is None or stored.get(e.id) for d, _ in e.deliveries}
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
                    await asyncio.wait_for(db.fetchval(PING), LISTEN_CHECK_S)
            except (*_DOWN, asyncpg.PostgresError):
                await asyncio.sleep(1.0)  # the database is away: the idle poll still works
            finally:
                if db is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(db.close(), 2)

    def _notified_cb(self, _db: object, _pid: int, _channel: str, payload: str) -> None:
        if self.on_wake is not None and payload:
            self.on_wake(set(payload.split("\n")))

    # -- singletons ------------------------------------------------------------------------

    async def lead(self, name: str) -> bool:
        """Whether this node runs the singleton `name` (retention, one periodic destination's
        rounds): it takes the lease row when free or run out, and then keeps renewing it.

        A lease row renewed every few seconds, not a session advisory lock: a pooled
        connection can be lost (and with it the lock) without the node noticing.
        """
        if self._held.get(name, 0.0) > time.monotonic():
            return True
        try:
            await self._hold([name])
        except (StorageUnavailable, asyncpg.PostgresError):
            return False
        return name in self._held

    async def _hold(self, names: list[str]) -> None:
        started = time.monotonic()
        rows = await self._rows(HOLD, names, self.node, SINGLETON_TTL_S)
        held = {r[0] for r in rows}
        # Trust the lease a little less long than it runs (the clocks of two nodes differ in
        # rate, not only in offset, and the statement took time).
        until = started + SINGLETON_TTL_S - 2 * SINGLETON_RENEW_S
        for name in names:
            if name in held:
                self._held[name] = until
            else:
                self._held.pop(name, None)

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(SINGLETON_RENEW_S)
            if self._held:
                with contextlib.suppress(StorageUnavailable, asyncpg.PostgresError):
                    await self._hold(list(self._held))

    # -- reads -----------------------------------------------------------------------------

    async def check_writable(self) -> None:
        """Readiness: a write that commits and changes nothing (a row in and out again)."""
        async with self._conn() as db, db.transaction():
            await db.execute(READY_IN)
            await db.execute(READY_OUT)

    async def next_due(self, destination: str) -> float | None:
        """None also while the database is away: the dispatcher then sleeps its 1 s cap and
        tries again (an exception here would end its loop)."""
        try:
            rows = await self._rows(NEXT_DUE, destination)
        except StorageUnavailable:
            return None
        return rows[0][0]

    async def stats(self) -> Stats:
        now = time.time()
        stats = Stats()
        live: dict[str, int] = {}
        async with self._conn() as db, db.transaction(isolation="repeatable_read", readonly=True):
            for destination, state, n in await db.fetch(STATS_COUNTS):
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
            for destination, n in await db.fetch(STATS_LEASED):
                stats.destinations.setdefault(destination, DestinationStats()).leased = n
            waiting = []
            for destination, n in live.items():
                d = stats.destinations[destination]
                d.pending = n - d.leased
                if d.pending > 0:
                    waiting.append(destination)
            # Walks deliveries_age from the oldest of each; only leases in flight are skipped.
            for destination, oldest in await db.fetch(STATS_OLDEST, waiting):
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
            DEAD_LIST,
            after,
            destination or None,
            limit,
            since,
            until,
        )
        return [DeadDelivery(*r) for r in rows]

    async def event(self, event_id: str) -> EventDetail | None:
        async with self._conn() as db, db.transaction(isolation="repeatable_read", readonly=True):
            row = await db.fetchrow(EVENT, event_id)
            if row is None:
                return None
            seq = row[0]
            deliveries = list(await db.fetch(EVENT_DELIVERIES, seq))
            deliveries.sort(key=lambda d: (d[1], d[0]))
            history: dict[int, list[AttemptRecord]] = {d[0]: [] for d in deliveries}
            for r in await db.fetch(EVENT_ATTEMPTS, list(history)):
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
        sql, params = attempts_query(where, limit)
        return [AttemptRecord(*r) for r in await self._rows(sql, *params)]

    async def ack_history(self, destination: str, since: float) -> AckHistory:
        minutes = await self._rows(ACK_MINUTES, destination, int(since // 60))
        last = await self._rows(ACK_LAST, destination)
        return AckHistory([(r[0], r[1]) for r in minutes], tuple(last[0]) if last else None)

    async def attempt_minutes(self, destination: str, since: float) -> list[tuple[int, bool, int]]:
        rows = await self._rows(ATTEMPT_MINUTES, destination, since)
        return [(r[0], r[1], r[2]) for r in rows]

    async def oldest_pending(
        self, event_types: tuple[str, ...], older_than: float
    ) -> dict[str, tuple[int, float]]:
        rows = await self._rows(OLDEST_PENDING, older_than, list(event_types))
        return {r[0]: (r[1], r[2]) for r in rows}

    async def audit_log(self, limit: int = 50) -> list[AuditEntry]:
        rows = await self._rows(AUDIT_LOG, limit)
        return [AuditEntry(*r) for r in rows]

    async def paused(self) -> dict[str, float | None]:
        rows = await self._rows(PAUSED)
        return {name: until for name, until in rows}
