"""What `PostgresStore` uses that holds no state of its own: the errors that mean "the
database is away", the DSN's statement-cache option, and the functions that turn a batch
into statement parameters (the ingest of a batch with first flags, the outcome columns)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from ..models import Attempt, Claimed, NewEvent
from .base import StorageUnavailable
from .pg_queries import INSERT_COUNTS, INSERT_DELIVERIES, INSERT_EVENTS, INSERT_FIRSTS, KNOWN_IDS

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
def _unavailable() -> Iterator[None]:
    try:
        yield
    except _DOWN as exc:
        raise StorageUnavailable(f"postgres: {exc}") from exc


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


def _outcome_columns(
    rows: list[tuple[Claimed, float | None, Attempt | None]],
) -> list[list[Any]]:
    """(claim, due_at, attempt) rows as the eleven array parameters of ACK, RETRY, DEAD."""
    columns: list[list[Any]] = [[] for _ in range(11)]
    for c, due, a in rows:
        values = (
            c.delivery_id,
            c.lease,
            due,
            a is not None,
            a.ts if a else None,
            a.status if a else None,
            a.ms if a else None,
            a.error if a else None,
            a.response if a else None,
            c.event_id,
            c.event_type,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    return columns


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
        rows = await db.fetch(KNOWN_IDS, list(first_of))
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
        INSERT_EVENTS,
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
            INSERT_DELIVERIES,
            *(list(col) for col in zip(*deliveries, strict=True)),
        )
    if seqs:  # counter deltas, in the same transaction (see `counts` in pg_queries.py)
        deltas: dict[tuple[str, int], int] = {("", 0): len(seqs)}
        unrouted = sum(1 for e in fresh if e.id in seqs and not e.deliveries)
        if unrouted:
            deltas[("", 1)] = unrouted
        for _, dest, _, _ in deliveries:
            deltas[(dest, 0)] = deltas.get((dest, 0), 0) + 1
        await db.execute(
            INSERT_COUNTS,
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
        INSERT_FIRSTS,
        *(list(col) for col in zip(*unique, strict=True)),
    )
    return {(r[0], r[1], r[2]) for r in rows}
