"""Storage backends behind two interfaces: the queue (`base.Queue`: the data path) and
the read/control side (`base.Control`); `base.Store` is both.

The backends load lazily: `make_store` imports only the configured one (asyncpg is not
loaded for SQLite, nor aiosqlite's backend for PostgreSQL), and importing this package
imports neither.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .base import (
    ATTEMPTS_KEPT,
    AckHistory,
    AttemptFilter,
    AttemptRecord,
    AuditEntry,
    Control,
    DeadDelivery,
    DeliveryDetail,
    DestinationStats,
    EventDetail,
    Queue,
    ReplayFilter,
    Stats,
    StorageUnavailable,
    Store,
)

if TYPE_CHECKING:
    from ..config import StorageConfig

__all__ = [
    "ATTEMPTS_KEPT",
    "AckHistory",
    "AttemptFilter",
    "AttemptRecord",
    "AuditEntry",
    "Control",
    "DeadDelivery",
    "DeliveryDetail",
    "DestinationStats",
    "EventDetail",
    "Queue",
    "ReplayFilter",
    "Stats",
    "StorageUnavailable",
    "Store",
    "make_store",
]


def make_store(
    storage: StorageConfig,
    node: str | None = None,
    on_commit: Callable[[int, int, float], None] | None = None,
    on_wake: Callable[[set[str]], None] | None = None,
) -> Store:
    """The configured backend's store, not yet opened (`[storage] backend`).

    `node` names this node among those sharing a PostgreSQL queue (`config.node_name`);
    `on_commit(writes, events, seconds)` after each group commit (the metrics);
    `on_wake(destinations)` when another node stored work for them (PostgreSQL only).
    """
    if storage.backend == "postgres":
        from .postgres import PostgresStore

        assert storage.dsn is not None  # config.py requires it for this backend
        return PostgresStore(
            storage.dsn,
            pool_size=storage.pool_size,
            node=node,
            on_commit=on_commit,
            on_wake=on_wake,
        )
    from .sqlite import SqliteStore

    return SqliteStore(storage.path, on_commit=on_commit)
