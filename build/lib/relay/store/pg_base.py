"""What the PostgreSQL store's parts share: errors that mean "the database is away", the
DSN's statement-cache option, and the cluster-wide singleton leases (issue 8 §7)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from .base import StorageUnavailable
from .pg_sql import HOLD

DURABLE = "SET LOCAL synchronous_commit = on"  # this transaction's commit waits for the disk
SINGLETON_TTL_S = 15.0  # a singleton's lease: another node takes over this long after a crash
SINGLETON_RENEW_S = 3.0  # the holder renews it this often

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


class SingletonLeases:
    node: str
    _held: dict[str, float]

    async def _rows(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        raise NotImplementedError

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
