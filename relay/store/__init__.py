"""Storage backends behind one queue interface (`base.Store`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import (
    ATTEMPTS_KEPT,
    RESPONSE_CHARS,
    Attempt,
    AttemptFilter,
    AttemptRecord,
    AuditEntry,
    Claimed,
    DeadDelivery,
    DeliveryDetail,
    DestinationStats,
    EventDetail,
    NewEvent,
    ReplayFilter,
    State,
    Stats,
    StorageUnavailable,
    Store,
)
from .sqlite import SqliteStore

if TYPE_CHECKING:
    from ..config import StorageConfig

__all__ = [
    "ATTEMPTS_KEPT",
    "RESPONSE_CHARS",
    "Attempt",
    "AttemptFilter",
    "AttemptRecord",
    "AuditEntry",
    "Claimed",
    "DeadDelivery",
    "DeliveryDetail",
    "DestinationStats",
    "EventDetail",
    "NewEvent",
    "ReplayFilter",
    "SqliteStore",
    "State",
    "Stats",
    "StorageUnavailable",
    "Store",
    "make_store",
]


def make_store(storage: StorageConfig, node: str | None = None) -> Store:
    """The configured backend's store, not yet opened (`[storage] backend`); `node` names
    this node among those sharing a PostgreSQL queue (`config.node_name`)."""
    if storage.backend == "postgres":
        from .postgres import PostgresStore  # asyncpg is only loaded when used

        assert storage.dsn is not None  # config.py requires it for this backend
        return PostgresStore(storage.dsn, pool_size=storage.pool_size, node=node)
    return SqliteStore(storage.path)
