"""Storage backends behind one queue interface (`base.Store`).

The backends load lazily: `make_store` imports only the configured one (asyncpg is not
loaded for SQLite, nor aiosqlite's backend for PostgreSQL), and importing this package
imports neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import (
    ATTEMPTS_KEPT,
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
    Store,
)

if TYPE_CHECKING:
    from ..config import StorageConfig

__all__ = [
    "ATTEMPTS_KEPT",
    "AttemptFilter",
    "AttemptRecord",
    "AuditEntry",
    "DeadDelivery",
    "DeliveryDetail",
    "DestinationStats",
    "EventDetail",
    "ReplayFilter",
    "Stats",
    "StorageUnavailable",
    "Store",
    "make_store",
]


def make_store(storage: StorageConfig) -> Store:
    """The configured backend's store, not yet opened (`[storage] backend`)."""
    if storage.backend == "postgres":
        from .postgres import PostgresStore

        assert storage.dsn is not None  # config.py requires it for this backend
        return PostgresStore(storage.dsn, pool_size=storage.pool_size)
    from .sqlite import SqliteStore

    return SqliteStore(storage.path)
