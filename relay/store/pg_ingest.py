"""The PostgreSQL store's ingestion: group commit, first flags, and the wake-ups between
nodes (NOTIFY sent inside the ingest transaction, one LISTEN connection per node)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import asyncpg

from ..models import NewEvent
from .base import StorageUnavailable
from .pg_base import _DOWN, _RETRY, DURABLE, _statement_cache
from .pg_sql import INGEST, NOW

WAKE_CHANNEL = "relay_wake"  # NOTIFY payload: destination names, one per line
NOTIFY_EVERY_S = 0.1  # at most one NOTIFY per destination per node this often
LISTEN_CHECK_S = 5.0  # how often the listener proves its connection is alive
ACK_BATCH = 500  # at most this many acks in one DELETE
SINGLETON_TTL_S = 15.0  # a singleton's lease: another node takes over this long after a crash
SINGLETON_RENEW_S = 3.0  # the holder renews it this often
ACK_RETRY_S = 30.0  # how long a flush of acks keeps trying while the database is away

Key = tuple[str, str, str]


class PostgresIngest:
    dsn: str
    commits: int
    last_commit_size: int
    on_commit: Callable[[int, int, float], None] | None
    on_wake: Callable[[set[str]], None] | None
    _appends: list[tuple[list[NewEvent], asyncio.Future]]
    _wakeup: asyncio.Event
    _writer: asyncio.Task | None
    _closing: bool
    _notified: dict[str, float]

    def _conn(self) -> AbstractAsyncContextManager[asyncpg.Connection]:
        raise NotImplementedError

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
                        await db.execute("SELECT pg_notify($1, $2)", WAKE_CHANNEL, wake)
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


async def _insert(db: asyncpg.Connection, events: list[NewEvent]) -> dict[str, bool]:
    """Insert events not stored before, with their deliveries; map each id to "was new".

    `ON CONFLICT (id) DO NOTHING` makes a re-sent id a no-op across nodes; a first-flag key
    is claimed with the same trick, so `first` holds across nodes as well.
    """
    first_of: dict[str, NewEvent] = {}
    for e in events:
        first_of.setdefault(e.id, e)
    unique = list(first_of.values())
    if any(e.first_key for e in unique):  # bodies depend on which events are new: ask first
        rows = await db.fetch("SELECT id FROM events WHERE id = ANY($1::text[])", list(first_of))
        known = {r[0] for r in rows}
        fresh = [e for e in unique if e.id not in known]
    else:  # ON CONFLICT … RETURNING below says which were new
        fresh = unique
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
    if seqs:  # counter deltas, in the same transaction (see `counts` in pg_sql.py)
        deltas: dict[tuple[str, int], int] = {("", 0): len(seqs)}
        unrouted = sum(1 for e in fresh if e.id in seqs and not e.deliveries)
        if unrouted:
            deltas[("", 1)] = unrouted
        for _, dest, _, _ in deliveries:
            deltas[(dest, 0)] = deltas.get((dest, 0), 0) + 1
        await db.execute(
            "INSERT INTO counts (destination, state, n)"
            " SELECT * FROM unnest($1::text[], $2::smallint[], $3::bigint[])",
            [k[0] for k in deltas],
            [k[1] for k in deltas],
            list(deltas.values()),
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
    return {(r[0], r[1], r[2]) for r in rows}
