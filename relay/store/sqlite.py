"""The SQLite queue: one file in WAL mode, one writer with group commit, one reader.

Every write — ingest, claim, ack, retry — is a job for the single writer task. The writer
takes all jobs queued since its last commit, runs them in one `BEGIN IMMEDIATE`
transaction and commits once, so N concurrent requests cost one fsync, not N. Each job's
future resolves only after that commit: a 2xx from ingestion means the event is on disk.
Reads (stats, next due time, dead lists) use a second connection and never wait for the
writer: WAL lets readers see the last commit while a write is in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from ..models import Attempt, Claimed, NewEvent, State
from .base import ATTEMPTS_KEPT, AuditEntry, ReplayFilter, StorageUnavailable
from .sqlite_reads import SqliteReads, conditions
from .sqlite_schema import MIGRATIONS, statements

_CLAIM = f"""
UPDATE deliveries SET state = {State.LEASED:d}, due_at = :until, lease = :lease, attempts = attempts + 1,
       updated_at = :now
WHERE id IN (SELECT id FROM deliveries
             WHERE destination = :destination AND state < {State.DELIVERED:d} AND due_at <= :now{{only_types}}
             ORDER BY due_at LIMIT :limit)
RETURNING id, attempts, created_at,
          (SELECT id FROM events WHERE seq = event_seq),
          (SELECT event_type FROM events WHERE seq = event_seq),
          (SELECT body FROM events WHERE seq = event_seq)
"""
# The SOAP pull's notificationTypes: only deliveries of these event types (a JSON array).
_CLAIM_TYPES = _CLAIM.format(
    only_types="\n               AND (SELECT event_type FROM events WHERE seq = event_seq)"
    " IN (SELECT value FROM json_each(:types))"
)
_CLAIM = _CLAIM.format(only_types="")
# The outcomes of a claim, and the hand-back of one never attempted.
_ACK = (
    f"UPDATE deliveries SET state = {State.DELIVERED:d}, lease = NULL, last_error = NULL,"
    " updated_at = ? WHERE id = ? AND lease = ?"
)
# A pull ack batch adds to its destination's minute: (destination, minute, n, ts, lease).
_ACK_TALLY = (
    "INSERT INTO acks (destination, minute, n, last_ts, last_n, last_lease)"
    " VALUES (?1, ?2, ?3, ?4, ?3, ?5) ON CONFLICT (destination, minute) DO UPDATE"
    " SET n = n + excluded.n, last_ts = excluded.last_ts, last_n = excluded.last_n,"
    " last_lease = excluded.last_lease"
)
_RETRY = (
    f"UPDATE deliveries SET state = {State.PENDING:d}, due_at = ?, lease = NULL, last_error = ?,"
    " updated_at = ? WHERE id = ? AND lease = ?"
)
_DEAD = (
    f"UPDATE deliveries SET state = {State.DEAD:d}, lease = NULL, last_error = ?, updated_at = ?"
    " WHERE id = ? AND lease = ?"
)
_RELEASE = (
    f"UPDATE deliveries SET state = {State.PENDING:d}, due_at = ?, attempts = attempts - 1,"
    " lease = NULL, updated_at = ? WHERE id = ? AND lease = ?"
)
_NEXT_DUE = (
    f"SELECT MIN(due_at) FROM deliveries WHERE destination = ? AND state < {State.DELIVERED:d}"
)

# A write: runs in the SQLite thread, inside the group's transaction.
Job = Callable[[sqlite3.Connection], Any]


@dataclass(slots=True)
class _Pending:
    """Jobs waiting for the next group commit; appends are merged into one insert."""

    appends: list[tuple[list[NewEvent], asyncio.Future]] = field(default_factory=list)
    jobs: list[tuple[Job, asyncio.Future]] = field(default_factory=list)
    events: int = 0

    def __bool__(self) -> bool:
        return bool(self.appends or self.jobs)


class SqliteStore(SqliteReads):
    """`base.Store` on one SQLite file."""

    node = None  # one process owns the file: no cluster, no node name in the dispatch log

    def __init__(
        self,
        path: Path | str,
        *,
        busy_timeout_s: float = 5.0,
        on_commit: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self._busy_ms = int(busy_timeout_s * 1000)
        self._db: aiosqlite.Connection | None = None
        self._read: aiosqlite.Connection | None = None
        self._pending = _Pending()
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task | None = None
        self._closing = False
        self._next_seq = 1
        self._durable = True  # the writer connection's synchronous mode is FULL
        self._lease = time.time_ns()  # fencing tokens: unique across restarts
        self.commits = 0
        self.last_commit_size = 0
        # Called after each group commit with (writes, events inserted, seconds): metrics.
        self.on_commit = on_commit

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            self._db = await self._connect()
            await self._migrate(self._db)
            rows = await self._db.execute_fetchall("SELECT COALESCE(MAX(seq), 0) + 1 FROM events")
            self._next_seq = rows[0][0]
            self._read = await self._connect()
        except BaseException as exc:
            # An open connection's thread would keep the process from exiting.
            for db in (self._read, self._db):
                if db is not None:
                    await db.close()
            self._db = self._read = None
            if isinstance(exc, sqlite3.Error):
                raise StorageUnavailable(f"{self.path}: {exc}") from exc
            raise
        self._writer = asyncio.create_task(self._write_loop(), name="store-writer")

    async def _connect(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self.path, isolation_level=None)  # we issue BEGIN ourselves
        try:
            await self._configure(db)
        except BaseException:
            await db.close()
            raise
        return db

    async def _configure(self, db: aiosqlite.Connection) -> None:
        db.text_factory = str
        # WAL: readers never block the writer, the writer never blocks readers.
        await db.execute("PRAGMA journal_mode = WAL")
        # FULL: every commit is fsynced, so an acknowledged event survives power loss too;
        # group commit is what keeps this affordable.
        await db.execute("PRAGMA synchronous = FULL")
        # The CLI writes the same file while the daemon runs: wait for the lock, don't fail.
        await db.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
        await db.execute("PRAGMA cache_size = -65536")  # 64 MiB of page cache
        await db.execute("PRAGMA temp_store = MEMORY")

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        version = (await db.execute_fetchall("PRAGMA user_version"))[0][0]
        if version > len(MIGRATIONS):
            raise StorageUnavailable(
                f"{self.path}: schema version {version} is newer than this relay "
                f"(knows {len(MIGRATIONS)}); upgrade relay"
            )
        for number in range(version, len(MIGRATIONS)):
            await db.execute("BEGIN IMMEDIATE")
            try:
                for statement in statements(MIGRATIONS[number]):
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {number + 1}")
                await db.execute("COMMIT")
            except BaseException:
                await db.execute("ROLLBACK")
                raise

    async def schema_version(self) -> int:
        assert self._read is not None
        return (await self._read.execute_fetchall("PRAGMA user_version"))[0][0]

    async def close(self) -> None:
        if self._writer is None:
            return
        self._closing = True
        self._wakeup.set()
        await self._writer
        self._writer = None
        for db in (self._read, self._db):
            if db is not None:
                await db.close()
        self._db = self._read = None

    @property
    def queued_events(self) -> int:
        """Events waiting for the next group commit (for back-pressure)."""
        return self._pending.events

    # -- the writer ------------------------------------------------------------------------

    def _submit(self, job: Job) -> asyncio.Future:
        if self._closing or self._writer is None:
            raise StorageUnavailable("store is closed")
        future = asyncio.get_running_loop().create_future()
        self._pending.jobs.append((job, future))
        self._wakeup.set()
        return future

    async def _write_loop(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            group, self._pending = self._pending, _Pending()
            await self._commit_group(group)

    async def _commit_group(self, group: _Pending) -> None:
        db = self._db
        assert db is not None
        durable = bool(group.appends)
        if durable != self._durable:
            # Ingest commits are fsynced (FULL): a 2xx must survive power loss. Commits of
            # only claims/acks/retries are not (NORMAL, still safe against a crash of this
            # process): losing one to a power cut only means a delivery is sent again.
            await db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            self._durable = durable
        started = time.monotonic()
        events = [e for events, _ in group.appends for e in events]
        jobs = [job for job, _ in group.jobs]
        try:
            # The whole transaction in one hand-off to the SQLite thread: each extra
            # round trip through the event loop costs ~0.1-0.2 ms on a busy box, and a
            # claim waiting behind a group of acks left dispatcher slots idle.
            results = await _in_thread(db, self._run_group, events, jobs)
        except Exception as exc:
            await self._rollback()
            if len(group.appends) + len(group.jobs) > 1 and not _is_busy(exc):
                # Don't let one bad job fail its neighbours: run each alone. (Not when another
                # process holds the lock: each alone would wait out busy_timeout again.)
                for a in group.appends:
                    await self._commit_group(_Pending(appends=[a]))
                for j in group.jobs:
                    await self._commit_group(_Pending(jobs=[j]))
                return
            error = _unavailable(exc)
            for _, future in [*group.appends, *group.jobs]:
                if not future.done():
                    future.set_exception(error)
            return
        self.commits += 1
        self.last_commit_size = sum(len(events) for events, _ in group.appends)
        if self.on_commit is not None:
            writes = len(group.appends) + len(group.jobs)
            self.on_commit(writes, self.last_commit_size, time.monotonic() - started)
        stored: list[bool] = results[0]
        start = 0
        for events, future in group.appends:
            if not future.done():
                future.set_result(stored[start : start + len(events)])
            start += len(events)
        for (_, future), result in zip(group.jobs, results[1:], strict=True):
            if not future.done():
                future.set_result(result)

    async def _rollback(self) -> None:
        assert self._db is not None
        with contextlib.suppress(sqlite3.Error):  # no transaction was open
            await self._db.execute("ROLLBACK")
        rows = await self._db.execute_fetchall("SELECT COALESCE(MAX(seq), 0) + 1 FROM events")
        self._next_seq = rows[0][0]

    def _run_group(
        self, conn: sqlite3.Connection, events: list[NewEvent], jobs: list[Job]
    ) -> list[Any]:
        """BEGIN, insert, every job, COMMIT: runs in the connection's thread."""
        conn.execute("BEGIN IMMEDIATE")
        results: list[Any] = [self._insert(conn, events)]
        results += [job(conn) for job in jobs]
        conn.execute("COMMIT")
        return results

    def _insert(self, conn: sqlite3.Connection, events: list[NewEvent]) -> list[bool]:
        """Insert events not stored before, with their deliveries; say which were new.

        Runs in the connection's thread: a group's inserts cost one hand-off, not five.
        """
        if not events:
            return []
        seen = self._known_ids(conn, [e.id for e in events if e.check_duplicate])
        firsts = self._new_firsts(
            conn, [e.first_key for e in events if e.first_key and e.id not in seen]
        )
        event_rows, delivery_rows, stored = [], [], []
        seq = self._next_seq
        for e in events:
            if e.check_duplicate:
                if e.id in seen:
                    stored.append(False)
                    continue
                seen.add(e.id)
            stored.append(True)
            body = e.body
            if e.first_key is not None:
                first = e.first_key in firsts
                firsts.discard(e.first_key)  # only the first of a batch is first
                body = body[:-1] + (b',"first":true}' if first else b',"first":false}')
            event_rows.append((seq, e.id, e.event_type, e.received_at, len(e.deliveries), body))
            for destination, due_at in e.deliveries:
                delivery_rows.append((seq, destination, due_at, e.received_at, e.received_at))
            seq += 1
        _insert_rows(
            conn,
            "INSERT INTO events (seq, id, event_type, received_at, routed, body) VALUES ",
            "(?, ?, ?, ?, ?, ?)",
            event_rows,
        )
        _insert_rows(
            conn,
            "INSERT INTO deliveries (event_seq, destination, state, due_at, attempts,"
            " created_at, updated_at) VALUES ",
            "(?, ?, 0, ?, 0, ?, ?)",
            delivery_rows,
        )
        _count_inserted(conn, event_rows, delivery_rows)
        self._next_seq = seq
        return stored

    def _new_firsts(
        self, conn: sqlite3.Connection, keys: list[tuple[str, str, str]]
    ) -> set[tuple[str, str, str]]:
        """Record these first-flag keys; return those never seen before (primary-key probes)."""
        new: set[tuple[str, str, str]] = set()
        unique = list(dict.fromkeys(keys))
        for i in range(0, len(unique), 300):
            chunk = unique[i : i + 300]
            marks = ",".join("(?, ?, ?)" for _ in chunk)
            flat = [v for key in chunk for v in key]
            rows = conn.execute(
                "SELECT event_type, email, sendid FROM firsts"
                f" WHERE (event_type, email, sendid) IN (VALUES {marks})",
                flat,
            ).fetchall()
            new.update(set(chunk) - {tuple(r) for r in rows})
        if new:
            now = time.time()
            conn.executemany(
                "INSERT INTO firsts (event_type, email, sendid, seen_at) VALUES (?, ?, ?, ?)",
                [(*key, now) for key in new],
            )
        return new

    def _known_ids(self, conn: sqlite3.Connection, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(f"SELECT id FROM events WHERE id IN ({marks})", chunk).fetchall()
            found.update(r[0] for r in rows)
        return found

    # -- the queue verbs -------------------------------------------------------------------

    async def append(self, events: list[NewEvent]) -> list[bool]:
        if self._closing or self._writer is None:
            raise StorageUnavailable("store is closed")
        future = asyncio.get_running_loop().create_future()
        self._pending.appends.append((events, future))
        self._pending.events += len(events)
        self._wakeup.set()
        return await future

    async def claim(
        self,
        destination: str,
        limit: int,
        lease_s: float,
        event_types: Collection[str] | None = None,
    ) -> list[Claimed]:
        self._lease += 1
        lease = self._lease
        sql = _CLAIM if event_types is None else _CLAIM_TYPES
        types = None if event_types is None else orjson.dumps(sorted(event_types)).decode()

        def job(conn: sqlite3.Connection) -> list[Claimed]:
            now = time.time()
            params = {
                "until": now + lease_s,
                "lease": lease,
                "now": now,
                "destination": destination,
                "limit": limit,
                "types": types,
            }
            rows = conn.execute(sql, params).fetchall()
            return [Claimed(r[0], lease, r[3], r[4], r[5], r[1], r[2]) for r in rows]

        return await self._submit(job)

    async def _finish(
        self, sql: str, rows: list[tuple], history: list[tuple] | None = None
    ) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.executemany(sql, rows)
            if history:
                _record_attempts(conn, history)

        if rows:
            await self._submit(job)

    async def ack(self, claims: list[Claimed], attempt: Attempt | None = None) -> None:
        now = time.time()
        await self._finish(
            _ACK,
            [(now, c.delivery_id, c.lease) for c in claims],
            _history(claims, "delivered", attempt),
        )

    async def retry(
        self, claims: list[tuple[Claimed, float]], error: str | None, attempt: Attempt | None = None
    ) -> None:
        now = time.time()
        await self._finish(
            _RETRY,
            [(due_at, error, now, c.delivery_id, c.lease) for c, due_at in claims],
            _history([c for c, _ in claims], "retry", attempt),
        )

    async def dead(
        self, claims: list[Claimed], error: str | None, attempt: Attempt | None = None
    ) -> None:
        now = time.time()
        await self._finish(
            _DEAD,
            [(error, now, c.delivery_id, c.lease) for c in claims],
            _history(claims, "dead", attempt),
        )

    async def release(self, claims: list[Claimed]) -> None:
        now = time.time()
        await self._finish(
            _RELEASE,
            [(now, now, c.delivery_id, c.lease) for c in claims],
        )

    async def ack_lease(self, destination: str, lease: int) -> list[str]:
        def job(conn: sqlite3.Connection) -> list[str]:
            now = time.time()
            rows = conn.execute(
                f"UPDATE deliveries SET state = {State.DELIVERED:d}, lease = NULL, updated_at = ?"
                f" WHERE lease = ? AND state = {State.LEASED:d} AND destination = ?"
                " RETURNING (SELECT id FROM events WHERE seq = event_seq)",
                (now, lease, destination),
            ).fetchall()
            if rows:
                conn.execute(_ACK_TALLY, (destination, int(now // 60), len(rows), now, lease))
            return [r[0] for r in rows]

        return await self._submit(job)

    async def release_leases(self, keep: list[str]) -> int:
        def job(conn: sqlite3.Connection) -> int:
            marks = ",".join("?" * len(keep))
            cursor = conn.execute(
                f"UPDATE deliveries SET state = {State.PENDING:d}, due_at = ?, lease = NULL"
                f" WHERE state = {State.LEASED:d} AND destination NOT IN ({marks})",
                (time.time(), *keep),
            )
            return cursor.rowcount

        return await self._submit(job)

    async def replay(
        self, where: ReplayFilter, dry_run: bool = False, rate: float | None = None
    ) -> list[str]:
        if dry_run:
            assert self._read is not None
            rows = await _in_thread(self._read, _dead_matching, where)
            return [r[1] for r in rows]

        def job(conn: sqlite3.Connection) -> list[str]:
            rows = _dead_matching(conn, where)
            now = time.time()
            # With a rate, the n-th is due n/rate s from now: oldest first, spread out.
            conn.executemany(
                f"UPDATE deliveries SET state = {State.PENDING:d}, attempts = 0, due_at = ?, lease = NULL,"
                " updated_at = ? WHERE id = ?",
                [(now + i / rate if rate else now, now, r[0]) for i, r in enumerate(rows)],
            )
            return [r[1] for r in rows]

        return await self._submit(job)

    async def pause(self, destination: str, until: float | None) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO paused (destination, until) VALUES (?, ?)"
                " ON CONFLICT (destination) DO UPDATE SET until = excluded.until",
                (destination, until),
            )

        await self._submit(job)

    async def audit(self, entry: AuditEntry) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO audit (ts, actor, action, target, count, detail)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (entry.ts, entry.actor, entry.action, entry.target, entry.count, entry.detail),
            )

        await self._submit(job)

    async def resume(self, destination: str) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM paused WHERE destination = ?", (destination,))

        await self._submit(job)

    async def request_flush(self, destination: str) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO flushes (destination, requested_at) VALUES (?, ?)"
                " ON CONFLICT (destination) DO UPDATE SET requested_at = excluded.requested_at",
                (destination, time.time()),
            )

        await self._submit(job)

    async def take_flushes(self) -> list[str]:
        # Polled every second: a read first, so an idle daemon makes no write for it.
        if not await self._fetch("SELECT 1 FROM flushes LIMIT 1"):
            return []

        def job(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute("DELETE FROM flushes RETURNING destination").fetchall()
            return [r[0] for r in rows]

        return await self._submit(job)

    async def purge(self, older_than: float) -> int:
        """Delete in chunks, one short transaction each, so ingestion never waits long."""

        def job(conn: sqlite3.Connection) -> int:
            gone = conn.execute(
                "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries"
                f" WHERE state >= {State.DELIVERED:d} AND updated_at < ? LIMIT 5000)",
                (older_than,),
            )
            events = conn.execute(
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events e WHERE received_at < ?"
                " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq) LIMIT 5000)",
                (older_than,),
            )
            firsts = conn.execute(
                "DELETE FROM firsts WHERE (event_type, email, sendid) IN (SELECT event_type, email, sendid"
                " FROM firsts WHERE seen_at < ? LIMIT 5000)",
                (older_than,),
            )
            audit = conn.execute("DELETE FROM audit WHERE ts < ?", (older_than,))
            acks = conn.execute("DELETE FROM acks WHERE minute < ?", (older_than // 60,))
            return (
                gone.rowcount + events.rowcount + firsts.rowcount + audit.rowcount + acks.rowcount
            )

        total = 0
        while (n := await self._submit(job)) > 0:
            total += n
        return total

    # -- reads (more in sqlite_reads.py) ---------------------------------------------------

    async def check_writable(self) -> None:
        """Readiness: a real write through the writer (insert and delete a row in one
        transaction: pages reach the WAL, nothing changes). Raises StorageUnavailable.

        `#readyz` cannot be a destination's name, and no reader sees the row.
        """

        def job(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO paused (destination, until) VALUES ('#readyz', 0)")
            conn.execute("DELETE FROM paused WHERE destination = '#readyz'")

        await self._submit(job)

    async def next_due(self, destination: str) -> float | None:
        rows = await self._fetch(_NEXT_DUE, (destination,))
        return rows[0][0]

    async def lead(self, name: str) -> bool:
        """One node: it runs every cluster-wide singleton (retention, periodic rounds)."""
        return True

    async def paused(self) -> dict[str, float | None]:
        rows = await self._fetch("SELECT destination, until FROM paused")
        return {name: until for name, until in rows}

    async def backup(self, target: Path) -> None:
        """A consistent copy through SQLite's online backup API, safe while the daemon runs."""
        assert self._read is not None
        dest = await aiosqlite.connect(target)
        try:
            await self._read.backup(dest)
        finally:
            await dest.close()


ID_CHUNK = 20_000  # event ids per statement: SQLite takes at most 32,766 parameters


def _dead_matching(conn: sqlite3.Connection, where: ReplayFilter) -> list[tuple[int, str]]:
    """(delivery id, event id) of the dead deliveries `where` matches, oldest first."""
    clause, params = conditions(
        (f"state = {State.DEAD:d}", ()),
        ("destination = ?", (where.destination,) if where.destination else None),
        ("created_at >= ?", None if where.since is None else (where.since,)),
        ("created_at < ?", None if where.until is None else (where.until,)),
    )
    sql = f"SELECT id, (SELECT id FROM events WHERE seq = event_seq) FROM deliveries WHERE {clause}"
    if not where.ids:
        return conn.execute(sql + " ORDER BY id", params).fetchall()
    rows = []
    for i in range(0, len(where.ids), ID_CHUNK):
        chunk = where.ids[i : i + ID_CHUNK]
        marks = ",".join("?" * len(chunk))
        rows += conn.execute(
            sql + f" AND event_seq IN (SELECT seq FROM events WHERE id IN ({marks}))",
            (*params, *chunk),
        ).fetchall()
    return sorted(rows)


def _history(claims: list[Claimed], outcome: str, a: Attempt | None) -> list[tuple] | None:
    if a is None:
        return None
    return [
        (
            c.delivery_id,
            a.ts,
            c.attempts,
            a.destination,
            c.event_type,
            outcome,
            a.status,
            a.ms,
            a.error,
            a.response,
        )
        for c in claims
    ]


def _record_attempts(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    """Add attempts to their deliveries' history; keep the newest ATTEMPTS_KEPT of each."""
    conn.executemany(
        "INSERT OR REPLACE INTO attempts (delivery_id, ts, attempt, destination, event_type,"
        " outcome, status, ms, error, response) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    long = [(r[0], r[0]) for r in rows if r[2] > ATTEMPTS_KEPT]
    if long:
        conn.executemany(
            "DELETE FROM attempts WHERE delivery_id = ? AND ts < (SELECT ts FROM attempts"
            f" WHERE delivery_id = ? ORDER BY ts DESC LIMIT 1 OFFSET {ATTEMPTS_KEPT - 1})",
            long,
        )


INSERT_CHUNKS = (128, 32, 16, 8, 4, 2, 1)  # rows per multi-row INSERT: few distinct statements


def _count_inserted(
    conn: sqlite3.Connection, event_rows: list[tuple], delivery_rows: list[tuple]
) -> None:
    """Keep `counters` for a group's inserts: a few statements a group, not a trigger a row
    (the insert triggers cost a third of ingest's SQLite time). Moves and deletes are
    counted by triggers (sqlite_schema.py)."""
    if not event_rows:
        return
    unrouted = sum(1 for r in event_rows if r[4] == 0)
    conn.execute(
        "UPDATE counters SET n = n + (CASE state WHEN 0 THEN ? ELSE ? END)"
        " WHERE destination = '' AND state IN (0, 1)",
        (len(event_rows), unrouted),
    )
    per_destination: dict[str, int] = {}
    for r in delivery_rows:
        per_destination[r[1]] = per_destination.get(r[1], 0) + 1
    conn.executemany(
        f"INSERT INTO counters (destination, state, n) VALUES (?, {State.PENDING:d}, ?)"
        " ON CONFLICT (destination, state) DO UPDATE SET n = n + excluded.n",
        list(per_destination.items()),
    )


def _insert_rows(conn: sqlite3.Connection, head: str, row: str, rows: list[tuple]) -> None:
    """`executemany(head + row, rows)` as multi-row INSERTs, in order.

    executemany steps once per row, and the sqlite3 module lets go of the GIL around each
    step; the event loop thread then holds it and the writer thread waits to get it back,
    once per row (the group commit's latency was mostly that). A few fixed chunk sizes
    keep the statements in the connection's statement cache.
    """
    i, n = 0, len(rows)
    for size in INSERT_CHUNKS:
        if n - i < size:
            continue
        sql = head + ",".join([row] * size)
        while n - i >= size:
            conn.execute(sql, [v for r in rows[i : i + size] for v in r])
            i += size


async def _in_thread(db: aiosqlite.Connection, fn: Callable[..., Any], *args: Any) -> Any:
    """Run `fn(sqlite3_connection, *args)` in aiosqlite's connection thread, in one hand-off.

    aiosqlite sends each call to its thread and back (~50–200 µs on a busy box); the ingest
    group's inserts are several calls, so they run as one function there instead. This uses
    aiosqlite's private `_execute` and `_conn` (stable since 0.17; pinned by our tests).
    """
    return await db._execute(lambda: fn(db._conn, *args))


def _is_busy(exc: Exception) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED (any extended code): the lock is held elsewhere."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _unavailable(exc: Exception) -> Exception:
    if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError | ValueError):
        return StorageUnavailable(str(exc))
    return exc
